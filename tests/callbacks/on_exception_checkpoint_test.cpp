// OnExceptionCheckpoint: a checkpoint of the moment fit failed, removed after a run that succeeds.
#include <filesystem>
#include <stdexcept>

#include "callbacks/on_exception_checkpoint.h"
#include "checkpoint/format.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using trainbus::testing::TempDir;
namespace fs = std::filesystem;

namespace {

TrainerOptions short_fit_options(int64_t epochs) {
  return testing::trainer_options()
      .enable_checkpointing(true)
      .max_epochs(epochs)
      .limit_train_batches(4)
      .limit_val_batches(1)
      .num_sanity_val_steps(0);
}

}  // namespace

TEST_CASE("OnExceptionCheckpoint saves when fit fails and is removed after a run that succeeds",
          "[callbacks][checkpoint]") {
  TempDir dir;
  class FailAtStep : public Callback {
   public:
    void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                            int64_t) override {
      if (trainer.global_step() == 3) throw std::runtime_error("diverged");
    }
  };
  auto on_exception = std::make_shared<OnExceptionCheckpoint>(dir.file("ckpts"));
  Trainer failing(short_fit_options(2), {std::make_shared<FailAtStep>(), on_exception});
  testing::BoringModule module;
  testing::RandomDataModule data(64, 4);
  CHECK_THROWS_WITH(failing.fit(module, data), "diverged");
  REQUIRE(fs::exists(on_exception->checkpoint_path()));
  CHECK(checkpoint::read_checkpoint(on_exception->checkpoint_path()).data.global_step == 3);

  Trainer succeeding(short_fit_options(1), {on_exception});
  testing::BoringModule other;
  succeeding.fit(other, data, FitOptions().ckpt_path(on_exception->checkpoint_path()));
  CHECK_FALSE(fs::exists(on_exception->checkpoint_path()));
}
