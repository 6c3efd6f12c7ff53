#include "callbacks/learning_rate_monitor.h"

#include <set>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/learning_rates.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

bool is_lr_key(const std::string& key) {
  const auto ends_with = [&](const std::string& suffix) {
    return key.size() >= suffix.size() &&
           key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return !ends_with("-momentum") && !ends_with("-weight_decay");
}

}  // namespace

LearningRateMonitor::LearningRateMonitor(LearningRateMonitorOptions options)
    : options_(std::move(options)) {
  const std::optional<std::string>& interval = options_.logging_interval();
  TRAINBUS_CHECK(!interval || *interval == "step" || *interval == "epoch",
                 "LearningRateMonitor: logging_interval must be \"step\", \"epoch\" or unset "
                 "(each scheduler's own interval), got \"",
                 interval.value_or(""), "\"");
}

void LearningRateMonitor::on_train_start(Trainer& trainer, Module&) {
  TRAINBUS_CHECK(!trainer.loggers().empty(),
                 "Cannot use LearningRateMonitor callback with Trainer that has no logger: add "
                 "one (trainer.add_observer(std::make_shared<observers::CsvLogger>(...)); "
                 "`trainbus fit` has CSV and TensorBoard on unless --no-csv and --no-tensorboard)");
  if (options_.log_momentum()) {
    bool all_have = true;
    for (const auto& optimizer : trainer.optimizers()) all_have &= has_momentum(*optimizer);
    if (!all_have) {
      warn(
          "You have set log_momentum=true, but some optimizers do not have momentum. This will "
          "log a value 0 for the momentum.");
    }
  }
}

Metrics LearningRateMonitor::extract_stats(const Trainer& trainer, Interval interval) {
  const auto& optimizers = trainer.optimizers();
  Metrics stats;
  std::set<std::size_t> scheduled;
  OptimizerStatsOptions read;
  read.momentum = options_.log_momentum();
  read.weight_decay = options_.log_weight_decay();
  for (const SchedulerConfig& config : trainer.lr_scheduler_configs()) {
    if (config.optimizer_idx >= optimizers.size()) continue;
    scheduled.insert(config.optimizer_idx);
    const bool due = interval == Interval::kAny ||
                     (interval == Interval::kStep) == (config.interval == SchedulerInterval::kStep);
    if (!due) continue;
    OptimizerStatsOptions named = read;
    named.name = config.name;
    const Metrics values = optimizer_stats(optimizers, config.optimizer_idx, named);
    stats.insert(values.begin(), values.end());
  }
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    if (scheduled.count(i) > 0) continue;
    const Metrics values = optimizer_stats(optimizers, i, read);
    stats.insert(values.begin(), values.end());
  }
  return stats;
}

void LearningRateMonitor::log(Trainer& trainer, const Metrics& stats) {
  if (stats.empty()) return;
  for (const auto& [key, value] : stats) {
    if (is_lr_key(key)) lrs_[key].push_back(value);
  }
  last_logged_ = stats;
  // Lightning's step: the batches that stepped so far (this batch has not yet).
  for (const LoggerHandle& logger : trainer.loggers())
    logger.log_metrics(stats, trainer.global_step());
}

void LearningRateMonitor::on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) {
  // Lightning's _LoggerConnector.should_update_logs.
  const bool update = (trainer.global_step() + 1) % trainer.options().log_every_n_steps() == 0 ||
                      trainer.should_stop();
  if (!update || options_.logging_interval() == std::optional<std::string>("epoch")) return;
  log(trainer,
      extract_stats(trainer, options_.logging_interval() ? Interval::kAny : Interval::kStep));
}

void LearningRateMonitor::on_train_epoch_start(Trainer& trainer, Module&) {
  if (options_.logging_interval() == std::optional<std::string>("step")) return;
  log(trainer,
      extract_stats(trainer, options_.logging_interval() ? Interval::kAny : Interval::kEpoch));
}

}  // namespace trainbus::callbacks
