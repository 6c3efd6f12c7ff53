#pragma once
/// Events of checkpoint saving and loading.

#include <limits>
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

/// Fires once a checkpoint is durable under its final name (for a background save: at the next
/// batch, loop end or wait after the writer committed it; `progress` is when the save was asked
/// for). `monitor` and `score` are the checkpoint callback's ranking ("" and NaN for other saves).
struct CheckpointCommitted {
  static constexpr std::string_view kName = "checkpoint_committed";
  Progress progress;
  std::string path;
  int64_t bytes = 0;  ///< on disk, every part
  std::string monitor;
  double score = std::numeric_limits<double>::quiet_NaN();
};

/// Fires once a checkpoint callback removed a checkpoint it no longer keeps (a top-k eviction, a
/// replaced `last`), after the checkpoint that replaced it was durable.
struct CheckpointRemoved {
  static constexpr std::string_view kName = "checkpoint_removed";
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
