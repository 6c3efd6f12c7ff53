// Timer and Trainer max_time: Lightning's duration formats, when the limit is checked (after a
// step, at an epoch end, at fit start after a resume), elapsed time across a resume, stage times.
#include "callbacks/timer.h"

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/catch.h"

#include "callbacks/lambda_callback.h"
#include "core/default_callbacks.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using callbacks::RunningStage;
using callbacks::Timer;
using callbacks::TimerOptions;
using Catch::Matchers::Contains;

namespace {

/// Each training step lasts at least `step_time` (a busy wait on the steady clock), so that a time
/// limit is reached after a known least number of steps.
class SlowSteps : public BoringModule {
 public:
  explicit SlowSteps(std::chrono::milliseconds step_time) : step_time_(step_time) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    const auto until = std::chrono::steady_clock::now() + step_time_;
    while (std::chrono::steady_clock::now() < until) {
    }
    return BoringModule::training_step(batch, batch_idx);
  }

 private:
  std::chrono::milliseconds step_time_;
};

TrainerOptions quiet_options(int64_t epochs) {
  return testing::trainer_options().max_epochs(epochs).num_sanity_val_steps(0).limit_val_batches(0);
}

std::vector<std::shared_ptr<Timer>> timers_of(const Trainer& trainer) {
  std::vector<std::shared_ptr<Timer>> timers;
  for (const auto& callback : trainer.callbacks()) {
    if (auto timer = std::dynamic_pointer_cast<Timer>(callback)) timers.push_back(timer);
  }
  return timers;
}

}  // namespace

TEST_CASE("Timer refuses an interval other than step or epoch", "[callbacks][timer]") {
  CHECK_THROWS_WITH(Timer(TimerOptions().interval("batch")),
                    Contains("'batch'") && Contains("step and epoch"));
}

TEST_CASE("Timer with interval step stops after the batch that reaches the limit",
          "[callbacks][timer]") {
  auto timer = std::make_shared<Timer>(
      TimerOptions().duration(std::chrono::milliseconds(60)).verbose(false));
  SlowSteps module(std::chrono::milliseconds(20));
  RandomDataModule data(64, 1);
  Trainer trainer(quiet_options(5), {timer});
  trainer.fit(module, data);

  // Each step takes >= 20 ms, so 60 ms cannot be reached before the third batch ends; it stops at
  // the first batch end past the limit, well before the 320 batches of 5 epochs.
  CHECK(trainer.global_step() >= 3);
  CHECK(trainer.global_step() < 64);
  REQUIRE(trainer.stop_reasons().size() == 1);
  CHECK_THAT(trainer.stop_reasons()[0], Contains("Time limit reached. Elapsed time is 0:00:00"));
  CHECK(timer->time_elapsed() >= 0.06);
  CHECK(*timer->time_remaining() <= 0);
  CHECK(timer->end_time().has_value());
}

TEST_CASE("Timer with interval epoch stops only at an epoch end", "[callbacks][timer]") {
  auto timer = std::make_shared<Timer>(
      TimerOptions().duration(std::chrono::milliseconds(30)).interval("epoch").verbose(false));
  SlowSteps module(std::chrono::milliseconds(20));
  RandomDataModule data(4, 1);
  Trainer trainer(quiet_options(5), {timer});
  trainer.fit(module, data);
  // Past the limit after 2 batches, but the first epoch's 4 batches all run.
  CHECK(trainer.global_step() == 4);
  CHECK(trainer.current_epoch() == 1);
}

