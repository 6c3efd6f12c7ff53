#pragma once
/// OptimizerConfig: what Module::configure_optimizers returns.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

namespace trainbus {

/// When a scheduler steps: after the optimizer steps on every `frequency`-th batch of an epoch (as
/// Lightning counts: batch_idx + 1, not global_step), or at the end of every `frequency`-th epoch.
enum class SchedulerInterval { kEpoch, kStep };

/// One LR scheduler and when to step it (Lightning's lr_scheduler config dict).
struct SchedulerConfig {
  std::shared_ptr<torch::optim::LRScheduler> scheduler;
  SchedulerInterval interval = SchedulerInterval::kEpoch;
  int64_t frequency = 1;
  /// The callback metric a trainbus::ReduceLROnPlateau scheduler is stepped with (required for
  /// one, as Lightning requires it). Such a scheduler steps after validation: at the end of the
  /// epoch's on_train_epoch_end hooks (interval kEpoch), or after the batch and any validation it
  /// triggers (kStep).
  std::string monitor;
  /// With a monitor that is missing from callback_metrics: true fails naming the metrics there
  /// are, false warns and skips the step (Lightning's `strict`).
  bool strict = true;
  /// Name for logging (LearningRateMonitor); empty: "lr-<OptimizerType>".
  std::string name;
  /// Which of the config's optimizers the scheduler steps (Lightning 1.x's opt_idx): LibTorch's
  /// LRScheduler keeps its optimizer to itself, so LearningRateMonitor needs to be told.
  std::size_t optimizer_idx = 0;
};

/// Whether `config`'s scheduler is a trainbus::ReduceLROnPlateau (stepped with its monitor).
bool reduces_on_plateau(const SchedulerConfig& config);

/// Throws MisconfigurationError, naming `where` and the index, for a null scheduler, a frequency
/// below 1, an optimizer_idx past `num_optimizers`, or (in automatic optimization, where the
/// trainer steps it) a ReduceLROnPlateau without a monitor.
void validate_scheduler_configs(const std::vector<SchedulerConfig>& configs,
                                std::size_t num_optimizers, const std::string& where,
                                bool automatic_optimization = true);

/// Manual optimization: the module steps its schedulers, so `monitor` and `strict` mean nothing;
/// warns of each config that sets them, as Lightning's _configure_schedulers_manual_opt, and
/// resets them. `interval` and `frequency` stay (LearningRateMonitor reads the interval).
void ignore_automatic_scheduler_keys(std::vector<SchedulerConfig>& configs);

/// One or more optimizers, optionally with schedulers. In automatic optimization every optimizer
/// steps on the loss training_step returns (one backward, then each optimizer in order).
struct OptimizerConfig {
  std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers;
  std::vector<SchedulerConfig> lr_schedulers;

  OptimizerConfig() = default;

  /// `return std::make_shared<torch::optim::Adam>(parameters(), 1e-3);`
  template <class Opt, class = std::enable_if_t<std::is_base_of_v<torch::optim::Optimizer, Opt>>>
  OptimizerConfig(std::shared_ptr<Opt> optimizer)  // NOLINT(google-explicit-constructor)
      : optimizers{std::move(optimizer)} {}

  template <class Opt, class = std::enable_if_t<std::is_base_of_v<torch::optim::Optimizer, Opt>>>
  OptimizerConfig(std::shared_ptr<Opt> optimizer, SchedulerConfig scheduler)
      : optimizers{std::move(optimizer)}, lr_schedulers{std::move(scheduler)} {}
};

}  // namespace trainbus
