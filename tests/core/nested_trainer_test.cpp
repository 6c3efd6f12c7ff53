// A Trainer run inside another's fit, as the tuner callbacks do at on_fit_start: the module goes
// back to the outer trainer afterwards, and the outer fit can take its loaders again
// (Trainer::reload_dataloaders) when the data module's batch size changed.
#include <memory>
#include <vector>

#include "tests/support/catch.h"

#include "core/trainer.h"
#include "data/batch.h"
#include "tests/support/boring.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// Logs "train_loss" in every step: log() needs the module's trainer.
class LoggingBoringModule : public BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    at::Tensor value = loss(batch);
    log("train_loss", value);
    return value;
  }
};

/// Fits the module with a Trainer of its own at on_fit_start, then notes who the module's
/// trainer is.
class NestedFitAtFitStart : public Callback {
 public:
  void on_fit_start(Trainer& trainer, Module& module) override {
    Trainer inner(
        testing::trainer_options().max_steps(2).limit_val_batches(0).enable_model_summary(false));
    RandomDataModule inner_data(8, 4);
    inner.fit(module, inner_data);
    inner_steps = inner.global_step();
    module_kept_outer_trainer = module.has_trainer() && &module.trainer() == &trainer;
  }
  int64_t inner_steps = 0;
  bool module_kept_outer_trainer = false;
};

/// Changes the data module's batch size at on_fit_start and reloads the loaders; records the
/// batch sizes the fit then trains on.
class ResizeAtFitStart : public Callback {
 public:
  explicit ResizeAtFitStart(int64_t batch_size) : batch_size_(batch_size) {}
  void on_fit_start(Trainer& trainer, Module&) override {
    REQUIRE(trainer.datamodule()->set_batch_arg("batch_size", batch_size_));
    trainer.reload_dataloaders();
    batches_after_reload = trainer.num_training_batches();
  }
  void on_train_batch_start(Trainer& trainer, Module&, const Batch& batch, int64_t) override {
    sizes.push_back(data::batch_size_of(batch));
    if (reload_in_epoch) trainer.reload_dataloaders();
  }
  int64_t batches_after_reload = 0;
  bool reload_in_epoch = false;
  std::vector<int64_t> sizes;

 private:
  int64_t batch_size_;
};

}  // namespace

TEST_CASE("A Trainer fitting the module inside another's on_fit_start hands it back",
          "[core][nested_trainer]") {
  auto nested = std::make_shared<NestedFitAtFitStart>();
  Trainer trainer(
      testing::trainer_options().max_epochs(1).limit_train_batches(3).limit_val_batches(0),
      {nested});
  LoggingBoringModule module;
  RandomDataModule data(16, 4);
  // Before the fix the inner fit left the module without a trainer, and the outer fit's first
  // log() threw "not attached to a Trainer".
  trainer.fit(module, data);
  CHECK(nested->inner_steps == 2);
  CHECK(nested->module_kept_outer_trainer);
  CHECK(trainer.global_step() == 3);
  CHECK(trainer.callback_metrics().count("train_loss") == 1);
  CHECK_FALSE(module.has_trainer());  // detached from the outer one at the end, as before
}

TEST_CASE("reload_dataloaders at on_fit_start trains on the data module's new batch size",
          "[core][nested_trainer]") {
  auto resize = std::make_shared<ResizeAtFitStart>(8);
  Trainer trainer(testing::trainer_options().max_epochs(1).limit_val_batches(0), {resize});
  BoringModule module;
  RandomDataModule data(32, 2);
  trainer.fit(module, data);
  CHECK(resize->batches_after_reload == 4);  // 32 samples in batches of 8, not 16 of 2
  CHECK(resize->sizes == std::vector<int64_t>{8, 8, 8, 8});
  CHECK(trainer.global_step() == 4);

  SECTION("inside an epoch it is refused, naming when it may be called") {
    auto in_epoch = std::make_shared<ResizeAtFitStart>(4);
    in_epoch->reload_in_epoch = true;
    Trainer refusing(testing::trainer_options().max_epochs(1).limit_val_batches(0), {in_epoch});
    CHECK_THROWS_WITH(refusing.fit(module, data), Contains("reload_dataloaders"));
  }
  SECTION("outside a fit it is refused") {
    Trainer idle(testing::trainer_options());
    CHECK_THROWS_WITH(idle.reload_dataloaders(), Contains("reload_dataloaders"));
  }
}
