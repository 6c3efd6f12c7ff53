#pragma once
/// Events of checkpoint saving and loading.

#include <string>
#include <string_view>

#include "events/common.h"

namespace trainbus::events {

/// Fires when a checkpoint has been assembled, after every callback's on_save_checkpoint and the
/// module's, before it is written to `path`.
struct SaveCheckpoint {
  static constexpr std::string_view kName = "save_checkpoint";
  Progress progress;
  std::string path;
};

/// Fires after a checkpoint read from `path` has been handed to the module and the callbacks.
struct LoadCheckpoint {
  static constexpr std::string_view kName = "load_checkpoint";
  Progress progress;
  std::string path;
};

}  // namespace trainbus::events
