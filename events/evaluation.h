#pragma once
/// Events of the evaluation loops: validation (also inside fit and the sanity check), test and
/// predict. Each stage has the same six points, in this order: Start, EpochStart, BatchStart,
/// BatchEnd, EpochEnd, End. A loop with zero batches fires none of them (as Lightning).

#include <cstdint>
#include <string_view>

#include "events/common.h"

namespace trainbus::events {

// ---- validation ----

/// Fires when a validation loop starts, after the module is put in eval mode.
struct ValidationStart {
  static constexpr std::string_view kName = "validation_start";
  Progress progress;
};

/// Fires at the end of a validation loop, after its epoch metrics are in callback_metrics.
struct ValidationEnd {
  static constexpr std::string_view kName = "validation_end";
  Progress progress;
  Metrics callback_metrics;  ///< trainer.callback_metrics at the end of the loop
};

/// Fires before the first validation batch.
struct ValidationEpochStart {
  static constexpr std::string_view kName = "validation_epoch_start";
  Progress progress;
  int64_t num_batches = 0;  ///< batches this loop will run
};

/// Fires after the last validation batch, with the epoch means logged (logger=true) in this loop.
struct ValidationEpochEnd {
  static constexpr std::string_view kName = "validation_epoch_end";
  Progress progress;
  Metrics metrics;
};

/// Fires after the batch is on the device, before validation_step.
struct ValidationBatchStart {
  static constexpr std::string_view kName = "validation_batch_start";
  Progress progress;
  BatchInfo batch;
};

/// Fires after validation_step.
struct ValidationBatchEnd {
  static constexpr std::string_view kName = "validation_batch_end";
  Progress progress;
  BatchInfo batch;
  Metrics metrics;    ///< values logged with on_step=true during this batch
  TensorRef outputs;  ///< validation_step's outputs (a trainbus::StepOutput)
};

// ---- test ----

/// Fires when a test loop starts, after the module is put in eval mode.
struct TestStart {
  static constexpr std::string_view kName = "test_start";
  Progress progress;
};

/// Fires at the end of a test loop, after its epoch metrics are in callback_metrics.
struct TestEnd {
  static constexpr std::string_view kName = "test_end";
  Progress progress;
  Metrics callback_metrics;  ///< trainer.callback_metrics at the end of the loop
};

/// Fires before the first test batch.
struct TestEpochStart {
  static constexpr std::string_view kName = "test_epoch_start";
  Progress progress;
  int64_t num_batches = 0;  ///< batches this loop will run
};

/// Fires after the last test batch, with the epoch means logged (logger=true) in this loop.
struct TestEpochEnd {
  static constexpr std::string_view kName = "test_epoch_end";
  Progress progress;
  Metrics metrics;
};

/// Fires after the batch is on the device, before test_step.
struct TestBatchStart {
  static constexpr std::string_view kName = "test_batch_start";
  Progress progress;
  BatchInfo batch;
};

/// Fires after test_step.
struct TestBatchEnd {
  static constexpr std::string_view kName = "test_batch_end";
  Progress progress;
  BatchInfo batch;
  Metrics metrics;    ///< values logged with on_step=true during this batch
  TensorRef outputs;  ///< test_step's outputs (a trainbus::StepOutput)
};

// ---- predict ----

/// Fires when a predict loop starts, after the module is put in eval mode.
struct PredictStart {
  static constexpr std::string_view kName = "predict_start";
  Progress progress;
};

/// Fires at the end of a predict loop.
struct PredictEnd {
  static constexpr std::string_view kName = "predict_end";
  Progress progress;
};

/// Fires before the first predict batch.
struct PredictEpochStart {
  static constexpr std::string_view kName = "predict_epoch_start";
  Progress progress;
  int64_t num_batches = 0;  ///< batches this loop will run
};

/// Fires after the last predict batch.
struct PredictEpochEnd {
  static constexpr std::string_view kName = "predict_epoch_end";
  Progress progress;
};

/// Fires after the batch is on the device, before predict_step.
struct PredictBatchStart {
  static constexpr std::string_view kName = "predict_batch_start";
  Progress progress;
  BatchInfo batch;
};

/// Fires after predict_step.
struct PredictBatchEnd {
  static constexpr std::string_view kName = "predict_batch_end";
  Progress progress;
  BatchInfo batch;
  TensorRef outputs;  ///< predict_step's prediction (a tensor)
};

}  // namespace trainbus::events
