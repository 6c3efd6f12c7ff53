// StepOutput in on_train_batch_end: what training_step returned, with the loss as Lightning's
// automatic optimization hands it on (divided by accumulate_grad_batches, detached).
#include <cstdint>
#include <memory>
#include <vector>

#include "core/trainer.h"
#include "events/train.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace {

/// Returns {"loss", "extra"} and keeps each batch's loss value.
class LossKeeping : public BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    const at::Tensor value = loss(batch);
    losses.push_back(value.item<double>());
    return {{"loss", value}, {"extra", value.detach() * 10}};
  }
  std::vector<double> losses;
};

struct SeenOutputs {
  double loss = 0;
  bool requires_grad = true;
  double extra = 0;
  double backward_loss = 0;
};

/// What on_before_backward and on_train_batch_end see.
class OutputsWatcher : public Callback {
 public:
  void on_before_backward(Trainer&, Module&, const at::Tensor& loss) override {
    backward_loss_ = loss.item<double>();
  }
  void on_train_batch_end(Trainer&, Module&, const StepOutput& outputs, const Batch&,
                          int64_t) override {
    seen.push_back({outputs.loss().item<double>(), outputs.loss().requires_grad(),
                    outputs.at("extra").item<double>(), backward_loss_});
  }
  std::vector<SeenOutputs> seen;

 private:
  double backward_loss_ = 0;
};

}  // namespace

TEST_CASE("on_train_batch_end's outputs hold the loss that was backpropagated, detached",
          "[core][hooks]") {
  // Lightning 2.x, loops/optimization/automatic.py: ClosureResult.from_training_step_output
  // divides the loss by trainer.accumulate_grad_batches (`closure_loss / normalize`), backward
  // runs on that, and `loss = closure_loss.detach().clone()`; _AutomaticOptimization.run returns
  // `result.asdict()` = {"loss": loss, **extra}, which _TrainingEpochLoop.advance passes to
  // on_train_batch_end. The other entries are passed on unchanged.
  for (const int64_t accumulate : {int64_t{1}, int64_t{2}}) {
    DYNAMIC_SECTION("accumulate_grad_batches=" << accumulate) {
      TrainerOptions options = testing::trainer_options();
      options.max_epochs(1).limit_train_batches(4).limit_val_batches(0);
      options.accumulate_grad_batches(accumulate);
      auto watcher = std::make_shared<OutputsWatcher>();
      Trainer trainer(options, {watcher});
      double event_loss = 0;
      auto subscription = trainer.bus().subscribe<events::TrainBatchEnd>(
          [&](const events::TrainBatchEnd& event) { event_loss = event.loss; });
      LossKeeping module;
      RandomDataModule data;
      trainer.fit(module, data);

      REQUIRE(watcher->seen.size() == 4);
      for (size_t i = 0; i < 4; ++i) {
        INFO("batch " << i);
        const double expected = module.losses[i] / static_cast<double>(accumulate);
        CHECK(watcher->seen[i].loss == Approx(expected));
        CHECK(watcher->seen[i].backward_loss == Approx(expected));
        CHECK_FALSE(watcher->seen[i].requires_grad);
        CHECK(watcher->seen[i].extra == Approx(module.losses[i] * 10));
      }
      // The event carries the same loss, so that a replay hands callbacks the same outputs.
      CHECK(event_loss == Approx(module.losses[3] / static_cast<double>(accumulate)));
    }
  }
}
