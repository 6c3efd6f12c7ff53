// Manual optimization (Lightning's automatic_optimization = False): what the trainer does when
// training_step optimizes itself with manual_backward and LightningOptimizer::step (Lightning's
// _ManualOptimization loop, LightningOptimizer and Strategy.backward).
#include <string>

#include <torch/optim/optimizer.h>

#include "base/errors.h"
#include "core/detail/gradients.h"
#include "core/detail/trainer_hooks.h"
#include "core/learning_rates.h"
#include "core/lightning_optimizer.h"
#include "core/tensor_ref.h"
#include "core/trainer.h"

namespace trainbus {

void Trainer::verify_manual_optimization_support() {
  if (module_->automatic_optimization()) return;
  // Lightning's configuration_validator.__verify_manual_optimization_support, with its messages.
  const double clip_val = options_.gradient_clip_val().value_or(0.0);
  TRAINBUS_CHECK(clip_val <= 0.0,
                 "Automatic gradient clipping is not supported for manual optimization. Remove "
                 "`Trainer(gradient_clip_val=",
                 clip_val,
                 ")` (TrainerOptions::gradient_clip_val) or switch to automatic optimization; to "
                 "clip in manual optimization call Module::clip_gradients in training_step.");
  TRAINBUS_CHECK(accumulate_grad_batches_ == 1,
                 "Automatic gradient accumulation is not supported for manual optimization. "
                 "Remove `Trainer(accumulate_grad_batches=",
                 accumulate_grad_batches_,
                 ")` (TrainerOptions::accumulate_grad_batches) or switch to automatic "
                 "optimization.");
}

void Trainer::manual_backward(const at::Tensor& loss) {
  // Lightning's _verify_is_manual_optimization message.
  TRAINBUS_CHECK(module_ != nullptr && !module_->automatic_optimization(),
                 "to use manual_backward, please disable automatic optimization: call "
                 "automatic_optimization(false) on the module");
  TRAINBUS_CHECK(current_fx_ == "training_step",
                 "manual_backward is called from training_step "
                 "(or a closure given to optimizer().step() there); it was called in ",
                 current_fx_.empty() ? std::string_view("no hook or step") : current_fx_);
  TRAINBUS_CHECK(loss.defined() && loss.requires_grad(),
                 "manual_backward: the loss does not require grad: it was computed without the "
                 "module's trainable parameters (detached, under a NoGradGuard, or with every "
                 "parameter toggled off)");
  const int64_t batch_idx = training_batch_idx_;
  // As Lightning's Strategy.backward through Precision.pre_backward/post_backward: the callbacks'
  // on_before_backward, the module's, backward, the callbacks' on_after_backward, the module's.
  call_hooks<events::BeforeBackward>(
      [&](Callback& c) { c.on_before_backward(*this, *module_, loss); },
      [&](Module& m) { m.on_before_backward(loss); },
      [&] {
        return events::BeforeBackward{event_progress(), batch_idx, make_tensor_ref(loss)};
      });
  strategy_->backward(loss, /*synchronize=*/true);
  call_hooks<events::AfterBackward>([&](Callback& c) { c.on_after_backward(*this, *module_); },
                                    [](Module& m) { m.on_after_backward(); },
                                    [&] {
                                      return events::AfterBackward{event_progress(), batch_idx};
                                    });
}

at::Tensor Trainer::manual_optimizer_step(std::size_t index,
                                          const std::function<at::Tensor()>& closure) {
  TRAINBUS_CHECK(module_ != nullptr && !module_->automatic_optimization(),
                 "optimizer().step() is for manual optimization: call "
                 "automatic_optimization(false) on the module, or let the trainer step the "
                 "optimizers");
  TRAINBUS_CHECK(fn_ == Stage::kFit && phase_ == Phase::kTraining,
                 "optimizer().step() is called during a training batch of Trainer::fit (in "
                 "training_step); it was called in ",
                 current_fx_.empty() ? std::string_view("no hook or step") : current_fx_);
  TRAINBUS_CHECK(index < optimizers_.size(), "optimizer ", index,
                 " is not one of the running fit's (", optimizers_.size(),
                 "): a handle from optimizers() is valid during the fit that gave it");
  torch::optim::Optimizer& optimizer = *optimizers_[index];
  // As Lightning's Precision._wrap_closure: the optimizer runs the closure, then the hooks before
  // its update (no gradient clipping in manual optimization).
  auto closure_then_hooks = [&]() -> at::Tensor {
    at::Tensor result = closure ? closure() : at::Tensor();
    call_hooks<events::BeforeOptimizerStep>(
        [&](Callback& c) { c.on_before_optimizer_step(*this, *module_, optimizer); },
        [&](Module& m) { m.on_before_optimizer_step(optimizer); },
        [&] {
          return events::BeforeOptimizerStep{event_progress(), static_cast<int64_t>(index)};
        });
    return result;
  };
  at::Tensor result = optimizer.step(closure_then_hooks);
  // As Lightning's _ManualOptimization._on_after_step: every optimizer step counts.
  ++progress_.global_step;
  call_hooks<events::AfterOptimizerStep>(
      [&](Callback& c) { c.on_after_optimizer_step(*this, *module_, optimizer); },
      [&](Module& m) { m.on_after_optimizer_step(optimizer); },
      [&] {
        return events::AfterOptimizerStep{event_progress(), static_cast<int64_t>(index),
                                          learning_rates(optimizers_, index)};
      });
  return result;
}

torch::optim::Optimizer& LightningOptimizer::optimizer() const {
  TRAINBUS_CHECK(index_ < trainer_->optimizers().size(), "optimizer ", index_,
                 " is not one of the running fit's (", trainer_->optimizers().size(),
                 "): a handle from optimizers() is valid during the fit that gave it");
  return *trainer_->optimizers()[index_];
}

at::Tensor LightningOptimizer::step(const Closure& closure) {
  return trainer_->manual_optimizer_step(index_, closure);
}

void LightningOptimizer::zero_grad() { detail::zero_grad_to_none(optimizer()); }

}  // namespace trainbus
