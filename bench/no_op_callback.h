#pragma once
// A callback that overrides every hook with an empty body: what the trainer pays per callback.

#include "core/callback.h"

namespace trainbus::bench {

class NoOpCallback : public Callback {
 public:
  void setup(Trainer&, Module&, Stage) override;
  void teardown(Trainer&, Module&, Stage) override;
  void on_fit_start(Trainer&, Module&) override;
  void on_fit_end(Trainer&, Module&) override;
  void on_train_start(Trainer&, Module&) override;
  void on_train_end(Trainer&, Module&) override;
  void on_train_epoch_start(Trainer&, Module&) override;
  void on_train_epoch_end(Trainer&, Module&) override;
  void on_train_batch_start(Trainer&, Module&, const Batch&, int64_t) override;
  void on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t) override;
  void on_before_zero_grad(Trainer&, Module&, torch::optim::Optimizer&) override;
  void on_before_backward(Trainer&, Module&, const at::Tensor&) override;
  void on_after_backward(Trainer&, Module&) override;
  void on_before_optimizer_step(Trainer&, Module&, torch::optim::Optimizer&) override;
  void on_after_optimizer_step(Trainer&, Module&, torch::optim::Optimizer&) override;
};

}  // namespace trainbus::bench
