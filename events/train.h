#pragma once
/// Events of the training loop: train start/end, epochs and batches.

#include <limits>
#include <string_view>

#include "events/common.h"

namespace trainbus::events {

/// Fires after the sanity check, before the first training epoch.
struct TrainStart {
  static constexpr std::string_view kName = "train_start";
  Progress progress;
};

/// Fires after the last training epoch, before FitEnd.
struct TrainEnd {
  static constexpr std::string_view kName = "train_end";
  Progress progress;
  Metrics callback_metrics;
};

/// Fires at the start of each training epoch.
struct TrainEpochStart {
  static constexpr std::string_view kName = "train_epoch_start";
  Progress progress;
};

/// Fires at the end of each training epoch, after any validation due at the epoch end and after
/// every callback's and the module's on_train_epoch_end. `metrics` is trainer.callback_metrics then.
struct TrainEpochEnd {
  static constexpr std::string_view kName = "train_epoch_end";
  Progress progress;
  Metrics metrics;
};

/// Fires after the batch is on the device, before training_step.
struct TrainBatchStart {
  static constexpr std::string_view kName = "train_batch_start";
  Progress progress;
  BatchInfo batch;
};

/// Fires after the optimizer step (or the accumulation) of a batch.
struct TrainBatchEnd {
  static constexpr std::string_view kName = "train_batch_end";
  Progress progress;
  BatchInfo batch;
  /// training_step's loss, unscaled by gradient accumulation; NaN if the step returned none.
  double loss = std::numeric_limits<double>::quiet_NaN();
  /// Values logged with on_step=true during this batch (names as in logged_metrics).
  Metrics metrics;
  /// training_step's outputs (a trainbus::StepOutput); see core/tensor_ref.h.
  TensorRef outputs;
};

}  // namespace trainbus::events
