// An exception in a step or hook: on_exception on every callback, then it leaves fit unchanged.
#include <stdexcept>

#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include "tests/support/catch.h"

#include "core/trainer.h"
#include "events/all.h"
#include "tests/support/recording.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace {

struct TrainingFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class FailingModule : public RecordingModule {
 public:
  using RecordingModule::RecordingModule;
  StepOutput training_step(const Batch& b, int64_t i) override {
    if (i == 1) throw TrainingFailure("bad batch 1");
    return RecordingModule::training_step(b, i);
  }
};

class ThrowingOnException : public Callback {
 public:
  void on_exception(Trainer&, Module&, const std::exception&) override {
    throw std::logic_error("handler broke");
  }
};

class FailAtEpochEnd : public Callback {
 public:
  void on_train_epoch_end(Trainer&, Module&) override {
    throw std::out_of_range("callback failed");
  }
};

TrainerOptions small() {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_train_batches(3);
  options.limit_val_batches(0);
  return options;
}

}  // namespace

TEST_CASE(
    "An exception in training_step fires on_exception on every callback, then leaves fit unchanged",
    "[core][exception]") {
  auto first = std::make_shared<HookLog>();
  auto second = std::make_shared<HookLog>();
  Trainer trainer(
      small(), {std::make_shared<RecordingCallback>(first), std::make_shared<ThrowingOnException>(),
                std::make_shared<RecordingCallback>(second, "second")});
  std::vector<events::Exception> published;
  events::Subscription subscription = trainer.bus().subscribe<events::Exception>(
      [&](const events::Exception& e) { published.push_back(e); });
  auto module_log = std::make_shared<HookLog>();
  FailingModule module(module_log);
  RandomDataModule data;

  CHECK_THROWS_MATCHES(trainer.fit(module, data), TrainingFailure,
                       Catch::Matchers::Message("bad batch 1"));

  CHECK(first->back() == "Callback.on_exception:bad batch 1");
  CHECK(second->back() ==
        "Callback.on_exception:bad batch 1");  // reached despite the handler in between
  REQUIRE(published.size() == 1);
  CHECK(published[0].type == "(anonymous namespace)::TrainingFailure");
  CHECK(published[0].message == "bad batch 1");
  CHECK(published[0].progress.global_step == 1);
  CHECK(trainer.status() == TrainerStatus::kInterrupted);
  // As Lightning: no teardown, no on_fit_end on the failure path.
  CHECK(std::find(first->begin(), first->end(), "Callback.teardown:fit") == first->end());
  CHECK(std::find(module_log->begin(), module_log->end(), "teardown:fit") == module_log->end());
  CHECK_FALSE(module.has_trainer());
}

TEST_CASE("An exception in a callback hook takes the same path", "[core][exception]") {
  auto log = std::make_shared<HookLog>();
  Trainer trainer(small(),
                  {std::make_shared<FailAtEpochEnd>(), std::make_shared<RecordingCallback>(log)});
  BoringModule module;
  RandomDataModule data;
  CHECK_THROWS_AS(trainer.fit(module, data), std::out_of_range);
  CHECK(log->back() == "Callback.on_exception:callback failed");
}

TEST_CASE("After a failed fit the same trainer can fit again", "[core][exception]") {
  Trainer trainer(small());
  auto log = std::make_shared<HookLog>();
  FailingModule failing(log);
  RandomDataModule data;
  CHECK_THROWS_AS(trainer.fit(failing, data), TrainingFailure);
  BoringModule module;
  trainer.fit(module, data);
  CHECK(trainer.status() == TrainerStatus::kFinished);
  CHECK(trainer.global_step() == 3);
}

TEST_CASE("Bad input from the module gets an error that says what to fix", "[core][exception]") {
  class NoOptimizer : public BoringModule {
    OptimizerConfig configure_optimizers() override { return {}; }
  };
  class VectorLoss : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t) override {
      return layer->forward(batch.data);
    }
  };
  class NoValidationStep : public Module {
    torch::nn::Linear layer{register_module("layer", torch::nn::Linear(32, 2))};
    StepOutput training_step(const Batch& batch, int64_t) override {
      return layer->forward(batch.data).sum();
    }
    OptimizerConfig configure_optimizers() override {
      return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    }
  };
  Trainer trainer(small());
  RandomDataModule data;
  NoOptimizer no_optimizer;
  CHECK_THROWS_WITH(trainer.fit(no_optimizer, data),
                    Catch::Contains("configure_optimizers() returned no optimizer"));
  VectorLoss vector_loss;
  CHECK_THROWS_WITH(trainer.fit(vector_loss, data),
                    Catch::Contains("must return a scalar loss, got shape [1, 2]"));
  Trainer validating(testing::trainer_options());
  NoValidationStep no_validation;
  CHECK_THROWS_WITH(validating.validate(no_validation, data),
                    Catch::Contains("has no validation_step"));
  RandomDataModule no_val;
  no_val.has_val = false;
  CHECK_THROWS_WITH(validating.validate(no_validation, no_val),
                    Catch::Contains("val_dataloader() returned null"));
}
