// A recorded fit with manual optimization replays: the optimizer-step events a module's own
// steps publish carry the global_step callbacks saw live.
#include <memory>
#include <string>
#include <vector>

#include "callbacks/lambda_callback.h"
#include "core/trainer.h"
#include "record/record_file.h"
#include "record/recorder.h"
#include "replay/replay_session.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::TempDir;

// Named, not anonymous: a unity build puts this file beside the other tests.
namespace replay_manual_optimization_test {

namespace {

// Two optimizer steps per batch, in training_step.
class TwoStepsPerBatch : public testing::BoringModule {
 public:
  TwoStepsPerBatch() { automatic_optimization(false); }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    LightningOptimizer opt = optimizer();
    at::Tensor value;
    for (int i = 0; i < 2; ++i) {
      opt.zero_grad();
      value = loss(batch);
      manual_backward(value);
      opt.step();
    }
    return value;
  }
};

// What the optimization hooks see of global_step, one line per call.
std::shared_ptr<callbacks::LambdaCallback> step_probe(std::vector<std::string>& seen) {
  auto note = [&seen](const char* hook, const Trainer& t) {
    seen.push_back(std::string(hook) + " step " + std::to_string(t.global_step()));
  };
  return std::make_shared<callbacks::LambdaCallback>(
      callbacks::LambdaHooks()
          .on_before_backward(
              [note](Trainer& t, Module&, const at::Tensor&) { note("before_backward", t); })
          .on_after_backward([note](Trainer& t, Module&) { note("after_backward", t); })
          .on_before_optimizer_step([note](Trainer& t, Module&, torch::optim::Optimizer&) {
            note("before_optimizer_step", t);
          })
          .on_after_optimizer_step([note](Trainer& t, Module&, torch::optim::Optimizer&) {
            note("after_optimizer_step", t);
          })
          .on_train_batch_end([note](Trainer& t, Module&, const StepOutput&, const Batch&,
                                     int64_t) { note("train_batch_end", t); }));
}

TrainerOptions options() {
  TrainerOptions o = testing::trainer_options();
  o.max_epochs(2).limit_train_batches(3).limit_val_batches(0).enable_model_summary(false);
  return o;
}

}  // namespace

TEST_CASE("A recorded fit with manual optimization replays its optimizer steps",
          "[replay][manual]") {
  TempDir dir;
  const std::string recording = dir.file("events.tbrec");
  std::vector<std::string> live;
  {
    Trainer trainer(options(), {step_probe(live)});
    trainer.add_observer(
        std::make_shared<record::Recorder>(record::RecorderOptions().path(recording)));
    TwoStepsPerBatch model;
    testing::RandomDataModule data;
    trainer.fit(model, data);
    REQUIRE(trainer.global_step() == 12);
  }
  REQUIRE(live.size() == 2 * 3 * (2 * 4 + 1));
  CHECK(live[0] == "before_backward step 0");
  CHECK(live[3] == "after_optimizer_step step 1");
  CHECK(live[8] == "train_batch_end step 2");

  std::vector<std::string> replayed;
  replay::ReplaySession session(options(), {step_probe(replayed)});
  record::RecordingReader reader(recording);
  session.replay(reader);
  session.finish();
  CHECK(replayed == live);
}

}  // namespace replay_manual_optimization_test
