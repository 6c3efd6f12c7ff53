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

/// When a scheduler steps: after every `frequency` optimizer steps, or every `frequency` epochs.
enum class SchedulerInterval { kEpoch, kStep };

/// One LR scheduler and when to step it (Lightning's lr_scheduler config dict).
struct SchedulerConfig {
  std::shared_ptr<torch::optim::LRScheduler> scheduler;
  SchedulerInterval interval = SchedulerInterval::kEpoch;
  int64_t frequency = 1;
  /// Name for logging (LearningRateMonitor); empty: "lr-<OptimizerType>".
  std::string name;
  /// Which of the config's optimizers the scheduler steps (Lightning 1.x's opt_idx): LibTorch's
  /// LRScheduler keeps its optimizer to itself, so LearningRateMonitor needs to be told.
  std::size_t optimizer_idx = 0;
};

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