TEST_CASE("Trainer max_time adds a step Timer unless it is given one", "[callbacks][timer]") {
  {
    Trainer trainer(quiet_options(5).max_time("00:00:00:00"));
    const auto timers = timers_of(trainer);
    REQUIRE(timers.size() == 1);
    CHECK(timers[0]->options().duration()->seconds() == 0);
    CHECK(timers[0]->options().interval() == "step");

    // A limit of 0 is used up when fit starts: no batch runs.
    BoringModule module;
    RandomDataModule data(8, 1);
    trainer.fit(module, data);
    CHECK(trainer.global_step() == 0);
    CHECK_THAT(trainer.stop_reasons().at(0), Contains("Time limit reached"));
  }
  {
    auto own = std::make_shared<Timer>(TimerOptions().interval("epoch"));
    Trainer trainer(quiet_options(5).max_time(std::chrono::hours(1)), {own});
    const auto timers = timers_of(trainer);
    REQUIRE(timers.size() == 1);
    CHECK(timers[0] == own);
  }
}

TEST_CASE("max_time respects min_epochs", "[callbacks][timer]") {
  Trainer trainer(quiet_options(5).min_epochs(2).max_time(std::chrono::seconds(0)));
  BoringModule module;
  RandomDataModule data(4, 1);
  trainer.fit(module, data);
  CHECK(trainer.global_step() == 8);
  CHECK(trainer.stop_reasons().size() == 1);  // asked once, honoured after min_epochs
}

TEST_CASE("Timer's elapsed training time survives a resume", "[callbacks][timer]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "first.ckpt").string();
  double first_elapsed = 0;
  {
    auto timer = std::make_shared<Timer>();
    auto saver = std::make_shared<callbacks::LambdaCallback>(
        callbacks::LambdaHooks().on_train_epoch_end([&](Trainer& trainer, Module&) {
          first_elapsed = timer->time_elapsed();  // the checkpoint holds at least this
          trainer.save_checkpoint(checkpoint);
        }));
    SlowSteps module(std::chrono::milliseconds(10));
    RandomDataModule data(4, 1);
    Trainer trainer(quiet_options(1), {timer, saver});
    trainer.fit(module, data);
    CHECK(first_elapsed >= 0.04);
    const StateDict state = timer->state_dict();
    CHECK(state.dict_at("time_elapsed").at("train").toDouble() == timer->time_elapsed());
    CHECK(state.dict_at("time_elapsed").contains("validate"));
  }
  SECTION("the resumed run counts on from there") {
    auto timer = std::make_shared<Timer>();
    BoringModule module;
    RandomDataModule data(4, 1);
    Trainer trainer(quiet_options(2), {timer});
    trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
    CHECK(trainer.global_step() == 8);
    CHECK(timer->time_elapsed() >= first_elapsed);
  }
  SECTION("a resumed run whose time is used up stops before its first batch") {
    auto timer = std::make_shared<Timer>(
        TimerOptions().duration(std::chrono::duration<double>(first_elapsed)).verbose(false));
    BoringModule module;
    RandomDataModule data(4, 1);
    Trainer trainer(quiet_options(2), {timer});
    trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
    CHECK(trainer.global_step() == 4);  // what the checkpoint had
    CHECK_THAT(trainer.stop_reasons().at(0), Contains("Time limit reached"));
  }
}

TEST_CASE("Timer measures validation, the sanity check and test apart", "[callbacks][timer]") {
  auto timer = std::make_shared<Timer>();
  BoringModule module;
  RandomDataModule data(8, 1);
  Trainer trainer(testing::trainer_options().max_epochs(1), {timer});
  CHECK_FALSE(timer->start_time(RunningStage::kValidating).has_value());
  CHECK(timer->time_elapsed(RunningStage::kTesting) == 0);
  CHECK_FALSE(timer->time_remaining().has_value());
  trainer.fit(module, data);
  trainer.test(module, data);
  for (const RunningStage stage :
       {RunningStage::kTraining, RunningStage::kValidating, RunningStage::kTesting}) {
    INFO(callbacks::to_string(stage));
    REQUIRE(timer->start_time(stage).has_value());
    REQUIRE(timer->end_time(stage).has_value());
    CHECK(*timer->end_time(stage) >= *timer->start_time(stage));
    CHECK(timer->time_elapsed(stage) == *timer->end_time(stage) - *timer->start_time(stage));
  }
  // As Lightning's, times are kept per hook: the sanity check counts as validation.
  CHECK_FALSE(timer->start_time(RunningStage::kSanityChecking).has_value());
  CHECK(timer->time_elapsed(RunningStage::kSanityChecking) == 0);
  CHECK(*timer->start_time(RunningStage::kValidating) >
        *timer->start_time(RunningStage::kTraining));
  CHECK_FALSE(timer->start_time(RunningStage::kPredicting).has_value());
}

