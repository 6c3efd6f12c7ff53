#pragma once
// Reading back what the loggers wrote: whole text files and TensorBoard event files. No torch.

#include <string>
#include <vector>

#include "proto/tensorboard.pb.h"

namespace trainbus::testing {

/// The whole content of a text file ("" if it cannot be read).
std::string read_text_file(const std::string& path);

/// Every record of a TensorBoard event file, parsed; a torn file or a record that does not parse
/// fails the test.
std::vector<trainbus::tensorboard::Event> read_tensorboard_events(const std::string& path);

}  // namespace trainbus::testing
