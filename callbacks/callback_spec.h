#pragma once
/// Built-in callbacks from text, for the command line: `--callback
/// 'early_stopping:monitor=val_loss,patience=5'` (used by `trainbus replay`, and by `trainbus fit`
/// once it takes --callback).

#include <memory>
#include <string>
#include <vector>

#include "core/callback.h"

namespace trainbus::callbacks {

/// The callbacks a spec may name, with the keys each takes: "early_stopping: monitor, min_delta,
/// ...", one line each, for help texts and errors.
std::string describe_callback_specs();

/// Builds the callback `spec` names: "NAME" or "NAME:key=value,key=value", NAME one of
/// early_stopping and model_checkpoint, the keys their options' names (Lightning's), booleans as
/// true/false, save_last as true/false/link/copy. Options not given keep their defaults. Throws
/// MisconfigurationError naming the spec and the unknown name, unknown key or bad value, with what
/// is accepted.
std::shared_ptr<Callback> make_callback(const std::string& spec);

}  // namespace trainbus::callbacks
