#pragma once
/// Events of the training loop: train start/end, epochs and batches.

#include <cstdint>
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
  int64_t num_batches = 0;      ///< batches this epoch will train (after limit_train_batches)
  int64_t max_epochs = -1;      ///< the trainer's max_epochs (-1: no limit)
  int64_t num_val_batches = 0;  ///< batches each validation in this fit runs (0: none)
};

/// Fires at the end of each training epoch, after any validation due at the epoch end and after
/// every callback's and the module's on_train_epoch_end.
struct TrainEpochEnd {
  static constexpr std::string_view kName = "train_epoch_end";
  Progress progress;
  Metrics metrics;           ///< epoch means logged (logger=true) in this training epoch
  Metrics callback_metrics;  ///< trainer.callback_metrics
  Metrics progress_bar;      ///< trainer.progress_bar_metrics
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
  /// The loss in `outputs`, as backpropagated: training_step's loss divided by
  /// accumulate_grad_batches (Lightning's `outputs["loss"]`); NaN if the step returned none.
  double loss = std::numeric_limits<double>::quiet_NaN();
  /// Values logged with on_step=true (and logger=true) during this batch, as in logged_metrics.
  Metrics metrics;
  /// trainer.progress_bar_metrics after this batch.
  Metrics progress_bar;
  /// training_step's outputs (a trainbus::StepOutput), its loss replaced by the loss as
  /// backpropagated, detached; see core/tensor_ref.h.
  TensorRef outputs;
};

}  // namespace trainbus::events
