// Module::log reductions and where the values land (Lightning's self.log semantics).
#include "tests/support/catch.h"

#include "core/trainer.h"
#include "events/all.h"
#include "tests/support/boring.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// Logs the batch index from every training and validation step, with the given options.
class IndexLogger : public BoringModule {
 public:
  explicit IndexLogger(LogOptions train_options = {}, LogOptions val_options = {})
      : train_options_(train_options), val_options_(val_options) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    log("a", static_cast<double>(batch_idx), train_options_);
    return BoringModule::training_step(batch, batch_idx);
  }
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    log("v", static_cast<double>(batch_idx), val_options_);
    return {};
  }

 private:
  LogOptions train_options_, val_options_;
};

TrainerOptions one_epoch(int64_t val_batches = 0) {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_val_batches(val_batches);
  options.num_sanity_val_steps(0);
  return options;
}

}  // namespace

TEST_CASE("on_step and on_epoch fork the names, the epoch value is a batch-size-weighted mean",
          "[core][log]") {
  Trainer trainer(one_epoch());
  IndexLogger module(LogOptions().on_step(true).on_epoch(true).prog_bar(true));
  RandomDataModule data(10, 4);  // batches of 4, 4 and 2 samples
  trainer.fit(module, data);

  const double epoch_mean = (0.0 * 4 + 1.0 * 4 + 2.0 * 2) / 10;
  CHECK(trainer.logged_metrics() == Metrics{{"a_epoch", epoch_mean}, {"a_step", 2.0}});
  CHECK(trainer.callback_metrics() ==
        Metrics{{"a", epoch_mean}, {"a_epoch", epoch_mean}, {"a_step", 2.0}});
  CHECK(trainer.progress_bar_metrics() == Metrics{{"a_epoch", epoch_mean}, {"a_step", 2.0}});
}

TEST_CASE("Defaults: training logs per step, validation logs epoch means", "[core][log]") {
  Trainer trainer(one_epoch(/*val_batches=*/3));
  IndexLogger module;
  RandomDataModule data(10, 4);
  trainer.fit(module, data);

  const double val_mean = (0.0 * 4 + 1.0 * 4 + 2.0 * 2) / 10;
  CHECK(trainer.logged_metrics() == Metrics{{"a", 2.0}, {"v", val_mean}});
  CHECK(trainer.callback_metrics() == Metrics{{"a", 2.0}, {"v", val_mean}});
  CHECK(trainer.progress_bar_metrics().empty());
}

TEST_CASE("validate and test return the epoch values they logged", "[core][log]") {
  Trainer trainer(testing::trainer_options());
  IndexLogger module;
  RandomDataModule data(10, 4);
  CHECK(trainer.validate(module, data) == Metrics{{"v", 0.8}});
  BoringModule boring;
  const Metrics tested = trainer.test(boring, data);
  REQUIRE(tested.count("test_loss") == 1);
  CHECK(tested.at("test_loss") > 0.0);
}

TEST_CASE("What the sanity check logs does not count", "[core][log]") {
  TrainerOptions options = one_epoch(2);
  options.num_sanity_val_steps(2);
  options.check_val_every_n_epoch(2);  // no validation in the single epoch
  Trainer trainer(options);
  IndexLogger module;
  RandomDataModule data(10, 4);
  trainer.fit(module, data);
  CHECK(trainer.callback_metrics().count("v") == 0);
  CHECK(trainer.callback_metrics().count("a") == 1);
}

TEST_CASE("log() where Lightning forbids it says which hook and where to log instead",
          "[core][log]") {
  class LogsInFitStart : public BoringModule {
    void on_fit_start() override { log("x", 1.0); }
  };
  class StepInEpochEnd : public BoringModule {
    void on_train_epoch_end() override { log("x", 1.0, LogOptions().on_step(true)); }
  };
  class Inconsistent : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      log("x", 1.0, LogOptions().on_step(batch_idx == 0).on_epoch(true));
      return BoringModule::training_step(batch, batch_idx);
    }
  };
  class LogsVector : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      log("x", layer->forward(batch.data));
      return BoringModule::training_step(batch, batch_idx);
    }
  };
  Trainer trainer(one_epoch());
  RandomDataModule data(8, 4);
  LogsInFitStart fit_start;
  CHECK_THROWS_WITH(trainer.fit(fit_start, data),
                    Contains("log(\"x\") was called from `fit_start`") &&
                        Contains("where logging is not supported"));
  StepInEpochEnd epoch_end;
  CHECK_THROWS_WITH(trainer.fit(epoch_end, data), Contains("on_step=true) in `train_epoch_end`"));
  Inconsistent inconsistent;
  CHECK_THROWS_WITH(trainer.fit(inconsistent, data),
                    Contains("log each name with one set of options"));
  LogsVector vector;
  CHECK_THROWS_WITH(trainer.fit(vector, data),
                    Contains("expected a one-element tensor, got shape [4, 2]"));
  BoringModule detached;
  CHECK_THROWS_WITH(detached.log("x", 1.0), Contains("is not attached to a Trainer"));
}

TEST_CASE("TrainBatchEnd carries the loss and the values logged in that batch",
          "[core][log][events]") {
  Trainer trainer(one_epoch());
  std::vector<events::TrainBatchEnd> seen;
  events::Subscription subscription = trainer.bus().subscribe<events::TrainBatchEnd>(
      [&](const events::TrainBatchEnd& e) { seen.push_back(e); });
  IndexLogger module(LogOptions().on_step(true).on_epoch(false));
  RandomDataModule data(8, 4);
  trainer.fit(module, data);
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].metrics == Metrics{{"a", 1.0}});
  CHECK(seen[1].batch.batch_idx == 1);
  CHECK(seen[1].batch.batch_size == 4);
  CHECK(seen[1].progress.global_step == 2);
  CHECK(std::isfinite(seen[1].loss));
}
