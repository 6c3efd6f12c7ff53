#pragma once
/// LearningRateMonitor: logs each optimizer's learning rate (and momentum, weight decay) to the
/// loggers as training goes (Lightning's, same options and key names).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/arg.h"
#include "base/metrics.h"
#include "core/callback.h"

namespace trainbus::callbacks {

/// Lightning's LearningRateMonitor arguments and defaults.
struct LearningRateMonitorOptions {
  /// "step" (at every logging step), "epoch" (at each epoch start), or unset: each scheduler's
  /// own interval, and optimizers without a scheduler at both.
  TRAINBUS_ARG(std::optional<std::string>, logging_interval);
  /// Also log "<name>-momentum": Adam's beta1, SGD's or RMSprop's momentum (0 for others).
  TRAINBUS_ARG(bool, log_momentum) = false;
  /// Also log "<name>-weight_decay".
  TRAINBUS_ARG(bool, log_weight_decay) = false;
};

/// Keys as Lightning's: "lr-Adam" for one param group, "lr-Adam/pg1", "lr-Adam/pg2" for several,
/// "lr-Adam-1" for a second Adam, a scheduler config's `name` in their place when it has one, and
/// the suffixes "-momentum" and "-weight_decay". Logs at on_train_batch_start when
/// Trainer::should_update_logs() (every log_every_n_steps optimizer steps, or once a stop was asked
/// for), and at on_train_epoch_start, at step = Trainer::batches_that_stepped() (there the
/// global_step): into trainer.callback_metrics() (a
/// checkpoint may monitor "lr-Adam"), and as one row for every logger (trainer.log_metrics), which
/// CSV, TensorBoard and the recording get on the observer pool. Schedulers' optimizers are named
/// first, then the others, as Lightning's. Throws
/// MisconfigurationError at on_train_start when the trainer has no logger, or a scheduler config's
/// optimizer_idx names no optimizer. Does nothing in a replay: the recording has its rows.
class LearningRateMonitor : public Callback {
 public:
  explicit LearningRateMonitor(LearningRateMonitorOptions options = {});

  void on_train_start(Trainer& trainer, Module& module) override;
  void on_train_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                            int64_t batch_idx) override;
  void on_train_epoch_start(Trainer& trainer, Module& module) override;

  /// Every learning rate logged in this fit, by key, in order (Lightning's `lrs`; every key is
  /// there from on_train_start, with no value yet).
  const std::map<std::string, std::vector<double>>& lrs() const noexcept { return lrs_; }
  /// What the last log sent to the loggers.
  const Metrics& last_logged() const noexcept { return last_logged_; }
  const LearningRateMonitorOptions& options() const noexcept { return options_; }

 private:
  enum class Interval { kStep, kEpoch, kAny };
  // One logged source: a scheduler config's optimizer (scheduler >= 0) or an optimizer without a
  // scheduler (scheduler -1), under its Lightning name before the param-group suffixes.
  struct Source {
    std::size_t optimizer;
    int scheduler;
    std::string name;
  };
  // Lightning's _find_names_from_schedulers then _find_names_from_optimizers: schedulers first,
  // then the optimizers no scheduler steps; a second unnamed source of one optimizer class is
  // "lr-Adam-1".
  static std::vector<Source> sources(const Trainer& trainer);
  // The values due at `interval`: schedulers whose interval it is (or any), and every optimizer
  // without a scheduler; their learning rates are appended to lrs_.
  Metrics extract_stats(const Trainer& trainer, Interval interval);
  void log(Trainer& trainer, const Metrics& stats);

  LearningRateMonitorOptions options_;
  std::map<std::string, std::vector<double>> lrs_;
  Metrics last_logged_;
};

}  // namespace trainbus::callbacks
