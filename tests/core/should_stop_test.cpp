// trainer.should_stop as Lightning: honoured only when min_epochs/min_steps allow, never cancelled.
#include <algorithm>

#include "tests/support/catch.h"

#include "callbacks/early_stopping.h"
#include "core/trainer.h"
#include "tests/support/recording.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace {

/// Requests a stop at the end of every training batch from (epoch, batch) on.
class StopFrom : public Callback {
 public:
  StopFrom(int64_t epoch, int64_t batch) : epoch_(epoch), batch_(batch) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() > epoch_ ||
        (trainer.current_epoch() == epoch_ && batch_idx >= batch_)) {
      trainer.request_stop("StopFrom");
    }
  }

 private:
  int64_t epoch_, batch_;
};

class StopOnFitStart : public Callback {
 public:
  void on_fit_start(Trainer& trainer, Module&) override { trainer.request_stop("StopOnFitStart"); }
};

TrainerOptions four_batches_no_val() {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(10);
  options.limit_train_batches(4);
  options.limit_val_batches(0);
  return options;
}

}  // namespace

TEST_CASE("A stop requested in on_fit_start skips training entirely", "[core][should_stop]") {
  auto log = std::make_shared<HookLog>();
  Trainer trainer(four_batches_no_val(),
                  {std::make_shared<StopOnFitStart>(), std::make_shared<RecordingCallback>(log)});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.global_step() == 0);
  CHECK(std::find(log->begin(), log->end(), "Callback.on_train_start") == log->end());
  CHECK(std::find(log->begin(), log->end(), "Callback.on_fit_end") != log->end());
}

TEST_CASE("A stop request ends the epoch after the current batch", "[core][should_stop]") {
  Trainer trainer(four_batches_no_val(), {std::make_shared<StopFrom>(1, 2)});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.should_stop());
  CHECK(trainer.global_step() == 4 + 3);
  CHECK(trainer.current_epoch() == 2);
  CHECK(trainer.stop_reasons() == std::vector<std::string>{"StopFrom"});
}

TEST_CASE("min_epochs keeps training until met, then the stop is honoured", "[core][should_stop]") {
  TrainerOptions options = four_batches_no_val();
  options.min_epochs(3);
  Trainer trainer(options, {std::make_shared<StopFrom>(0, 0)});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  // Epochs 0-2 run in full (the stop is refused after every batch); after the third epoch
  // FitLoop.done allows it.
  CHECK(trainer.global_step() == 3 * 4);
  CHECK(trainer.current_epoch() == 3);
}

TEST_CASE("min_steps keeps training until met, then the stop is honoured", "[core][should_stop]") {
  TrainerOptions options = four_batches_no_val();
  options.min_steps(6);
  Trainer trainer(options, {std::make_shared<StopFrom>(0, 0)});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.global_step() == 6);
  CHECK(trainer.current_epoch() == 2);
}

TEST_CASE("Stop requests never overwrite each other", "[core][should_stop]") {
  // EarlyStopping sees an improvement every epoch (so it never asks to stop); the other callback's
  // request must survive it (Lightning bug #6194 was the opposite).
  class LogDecreasing : public Callback {
   public:
    void on_train_epoch_end(Trainer& trainer, Module& module) override {
      module.log("metric", 100.0 - static_cast<double>(trainer.current_epoch()));
    }
  };
  callbacks::EarlyStoppingOptions early;
  early.monitor("metric");
  Trainer trainer(four_batches_no_val(),
                  {std::make_shared<StopFrom>(0, 3), std::make_shared<LogDecreasing>(),
                   std::make_shared<callbacks::EarlyStopping>(early)});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.should_stop());
  CHECK(trainer.current_epoch() == 1);
  CHECK(trainer.global_step() == 4);
}

TEST_CASE("max_steps stops in the middle of an epoch", "[core][should_stop]") {
  TrainerOptions options = four_batches_no_val();
  options.max_epochs().reset();
  options.max_steps(6);
  Trainer trainer(options);
  CHECK(trainer.max_epochs() == -1);  // Lightning: only max_steps set -> no epoch limit
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.global_step() == 6);
  CHECK(trainer.current_epoch() == 2);
  CHECK_FALSE(trainer.should_stop());
}

TEST_CASE("max_epochs defaults to 1000 when neither limit is set", "[core][should_stop]") {
  CHECK(Trainer().max_epochs() == 1000);
}

TEST_CASE("should_stop is reset at the start of each fit", "[core][should_stop]") {
  TrainerOptions one_epoch = four_batches_no_val();
  one_epoch.max_epochs(1);
  Trainer trainer(one_epoch);
  trainer.request_stop("before fit");
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.global_step() == 4);
  CHECK_FALSE(trainer.should_stop());
  CHECK(trainer.stop_reasons().empty());
}

TEST_CASE("Every stop request is published as a StopRequested event, with its reason and step",
          "[core][should_stop]") {
  Trainer trainer(four_batches_no_val(), {std::make_shared<StopFrom>(1, 2)});
  std::vector<events::StopRequested> requests;
  auto subscription = trainer.bus().subscribe<events::StopRequested>(
      [&](const events::StopRequested& event) { requests.push_back(event); });
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  // Asked at batch 2 of epoch 1 (global step 4 + 3), after which the epoch and the fit end.
  REQUIRE(requests.size() == 1);
  CHECK(requests[0].reason == "StopFrom");
  CHECK(requests[0].progress.epoch == 1);
  CHECK(requests[0].progress.global_step == 4 + 3);
}
