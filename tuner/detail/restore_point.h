#pragma once
/// Private to tuner/: what a finder puts back after its trial runs (Lightning saves a checkpoint
/// before them and restores it after).

#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/callback.h"
#include "core/trainer.h"

namespace trainbus::tuner::detail {

/// The CPU random generator's state when it was made, and a module's parameters and buffers
/// once save_module() copied them. restore() puts both back, the tensors in place and bit-exact.
class RestorePoint {
 public:
  RestorePoint();
  /// Copies the module's parameters and buffers; after configure_model, so that layers it builds
  /// are kept too. Only the first call copies: later trials start from changed weights.
  void save_module(Module& module);
  bool saved_module() const noexcept { return saved_; }
  /// Puts the weights, buffers and the generator back, and drops the gradients the trials left.
  void restore();

 private:
  at::Tensor rng_state_;
  bool saved_ = false;
  std::vector<std::pair<at::Tensor, at::Tensor>> tensors_;  // each tensor and its copy
};

/// Saves the module into `point` at the first run start it sees (after configure_model): a fit's
/// on_fit_start, or the start of a validate, test or predict trial.
class SaveModuleAtRunStart : public Callback {
 public:
  explicit SaveModuleAtRunStart(RestorePoint& point) : point_(point) {}
  void on_fit_start(Trainer&, Module& module) override { point_.save_module(module); }
  void on_validation_start(Trainer& trainer, Module& module) override {
    if (trainer.fn() == Stage::kValidate) point_.save_module(module);
  }
  void on_test_start(Trainer&, Module& module) override { point_.save_module(module); }
  void on_predict_start(Trainer&, Module& module) override { point_.save_module(module); }

 private:
  RestorePoint& point_;
};

}  // namespace trainbus::tuner::detail
