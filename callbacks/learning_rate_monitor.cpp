#include "callbacks/learning_rate_monitor.h"

#include <map>
#include <set>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/learning_rates.h"
#include "core/trainer.h"

namespace trainbus::callbacks {

LearningRateMonitor::LearningRateMonitor(LearningRateMonitorOptions options)
    : options_(std::move(options)) {
  const std::optional<std::string>& interval = options_.logging_interval();
  TRAINBUS_CHECK(!interval || *interval == "step" || *interval == "epoch",
                 "LearningRateMonitor: logging_interval must be \"step\", \"epoch\" or unset "
                 "(each scheduler's own interval), got \"",
                 interval.value_or(""), "\"");
}

void LearningRateMonitor::on_train_start(Trainer& trainer, Module&) {
  if (trainer.replaying()) return;
  TRAINBUS_CHECK(!trainer.loggers().empty(),
                 "Cannot use LearningRateMonitor callback with Trainer that has no logger: add "
                 "one (trainer.add_observer(std::make_shared<observers::CsvLogger>(...)); "
                 "`trainbus fit` has CSV and TensorBoard on unless --no-csv and --no-tensorboard)");
  const auto& schedulers = trainer.lr_scheduler_configs();
  for (std::size_t i = 0; i < schedulers.size(); ++i) {
    TRAINBUS_CHECK(schedulers[i].optimizer_idx < trainer.optimizers().size(),
                   "LearningRateMonitor: lr scheduler ", i, " has optimizer_idx ",
                   schedulers[i].optimizer_idx, " but configure_optimizers returned ",
                   trainer.optimizers().size(),
                   " optimizer(s); set SchedulerConfig::optimizer_idx to the optimizer it steps");
  }
  if (options_.log_momentum()) {
    bool all_have = true;
    for (const auto& optimizer : trainer.optimizers()) all_have &= has_momentum(*optimizer);
    if (!all_have) {
      warn(
          "You have set log_momentum=true, but some optimizers do not have momentum. This will "
          "log a value 0 for the momentum.");
    }
  }
  // A fresh `lrs` per fit, with every key (Lightning rebuilds it in on_train_start).
  lrs_.clear();
  last_logged_.clear();
  const OptimizerStatsOptions rates_only{false, false, {}};
  for (const Source& source : sources(trainer)) {
    OptimizerStatsOptions named = rates_only;
    named.name = source.name;
    for (const auto& entry : optimizer_stats(trainer.optimizers(), source.optimizer, named)) {
      lrs_[entry.first];
    }
  }
}

std::vector<LearningRateMonitor::Source> LearningRateMonitor::sources(const Trainer& trainer) {
  const auto& optimizers = trainer.optimizers();
  const auto& schedulers = trainer.lr_scheduler_configs();
  std::map<std::string, int> seen_types;  // unnamed sources per optimizer class so far
  const auto prefixed = [&](const std::string& name, const std::string& type, bool counts) {
    if (counts) ++seen_types[type];
    const auto found = seen_types.find(type);
    return found != seen_types.end() && found->second > 1
               ? name + "-" + std::to_string(found->second - 1)
               : name;
  };
  std::vector<Source> result;
  std::set<std::size_t> scheduled;
  for (std::size_t i = 0; i < schedulers.size(); ++i) {
    const SchedulerConfig& config = schedulers[i];
    if (config.optimizer_idx >= optimizers.size()) continue;  // refused at on_train_start
    scheduled.insert(config.optimizer_idx);
    const std::string type = optimizer_class_name(*optimizers[config.optimizer_idx]);
    const std::string name = config.name.empty() ? "lr-" + type : config.name;
    result.push_back({config.optimizer_idx, static_cast<int>(i),
                      prefixed(name, type, /*counts=*/config.name.empty())});
  }
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    if (scheduled.count(i) > 0) continue;
    const std::string type = optimizer_class_name(*optimizers[i]);
    result.push_back({i, -1, prefixed("lr-" + type, type, /*counts=*/true)});
  }
  return result;
}

Metrics LearningRateMonitor::extract_stats(const Trainer& trainer, Interval interval) {
  const auto& optimizers = trainer.optimizers();
  const auto& schedulers = trainer.lr_scheduler_configs();
  Metrics stats;
  for (const Source& source : sources(trainer)) {
    if (source.scheduler >= 0) {
      const SchedulerConfig& config = schedulers[static_cast<std::size_t>(source.scheduler)];
      const bool due =
          interval == Interval::kAny ||
          (interval == Interval::kStep) == (config.interval == SchedulerInterval::kStep);
      if (!due) continue;
    }
    OptimizerStatsOptions read{options_.log_momentum(), options_.log_weight_decay(), source.name};
    const Metrics values = optimizer_stats(optimizers, source.optimizer, read);
    stats.insert(values.begin(), values.end());
    read.momentum = read.weight_decay = false;
    for (const auto& [key, lr] : optimizer_stats(optimizers, source.optimizer, read)) {
      lrs_[key].push_back(lr);
    }
  }
  return stats;
}

void LearningRateMonitor::log(Trainer& trainer, const Metrics& stats) {
  if (stats.empty()) return;
  last_logged_ = stats;
  // As Lightning's _extract_stats: a checkpoint or early stopping may monitor the rates.
  for (const auto& [key, value] : stats) trainer.set_callback_metric(key, value);
  // To every logger (Lightning: `for logger in trainer.loggers`), one row each, at Lightning's
  // step: the batches that stepped so far (this batch has not yet).
  trainer.log_metrics(stats, trainer.batches_that_stepped());
}

void LearningRateMonitor::on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) {
  if (trainer.replaying()) return;
  if (!trainer.should_update_logs() ||
      options_.logging_interval() == std::optional<std::string>("epoch"))
    return;
  log(trainer,
      extract_stats(trainer, options_.logging_interval() ? Interval::kAny : Interval::kStep));
}

void LearningRateMonitor::on_train_epoch_start(Trainer& trainer, Module&) {
  if (trainer.replaying() || options_.logging_interval() == std::optional<std::string>("step")) {
    return;
  }
  log(trainer,
      extract_stats(trainer, options_.logging_interval() ? Interval::kAny : Interval::kEpoch));
}

}  // namespace trainbus::callbacks
