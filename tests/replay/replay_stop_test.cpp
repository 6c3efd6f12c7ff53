// Where a stop was asked decides when it holds: a stop asked in training_step holds from the next
// hook on, live and in the replay; one asked in a hook holds once that event's hooks all ran.
#include <algorithm>
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

namespace {

// Asks to stop from training_step at batch 2 of epoch 0.
class StopsInStep : public testing::BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    if (batch_idx == 2) trainer().request_stop("StopsInStep: enough");
    return BoringModule::training_step(batch, batch_idx);
  }
};

// What every batch-level hook sees of should_stop, one line per call.
std::shared_ptr<callbacks::LambdaCallback> should_stop_probe(std::vector<std::string>& seen) {
  auto note = [&seen](const char* hook, const Trainer& t) {
    seen.push_back(std::string(hook) + " step " + std::to_string(t.global_step()) + " stop " +
                   std::to_string(t.should_stop()));
  };
  return std::make_shared<callbacks::LambdaCallback>(
      callbacks::LambdaHooks()
          .on_train_batch_start(
              [note](Trainer& t, Module&, const Batch&, int64_t) { note("train_batch_start", t); })
          .on_before_zero_grad([note](Trainer& t, Module&, torch::optim::Optimizer&) {
            note("before_zero_grad", t);
          })
          .on_before_backward(
              [note](Trainer& t, Module&, const at::Tensor&) { note("before_backward", t); })
          .on_before_optimizer_step([note](Trainer& t, Module&, torch::optim::Optimizer&) {
            note("before_optimizer_step", t);
          })
          .on_train_batch_end([note](Trainer& t, Module&, const StepOutput&, const Batch&,
                                     int64_t) { note("train_batch_end", t); })
          .on_train_epoch_end([note](Trainer& t, Module&) { note("train_epoch_end", t); }));
}

TrainerOptions options() {
  TrainerOptions o = testing::trainer_options();
  o.max_epochs(2).limit_train_batches(5).limit_val_batches(0).enable_model_summary(false);
  return o;
}

}  // namespace

TEST_CASE("A stop asked in training_step holds from the next hook on, live and in the replay",
          "[replay]") {
  TempDir dir;
  const std::string recording = dir.file("events.tbrec");
  std::vector<std::string> live;
  {
    Trainer trainer(options(), {should_stop_probe(live)});
    trainer.add_observer(
        std::make_shared<record::Recorder>(record::RecorderOptions().path(recording)));
    StopsInStep model;
    testing::RandomDataModule data;
    trainer.fit(model, data);
  }
  // Live: the step's own batch already sees it (before_zero_grad of batch 2 is step 2).
  REQUIRE(std::find(live.begin(), live.end(), "before_zero_grad step 2 stop 1") != live.end());
  REQUIRE(std::find(live.begin(), live.end(), "train_batch_start step 2 stop 0") != live.end());

  std::vector<std::string> replayed;
  replay::ReplaySession session(options(), {should_stop_probe(replayed)});
  record::RecordingReader reader(recording);
  session.replay(reader);
  session.finish();
  CHECK(replayed == live);
}

namespace {

// Asks to stop from validation_step (first batch of epoch 0) or, with `in_prepare_data`, before
// anything else (outside every hook and step).
class StopsElsewhere : public testing::BoringModule {
 public:
  explicit StopsElsewhere(bool in_prepare_data) : in_prepare_data_(in_prepare_data) {}
  void prepare_data() override {
    if (in_prepare_data_) trainer().request_stop("StopsElsewhere: before it starts");
  }
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    if (!in_prepare_data_ && batch_idx == 0) trainer().request_stop("StopsElsewhere: validated");
    return BoringModule::validation_step(batch, batch_idx);
  }

 private:
  bool in_prepare_data_;
};

std::shared_ptr<callbacks::LambdaCallback> stop_probe(std::vector<std::string>& seen) {
  auto note = [&seen](const char* hook, const Trainer& t) {
    seen.push_back(std::string(hook) + " stop " + std::to_string(t.should_stop()));
  };
  return std::make_shared<callbacks::LambdaCallback>(
      callbacks::LambdaHooks()
          .on_fit_start([note](Trainer& t, Module&) { note("fit_start", t); })
          .on_validation_batch_end([note](Trainer& t, Module&, const StepOutput&, const Batch&,
                                          int64_t) { note("validation_batch_end", t); })
          .on_validation_end([note](Trainer& t, Module&) { note("validation_end", t); })
          .on_train_epoch_end([note](Trainer& t, Module&) { note("train_epoch_end", t); }));
}

}  // namespace

TEST_CASE("Stops asked in validation_step and outside every hook replay as they held live",
          "[replay]") {
  for (const bool in_prepare_data : {false, true}) {
    TempDir dir;
    const std::string recording = dir.file("events.tbrec");
    std::vector<std::string> live;
    {
      Trainer trainer(testing::trainer_options()
                          .max_epochs(2)
                          .limit_train_batches(2)
                          .limit_val_batches(2)
                          .num_sanity_val_steps(0)
                          .enable_model_summary(false),
                      {stop_probe(live)});
      trainer.add_observer(
          std::make_shared<record::Recorder>(record::RecorderOptions().path(recording)));
      StopsElsewhere model(in_prepare_data);
      testing::RandomDataModule data;
      trainer.fit(model, data);
    }
    REQUIRE(std::find(live.begin(), live.end(),
                      in_prepare_data ? "fit_start stop 1" : "validation_batch_end stop 1") !=
            live.end());
    std::vector<std::string> replayed;
    replay::ReplaySession session(testing::trainer_options()
                                      .max_epochs(2)
                                      .limit_train_batches(2)
                                      .limit_val_batches(2)
                                      .num_sanity_val_steps(0)
                                      .enable_model_summary(false),
                                  {stop_probe(replayed)});
    record::RecordingReader reader(recording);
    session.replay(reader);
    session.finish();
    CHECK(replayed == live);
  }
}
