#pragma once
/// CheckpointCallback: Lightning's `Checkpoint` base, the kind of callback that saves checkpoints.

#include <string>

#include "core/callback.h"

namespace trainbus {

/// Runs after every other callback (Lightning moves checkpoint savers last), and names its
/// checkpoints for `fit(..., FitOptions().ckpt_path("best" | "last"))`.
class CheckpointCallback : public Callback {
 public:
  CallbackKind kind() const override { return CallbackKind::kCheckpoint; }
  /// The best checkpoint saved so far, or "" (ckpt_path = "best").
  virtual std::string best_model_path() const { return {}; }
  /// The newest complete checkpoint this callback finds on disk, or "" (ckpt_path = "last").
  /// Temporary directories of unfinished writes are never candidates.
  virtual std::string find_last_checkpoint() const { return {}; }
};

}  // namespace trainbus
