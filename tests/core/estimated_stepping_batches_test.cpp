// Trainer::estimated_stepping_batches: the optimizer steps a fit will take, known from setup on,
// so that configure_optimizers can size a warm-up or one-cycle schedule (Lightning's
// trainer.estimated_stepping_batches).
#include <cstdint>
#include <memory>
#include <optional>

#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace {

/// Records estimated_stepping_batches() in setup, configure_optimizers and on_train_start.
class StepsProbe : public BoringModule {
 public:
  void setup(Stage) override { in_setup = trainer().estimated_stepping_batches(); }
  OptimizerConfig configure_optimizers() override {
    in_configure_optimizers = trainer().estimated_stepping_batches();
    return BoringModule::configure_optimizers();
  }
  void on_train_start() override { in_train_start = trainer().estimated_stepping_batches(); }

  std::optional<int64_t> in_setup, in_configure_optimizers, in_train_start;
};

/// Counts the calls to train_dataloader().
class CountingData : public RandomDataModule {
 public:
  using RandomDataModule::RandomDataModule;
  std::shared_ptr<DataLoader> train_dataloader() override {
    ++train_dataloader_calls;
    return RandomDataModule::train_dataloader();
  }
  int train_dataloader_calls = 0;
};

struct StepsCase {
  const char* name;
  TrainerOptions options = testing::trainer_options();
  int64_t expected;  // Lightning's value
};

}  // namespace

TEST_CASE(
    "estimated_stepping_batches is Lightning's in setup, configure_optimizers and on_train_start",
    "[core][trainer]") {
  // Lightning's Trainer.estimated_stepping_batches (trainer/trainer.py): during fit it loads the
  // train dataloader when it has not been loaded yet ("Loading `train_dataloader` to estimate
  // number of stepping batches."), then returns
  //   min(ceil(num_training_batches / accumulate_grad_batches) * max(max_epochs, 1), max_steps)
  // (max_steps only when != -1), or max_steps when max_epochs == -1. 64 batches here.
  const StepsCase cases[] = {
      {"3 epochs of 64 batches", testing::trainer_options().max_epochs(3).limit_val_batches(0),
       192},
      {"accumulation 2 over limit_train_batches=0.5",
       testing::trainer_options()
           .max_epochs(3)
           .limit_train_batches(0.5)
           .accumulate_grad_batches(2)
           .limit_val_batches(0),
       48},
      {"an odd number of batches: the last one steps",
       testing::trainer_options()
           .max_epochs(2)
           .limit_train_batches(5)
           .accumulate_grad_batches(2)
           .limit_val_batches(0),
       6},
      {"max_steps caps it",
       testing::trainer_options().max_epochs(3).max_steps(40).limit_val_batches(0), 40},
      {"max_epochs=-1 gives max_steps",
       testing::trainer_options().max_epochs(-1).max_steps(7).limit_val_batches(0), 7},
  };
  for (const StepsCase& c : cases) {
    DYNAMIC_SECTION(c.name) {
      Trainer trainer(c.options);
      StepsProbe module;
      CountingData data;
      trainer.fit(module, data);
      CHECK(module.in_setup == c.expected);
      CHECK(module.in_configure_optimizers == c.expected);
      CHECK(module.in_train_start == c.expected);
      // As Lightning: the loader loaded for the estimate is the one the fit trains on.
      CHECK(data.train_dataloader_calls == 1);
    }
  }
}

TEST_CASE("estimated_stepping_batches counts one epoch when max_epochs is 0, as Lightning",
          "[core][trainer]") {
  // Lightning: `math.ceil(total_batches / accumulate_grad_batches) * max(self.max_epochs, 1)`.
  Trainer trainer(
      testing::trainer_options().max_epochs(0).limit_train_batches(5).limit_val_batches(0));
  StepsProbe module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(module.in_configure_optimizers == 5);
  CHECK(trainer.global_step() == 0);
}
