#pragma once
/// LightningOptimizer: the handle to one of the running fit's optimizers that Module::optimizer()
/// and Module::optimizers() give, for manual optimization.

#include <cstddef>
#include <functional>

#include <ATen/core/Tensor.h>

namespace torch::optim {
class Optimizer;
}

namespace trainbus {

class Trainer;

/// Lightning's LightningOptimizer: wraps the optimizer configure_optimizers returned so that a
/// manual step fires the hooks and counts a global step. A small value (the trainer and the
/// optimizer's index): copy it freely, but only while the fit that gave it runs.
///
/// Used on the training thread, from training_step (or the hooks of a training batch) of a
/// module with automatic_optimization(false); step() throws MisconfigurationError otherwise.
class LightningOptimizer {
 public:
  /// What step() runs first, inside the optimizer's step (Lightning's optimizer closure): usually
  /// a forward pass and manual_backward; its result is what the optimizer's step returns.
  using Closure = std::function<at::Tensor()>;

  LightningOptimizer(Trainer& trainer, std::size_t index) : trainer_(&trainer), index_(index) {}

  /// The wrapped optimizer (Lightning's `optimizer.optimizer`): read or change its param_groups.
  torch::optim::Optimizer& optimizer() const;
  /// Its place in configure_optimizers' list.
  std::size_t index() const noexcept { return index_; }

  /// One optimizer step, as Lightning's LightningOptimizer.step in manual optimization: runs
  /// `closure` (if any), then the on_before_optimizer_step hooks (callbacks, then the module),
  /// steps the optimizer, adds one to global_step, then fires the on_after_optimizer_step hooks
  /// (a trainbus addition). Returns the closure's result (undefined without a closure). Gradients
  /// are not clipped (Module::clip_gradients does that) and not zeroed (zero_grad()).
  at::Tensor step(const Closure& closure = {});
  /// Sets the gradients of the optimizer's parameters to none (PyTorch >= 2.0's
  /// zero_grad(set_to_none=True), which Lightning users get). Fires no hook: in manual
  /// optimization on_before_zero_grad does not fire, as in Lightning.
  void zero_grad();

  friend bool operator==(const LightningOptimizer& a, const LightningOptimizer& b) {
    return a.trainer_ == b.trainer_ && a.index_ == b.index_;
  }

 private:
  Trainer* trainer_;
  std::size_t index_;
};

}  // namespace trainbus
