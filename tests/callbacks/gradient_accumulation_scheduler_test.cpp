// GradientAccumulationScheduler: Lightning's 0-based schedule, the steps it gives per epoch (also
// after a resume), and its errors.
#include "callbacks/gradient_accumulation_scheduler.h"

#include <map>
#include <memory>
#include <vector>

#include "tests/support/catch.h"

#include "callbacks/lambda_callback.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using callbacks::GradientAccumulationScheduler;
using callbacks::LambdaCallback;
using callbacks::LambdaHooks;
using Catch::Matchers::Contains;

namespace {

TrainerOptions options_for(int64_t epochs) {
  return testing::trainer_options().max_epochs(epochs).num_sanity_val_steps(0).limit_val_batches(0);
}

/// Notes the trainer's accumulate_grad_batches and global_step at every epoch start. Listed after
/// the scheduler, so it sees what the scheduler set.
std::shared_ptr<LambdaCallback> epoch_probe(std::vector<int64_t>& factors,
                                            std::vector<int64_t>& steps) {
  return std::make_shared<LambdaCallback>(
      LambdaHooks().on_train_epoch_start([&](Trainer& trainer, Module&) {
        factors.push_back(trainer.accumulate_grad_batches());
        steps.push_back(trainer.global_step());
      }));
}

}  // namespace

TEST_CASE("GradientAccumulationScheduler: epochs are 0-based, epoch 0 defaults to 1",
          "[callbacks][gradient_accumulation]") {
  GradientAccumulationScheduler scheduler({{4, 2}, {6, 8}});
  CHECK(scheduler.scheduling() == std::map<int64_t, int64_t>{{0, 1}, {4, 2}, {6, 8}});
  CHECK(scheduler.accumulate_grad_batches(0) == 1);
  CHECK(scheduler.accumulate_grad_batches(3) == 1);
  CHECK(scheduler.accumulate_grad_batches(4) == 2);
  CHECK(scheduler.accumulate_grad_batches(5) == 2);
  CHECK(scheduler.accumulate_grad_batches(100) == 8);
  CHECK(scheduler.going_to_accumulate_grad_batches());
  CHECK_FALSE(GradientAccumulationScheduler(std::map<int64_t, int64_t>{{0, 1}})
                  .going_to_accumulate_grad_batches());
  CHECK(GradientAccumulationScheduler(std::map<int64_t, int64_t>{{0, 3}})
            .accumulate_grad_batches(0) == 3);
}

TEST_CASE("GradientAccumulationScheduler changes the optimizer steps per epoch",
          "[callbacks][gradient_accumulation]") {
  std::vector<int64_t> factors, steps;
  auto scheduler =
      std::make_shared<GradientAccumulationScheduler>(std::map<int64_t, int64_t>{{1, 2}, {2, 4}});
  BoringModule module;
  RandomDataModule data(8, 1);
  Trainer trainer(options_for(3), {scheduler, epoch_probe(factors, steps)});
  trainer.fit(module, data);
  CHECK(factors == std::vector<int64_t>{1, 2, 4});
  CHECK(steps == std::vector<int64_t>{0, 8, 12});
  CHECK(trainer.global_step() == 8 + 4 + 2);
}

TEST_CASE("GradientAccumulationScheduler applies its schedule to a resumed run",
          "[callbacks][gradient_accumulation]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "epoch0.ckpt").string();
  const std::map<int64_t, int64_t> schedule{{1, 2}};
  {
    BoringModule module;
    RandomDataModule data(8, 1);
    auto saver = std::make_shared<LambdaCallback>(LambdaHooks().on_train_epoch_end(
        [&](Trainer& trainer, Module&) { trainer.save_checkpoint(checkpoint); }));
    Trainer trainer(options_for(1),
                    {std::make_shared<GradientAccumulationScheduler>(schedule), saver});
    trainer.fit(module, data);
  }
  std::vector<int64_t> factors, steps;
  BoringModule module;
  RandomDataModule data(8, 1);
  Trainer trainer(options_for(3), {std::make_shared<GradientAccumulationScheduler>(schedule),
                                   epoch_probe(factors, steps)});
  trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
  CHECK(factors == std::vector<int64_t>{2, 2});
  CHECK(trainer.global_step() == 8 + 4 + 4);
}

TEST_CASE("GradientAccumulationScheduler refuses bad schedules and a Trainer-level factor",
          "[callbacks][gradient_accumulation]") {
  CHECK_THROWS_WITH(GradientAccumulationScheduler(std::map<int64_t, int64_t>{}),
                    Contains("scheduling is empty"));
  CHECK_THROWS_WITH(GradientAccumulationScheduler(std::map<int64_t, int64_t>{{-1, 2}}),
                    Contains("0-based") && Contains("{-1: 2}"));
  CHECK_THROWS_WITH(GradientAccumulationScheduler({{0, 1}, {3, 0}}),
                    Contains("factor must be >= 1") && Contains("{0: 1, 3: 0}"));

  BoringModule module;
  RandomDataModule data(8, 1);
  Trainer trainer(
      options_for(1).accumulate_grad_batches(2),
      {std::make_shared<GradientAccumulationScheduler>(std::map<int64_t, int64_t>{{1, 4}})});
  CHECK_THROWS_WITH(trainer.fit(module, data), Contains("`accumulate_grad_batches` (2)") &&
                                                   Contains("GradientAccumulationScheduler"));
}
