// EarlyStopping: Lightning's decision rules, state and errors.
#include "callbacks/early_stopping.h"

#include <cmath>
#include <limits>
#include <vector>

#include "tests/support/catch.h"

#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using callbacks::EarlyStopping;
using callbacks::EarlyStoppingOptions;
using callbacks::EarlyStoppingReason;
using Catch::Matchers::Contains;

namespace {

/// Logs `metric` = values[epoch] from on_train_epoch_end (the last value repeats).
class ScriptedMetric : public BoringModule {
 public:
  explicit ScriptedMetric(std::vector<double> values) : values_(std::move(values)) {}
  void on_train_epoch_end() override {
    const auto epoch = static_cast<size_t>(trainer().current_epoch());
    log("metric", values_[std::min(epoch, values_.size() - 1)]);
  }

 private:
  std::vector<double> values_;
};

struct Run {
  int64_t epochs;
  std::shared_ptr<EarlyStopping> callback;
};

Run fit_with(EarlyStoppingOptions options, std::vector<double> values,
             TrainerOptions trainer_options = testing::trainer_options()) {
  auto callback = std::make_shared<EarlyStopping>(options);
  trainer_options.max_epochs(trainer_options.max_epochs().value_or(20));
  trainer_options.limit_train_batches(1);
  trainer_options.limit_val_batches(0);
  Trainer trainer(trainer_options, {callback});
  ScriptedMetric module(std::move(values));
  RandomDataModule data;
  trainer.fit(module, data);
  return {trainer.current_epoch(), callback};
}

EarlyStoppingOptions watch(double min_delta = 0.0, int64_t patience = 3, std::string mode = "min") {
  EarlyStoppingOptions options;
  options.monitor("metric");
  options.min_delta(min_delta);
  options.patience(patience);
  options.mode(std::move(mode));
  return options;
}

}  // namespace

TEST_CASE("EarlyStopping stops after patience checks without improvement",
          "[callbacks][early_stopping]") {
  const Run run = fit_with(watch(), {5, 4, 3, 3.5, 3.2, 3.1, 1.0});
  // Best 3 at epoch 2; epochs 3, 4, 5 do not improve; the stop is requested at epoch 5.
  CHECK(run.epochs == 6);
  CHECK(run.callback->stopped_epoch() == 5);
  CHECK(run.callback->best_score() == 3.0);
  CHECK(run.callback->wait_count() == 3);
  CHECK(run.callback->stopping_reason() == EarlyStoppingReason::kPatienceExhausted);
  CHECK_THAT(run.callback->stopping_reason_message(),
             Contains("did not improve in the last 3 records. Best score: 3.000"));
}

TEST_CASE("EarlyStopping: an improvement smaller than min_delta does not count",
          "[callbacks][early_stopping]") {
  const Run run = fit_with(watch(0.5, 2), {5, 4.8, 4.6, 4.4});
  CHECK(run.epochs == 3);
  CHECK(run.callback->best_score() == 5.0);
}

TEST_CASE("EarlyStopping in mode max", "[callbacks][early_stopping]") {
  const Run run = fit_with(watch(0.0, 1, "max"), {0.5, 0.6, 0.7, 0.7});
  CHECK(run.epochs == 4);
  CHECK(run.callback->best_score() == 0.7);
}

TEST_CASE("EarlyStopping thresholds and non-finite values stop at once",
          "[callbacks][early_stopping]") {
  EarlyStoppingOptions stop_below = watch();
  stop_below.stopping_threshold(2.0);
  CHECK(fit_with(stop_below, {5, 3, 1.5, 1}).callback->stopping_reason() ==
        EarlyStoppingReason::kStoppingThreshold);
  CHECK(fit_with(stop_below, {5, 3, 1.5, 1}).epochs == 3);

  EarlyStoppingOptions diverge = watch();
  diverge.divergence_threshold(10.0);
  const Run diverged = fit_with(diverge, {5, 12});
  CHECK(diverged.epochs == 2);
  CHECK(diverged.callback->stopping_reason() == EarlyStoppingReason::kDivergenceThreshold);

  const Run nan = fit_with(watch(), {5, std::numeric_limits<double>::quiet_NaN()});
  CHECK(nan.epochs == 2);
  CHECK(nan.callback->stopping_reason() == EarlyStoppingReason::kNonFiniteMetric);
}

TEST_CASE("EarlyStopping respects min_epochs", "[callbacks][early_stopping]") {
  TrainerOptions options = testing::trainer_options();
  options.min_epochs(8);
  const Run run = fit_with(watch(0.0, 1), {1, 2}, options);
  CHECK(run.callback->stopped_epoch() >= 1);
  CHECK(run.epochs == 8);
}

TEST_CASE("EarlyStopping names the missing metric and what is available",
          "[callbacks][early_stopping]") {
  EarlyStoppingOptions options = watch();
  options.monitor("val_loss");
  CHECK_THROWS_WITH(
      fit_with(options, {1}),
      Contains("Early stopping conditioned on metric `val_loss` which is not available") &&
          Contains("use any of the following: `metric`"));
  options.strict(false);
  CHECK(fit_with(options, {1},
                 [] {
                   TrainerOptions o = testing::trainer_options();
                   o.max_epochs(3);
                   return o;
                 }())
            .epochs == 3);
}

TEST_CASE("EarlyStopping refuses bad options", "[callbacks][early_stopping]") {
  CHECK_THROWS_WITH(EarlyStopping(watch(0.0, 3, "median")),
                    Contains("`mode` can be \"min\" or \"max\", got \"median\""));
  CHECK_THROWS_WITH(EarlyStopping(EarlyStoppingOptions{}), Contains("`monitor` is empty"));
  CHECK_THROWS_WITH(EarlyStopping(watch(0.0, -1)), Contains("`patience` must be >= 0"));
}

TEST_CASE("EarlyStopping state survives state_dict/load_state_dict under Lightning's state_key",
          "[callbacks][early_stopping]") {
  const Run run = fit_with(watch(), {5, 4, 3, 3.5});
  EarlyStopping restored(watch());
  restored.load_state_dict(run.callback->state_dict());
  CHECK(restored.best_score() == run.callback->best_score());
  CHECK(restored.wait_count() == run.callback->wait_count());
  CHECK(restored.stopped_epoch() == run.callback->stopped_epoch());
  CHECK(restored.state_key() == "EarlyStopping{'monitor': 'metric', 'mode': 'min'}");
}
