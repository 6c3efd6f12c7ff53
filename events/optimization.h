#pragma once
/// Events around backward and the optimizer step, in the order they fire within a batch:
/// BeforeZeroGrad, BeforeBackward, AfterBackward, BeforeOptimizerStep, AfterOptimizerStep.

#include <cstdint>
#include <string_view>

#include "base/metrics.h"
#include "events/common.h"

namespace trainbus::events {

/// Fires after training_step, before optimizer.zero_grad(), on the first batch of each
/// accumulation window (as Lightning: zero_grad runs before backward, not after the step).
struct BeforeZeroGrad {
  static constexpr std::string_view kName = "before_zero_grad";
  Progress progress;
  int64_t optimizer_idx = 0;
};

/// Fires right before loss.backward(). `loss` is the loss as backpropagated (divided by
/// accumulate_grad_batches).
struct BeforeBackward {
  static constexpr std::string_view kName = "before_backward";
  Progress progress;
  int64_t batch_idx = 0;
  TensorRef loss;
};

/// Fires after loss.backward() and before optimizers are stepped.
struct AfterBackward {
  static constexpr std::string_view kName = "after_backward";
  Progress progress;
  int64_t batch_idx = 0;
};

/// Fires before gradient clipping and optimizer.step(), only on batches that step.
struct BeforeOptimizerStep {
  static constexpr std::string_view kName = "before_optimizer_step";
  Progress progress;
  int64_t optimizer_idx = 0;
};

/// Fires after optimizer.step(); `progress.global_step` already counts this step.
/// Lightning has no such hook; trainbus adds it so that observers can see fresh weights.
struct AfterOptimizerStep {
  static constexpr std::string_view kName = "after_optimizer_step";
  Progress progress;
  int64_t optimizer_idx = 0;
  /// The learning rate and momentum each param group of the optimizer stepped with, under
  /// LearningRateMonitor's names: "lr-Adam", "lr-Adam/pg1", "lr-Adam-momentum" (Adam's beta1,
  /// SGD's and RMSprop's momentum; absent for optimizers without one).
  Metrics learning_rates;
};

}  // namespace trainbus::events
