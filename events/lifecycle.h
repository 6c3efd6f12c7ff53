#pragma once
/// Events that bracket a whole run: setup/teardown, fit, the sanity check, exceptions.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "events/common.h"

namespace trainbus::events {

/// Fires at the beginning of fit, validate, test and predict, after the data module's setup. It
/// says which process of the job this is (Lightning's trainer.global_rank, local_rank and
/// world_size; the Trainer's strategy), as FitStart does: an observer, which sees no Trainer,
/// learns its rank from them.
struct Setup {
  static constexpr std::string_view kName = "setup";
  Stage stage = Stage::kFit;
  int64_t global_rank = 0;  ///< this process's rank among all of the job's (0: rank zero)
  int64_t local_rank = 0;   ///< its rank among the job's processes on this machine
  int64_t world_size = 1;   ///< processes in the job (1: one process, no data parallelism)
};

/// Fires at the end of a successful fit, validate, test or predict. Not on the failure path.
struct Teardown {
  static constexpr std::string_view kName = "teardown";
  Stage stage = Stage::kFit;
};

/// Fires once fit has configured the optimizers (and restored a checkpoint, if resuming).
struct FitStart {
  static constexpr std::string_view kName = "fit_start";
  Progress progress;
  /// The module's hyper-parameters, each a YAML scalar that keeps its type ('mlp', 64, 0.001,
  /// 1.0e-05, true, [0.1, 0.2]; base/yaml_scalar.h), as loggers write them to hparams.yaml.
  std::map<std::string, std::string> hparams;
  int64_t num_batches = 0;      ///< batches each training epoch runs (after limit_train_batches)
  int64_t num_val_batches = 0;  ///< batches each validation runs (0: none)
  int64_t global_rank = 0;      ///< this process's rank among all of the job's, as Setup's
  int64_t local_rank = 0;       ///< its rank among the job's processes on this machine
  int64_t world_size = 1;       ///< processes in the job (1: one process)
};

/// Fires at the very end of a successful fit, after TrainEnd.
struct FitEnd {
  static constexpr std::string_view kName = "fit_end";
  Progress progress;
  Metrics callback_metrics;
};

/// Fires before the sanity-check validation batches run (num_sanity_val_steps != 0).
struct SanityCheckStart {
  static constexpr std::string_view kName = "sanity_check_start";
  Progress progress;
};

/// Fires after the sanity-check validation; its metrics are discarded right after.
struct SanityCheckEnd {
  static constexpr std::string_view kName = "sanity_check_end";
  Progress progress;
  Metrics metrics;
};

/// Fires when something asks fit to stop (Trainer::request_stop: EarlyStopping, a callback, the
/// module, the user), at the moment it asks; fit stops at the next point min_epochs and min_steps
/// allow. A decision, not a hook: Callbacks have no hook for it, observers (the recorder) see it.
struct StopRequested {
  static constexpr std::string_view kName = "stop_requested";
  Progress progress;
  std::string reason;  ///< who asked and why, e.g. "EarlyStopping: val_loss did not improve..."
  /// What was running when it was asked: a hook, by its event's name ("validation_end": the stop
  /// holds once every hook of that event ran), a step ("training_step": it holds from the next
  /// event on), "none" outside both, or "" in recordings made before this field was recorded.
  std::string asked_in;
};

/// Fires when something logs values straight to the loggers, as Lightning's
/// `logger.log_metrics(metrics, step)` (Trainer::loggers(): LearningRateMonitor, a callback, the
/// user), at the moment it logs. The loggers (observers::Logger) write them as a row at `step`;
/// a decision-free event: Callbacks have no hook for it.
struct MetricsLogged {
  static constexpr std::string_view kName = "metrics_logged";
  Progress progress;
  Metrics metrics;
  int64_t step = 0;    ///< the row's step, as given (Lightning passes batches that stepped)
  std::string logger;  ///< the logger it is for, by name; "" for every logger
};

/// Fires when something logs hyper-parameters straight to the loggers, as Lightning's
/// `logger.log_hyperparams(params)` (LoggerHandle::log_hyperparams: a callback, the user), at the
/// moment it logs. The loggers add them to those they keep (observers::Logger: hparams.yaml, and
/// TensorBoard's hparams); a decision-free event: Callbacks have no hook for it.
struct HyperparamsLogged {
  static constexpr std::string_view kName = "hyperparams_logged";
  Progress progress;
  /// Each a YAML scalar that keeps its type, as FitStart's.
  std::map<std::string, std::string> hparams;
  std::string logger;  ///< the logger they are for, by name; "" for every logger
};

/// Fires when an exception leaves a step, a hook or the loop, after every callback's on_exception
/// and before the exception leaves fit/validate/test/predict unchanged.
struct Exception {
  static constexpr std::string_view kName = "exception";
  Stage stage = Stage::kFit;
  Progress progress;
  std::string type;     ///< demangled C++ type of the exception
  std::string message;  ///< what()
};

}  // namespace trainbus::events
