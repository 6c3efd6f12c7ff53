#pragma once
/// LoggerHandle: one of the trainer's loggers as a callback sees it (Lightning's
/// `trainer.loggers[i]`), to log values that are not module metrics (learning rates, timings) and
/// hyper-parameters.

#include <cstdint>
#include <string>

#include "base/metrics.h"

namespace trainbus {

class StateDict;
class Trainer;

/// Values logged through it are published as events::MetricsLogged (hyper-parameters as
/// events::HyperparamsLogged); the logger (an observer)
/// writes them on the observer pool, so the step never waits for the disk, and the recording holds
/// them too. Valid while its Trainer lives and no observer is added (add_observer, refused during
/// a run, may move the handles); call it on the training thread (from a hook).
class LoggerHandle {
 public:
  LoggerHandle(Trainer& trainer, std::string name, std::string log_dir)
      : trainer_(&trainer), name_(std::move(name)), log_dir_(std::move(log_dir)) {}

  /// The logger observer's name (events::Observer::name: "CsvLogger(runs/version_0)"); a row
  /// logged through this handle goes to the logger of that name only, also in a replay.
  const std::string& name() const noexcept { return name_; }
  /// Lightning's logger.log_dir: where it writes.
  const std::string& log_dir() const noexcept { return log_dir_; }
  /// Lightning's logger.log_metrics(metrics, step): a row of `metrics` at `step` in this logger.
  void log_metrics(const Metrics& metrics, int64_t step) const;
  /// Lightning's logger.log_hyperparams(params): adds `params` (strings, ints, doubles, bools,
  /// None, lists of them, as Module::hparams) to this logger's hyper-parameters, which it keeps
  /// with the module's (hparams.yaml, TensorBoard's hparams); a name logged again takes the new
  /// value.
  void log_hyperparams(const StateDict& params) const;

 private:
  Trainer* trainer_;
  std::string name_;
  std::string log_dir_;
};

}  // namespace trainbus