TEST_CASE("A second fit with the same Timer starts its clock from 0", "[callbacks][timer]") {
  Trainer trainer(quiet_options(1).max_time(std::chrono::milliseconds(30)));
  auto timer = timers_of(trainer).at(0);
  SlowSteps module(std::chrono::milliseconds(20));
  RandomDataModule data(8, 1);
  trainer.fit(module, data);  // stopped by the limit
  CHECK(trainer.global_step() < 8);
  trainer.fit(module, data);  // a new fit: a new budget, not the first fit's time
  CHECK(trainer.global_step() >= 2);
  CHECK(trainer.stop_reasons().size() == 1);
  CHECK_THAT(trainer.stop_reasons()[0], Contains("Timer: Time limit reached"));
}

TEST_CASE("A failed run's Timer stops where it failed, and a resume counts on from the checkpoint",
          "[callbacks][timer]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "epoch0.ckpt").string();
  double saved_elapsed = 0;
  auto timer = std::make_shared<Timer>(TimerOptions().duration(std::chrono::hours(1)));
  auto script = std::make_shared<callbacks::LambdaCallback>(
      callbacks::LambdaHooks()
          .on_train_epoch_end([&](Trainer& trainer, Module&) {
            if (trainer.current_epoch() != 0) return;
            saved_elapsed = timer->time_elapsed();
            trainer.save_checkpoint(checkpoint);
          })
          .on_train_batch_end([crashed = false](Trainer& trainer, Module&, const StepOutput&,
                                                const Batch&, int64_t batch_idx) mutable {
            if (crashed || trainer.current_epoch() != 1 || batch_idx != 1) return;
            crashed = true;  // once: the resumed run goes through
            throw std::runtime_error("crash");
          }));
  SlowSteps module(std::chrono::milliseconds(5));
  RandomDataModule data(4, 1);
  Trainer trainer(quiet_options(2), {timer, script});
  CHECK_THROWS_WITH(trainer.fit(module, data), "crash");
  const double at_failure = timer->time_elapsed();
  CHECK(timer->end_time().has_value());
  CHECK(timer->time_elapsed() == at_failure);  // stopped: does not grow while nobody trains

  // Resuming on the same Trainer: the checkpoint's time, plus this run's, not the failed run's.
  trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
  CHECK(trainer.stop_reasons().empty());  // an hour is far from used up
  const double this_run = *timer->end_time() - *timer->start_time();
  CHECK(timer->time_elapsed() == Approx(saved_elapsed + this_run).margin(0.02));
}

TEST_CASE("max_time without the callbacks' installer names what to link", "[callbacks][timer]") {
  const DefaultCallbacksBuilder installed = installed_default_callbacks();
  REQUIRE(installed != nullptr);  // linking trainbus::callbacks installed it
  install_default_callbacks(nullptr);
  CHECK_THROWS_WITH(Trainer(testing::trainer_options().max_time("00:01:00:00")),
                    Contains("`max_time`") && Contains("trainbus::callbacks") &&
                        Contains("--undefined=trainbus_callbacks_defaults_anchor"));
  CHECK_NOTHROW(Trainer(testing::trainer_options()));
  install_default_callbacks(installed);
  CHECK(timers_of(Trainer(testing::trainer_options().max_time("00:01:00:00"))).size() == 1);
}
