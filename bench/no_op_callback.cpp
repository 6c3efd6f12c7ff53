// Out of line, so that every hook is a real call through the vtable.
#include "bench/no_op_callback.h"

namespace trainbus::bench {

void NoOpCallback::setup(Trainer&, Module&, Stage) {}
void NoOpCallback::teardown(Trainer&, Module&, Stage) {}
void NoOpCallback::on_fit_start(Trainer&, Module&) {}
void NoOpCallback::on_fit_end(Trainer&, Module&) {}
void NoOpCallback::on_train_start(Trainer&, Module&) {}
void NoOpCallback::on_train_end(Trainer&, Module&) {}
void NoOpCallback::on_train_epoch_start(Trainer&, Module&) {}
void NoOpCallback::on_train_epoch_end(Trainer&, Module&) {}
void NoOpCallback::on_train_batch_start(Trainer&, Module&, const Batch&, int64_t) {}
void NoOpCallback::on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t) {
}
void NoOpCallback::on_before_zero_grad(Trainer&, Module&, torch::optim::Optimizer&) {}
void NoOpCallback::on_before_backward(Trainer&, Module&, const at::Tensor&) {}
void NoOpCallback::on_after_backward(Trainer&, Module&) {}
void NoOpCallback::on_before_optimizer_step(Trainer&, Module&, torch::optim::Optimizer&) {}
void NoOpCallback::on_after_optimizer_step(Trainer&, Module&, torch::optim::Optimizer&) {}

}  // namespace trainbus::bench
