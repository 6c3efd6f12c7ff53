// BatchSizeFinder in a real fit: it searches at on_fit_start, before every other callback, the
// fit then trains with the size found, and the module and optimizer the fit continues with are as
// they were; a data module it cannot resize and bad options are refused by name.
#include "callbacks/batch_size_finder.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/optim/sgd.h>

#include "callbacks/callback_spec.h"
#include "core/trainer.h"
#include "data/batch.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// Runs out of memory (c10::OutOfMemoryError, as CUDA's allocator) on batches above `capacity`.
class FitsUpToModule : public BoringModule {
 public:
  explicit FitsUpToModule(int64_t capacity) : capacity_(capacity) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    TORCH_CHECK_WITH(OutOfMemoryError, data::batch_size_of(batch) <= capacity_,
                     "CUDA out of memory. Tried to allocate 2.00 GiB");
    return BoringModule::training_step(batch, batch_idx);
  }

 private:
  int64_t capacity_;
};

/// What the fit looks like after the finder: the weights and optimizer at on_fit_start, and the
/// batch sizes it trains on.
class FitObserver : public Callback {
 public:
  void on_fit_start(Trainer& trainer, Module& module) override {
    for (const auto& parameter : module.parameters()) weights.push_back(parameter.detach().clone());
    const auto& optimizer = *trainer.optimizers().at(0);
    lr = optimizer.param_groups().at(0).options().get_lr();
    optimizer_state_entries = optimizer.state().size();
    training_batches = trainer.num_training_batches();
  }
  void on_train_batch_start(Trainer&, Module&, const Batch& batch, int64_t) override {
    sizes.push_back(data::batch_size_of(batch));
  }
  std::vector<at::Tensor> weights;
  double lr = 0;
  std::size_t optimizer_state_entries = 1;
  int64_t training_batches = 0;
  std::vector<int64_t> sizes;
};

}  // namespace

TEST_CASE("BatchSizeFinder finds the size at fit start and the fit trains with it",
          "[callbacks][batch_size_finder]") {
  torch::manual_seed(5);
  FitsUpToModule module(20);
  std::vector<at::Tensor> initial;
  for (const auto& parameter : module.parameters()) initial.push_back(parameter.detach().clone());
  RandomDataModule data(64, 1);
  auto observer = std::make_shared<FitObserver>();
  auto finder = std::make_shared<BatchSizeFinder>(
      tuner::BatchSizeFinderOptions().mode(tuner::BatchSizeMode::kBinsearch).margin(0));
  CHECK(finder->optimal_batch_size() == 2);  // Lightning: init_val until it ran
  // Listed after the observer, run before it: a tuner callback comes first.
  Trainer trainer(testing::trainer_options().max_epochs(1).limit_val_batches(0),
                  {observer, finder});
  trainer.fit(module, data);

  CHECK(finder->optimal_batch_size() == 20);
  REQUIRE(finder->result().has_value());
  CHECK(finder->result()->trials.size() == 9);  // 2 4 8 16 32 24 20 22 21
  CHECK(data.batch_arg("batch_size") == 20);
  // The fit continued from the weights it had before the trials, bit for bit, with its own
  // optimizer untouched (SGD lr 0.1, no state).
  REQUIRE(observer->weights.size() == initial.size());
  for (std::size_t i = 0; i < initial.size(); ++i) {
    CHECK(torch::equal(observer->weights[i], initial[i]));
  }
  CHECK(observer->lr == 0.1);
  CHECK(observer->optimizer_state_entries == 0);
  // 64 samples in batches of 20.
  CHECK(observer->training_batches == 4);
  CHECK(observer->sizes == std::vector<int64_t>{20, 20, 20, 4});
  CHECK(trainer.global_step() == 4);
}

TEST_CASE("BatchSizeFinder searches in validate, test and predict too, and the run reads the size",
          "[callbacks][batch_size_finder]") {
  // Lightning's BatchSizeFinder searches at on_validation_start (fn validate), on_test_start and
  // on_predict_start, with trials of that loop, and the run then reads batches of the size found.
  class EvaluatesUpTo : public BoringModule {
   public:
    explicit EvaluatesUpTo(int64_t capacity) : capacity_(capacity) {}
    StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
      check(batch);
      return BoringModule::validation_step(batch, batch_idx);
    }
    StepOutput test_step(const Batch& batch, int64_t batch_idx) override {
      check(batch);
      return BoringModule::test_step(batch, batch_idx);
    }
    at::Tensor predict_step(const Batch& batch, int64_t batch_idx) override {
      check(batch);
      return BoringModule::predict_step(batch, batch_idx);
    }
    std::vector<int64_t> sizes;  // of every batch a step took, trials included

   private:
    void check(const Batch& batch) {
      sizes.push_back(data::batch_size_of(batch));
      TORCH_CHECK_WITH(OutOfMemoryError, sizes.back() <= capacity_,
                       "CUDA out of memory. Tried to allocate 2.00 GiB");
    }
    int64_t capacity_;
  };
  const Stage stage = GENERATE(Stage::kValidate, Stage::kTest, Stage::kPredict);
  CAPTURE(stage);
  EvaluatesUpTo module(16);
  RandomDataModule data(64, 1);
  auto finder = std::make_shared<BatchSizeFinder>(tuner::BatchSizeFinderOptions());
  Trainer trainer(testing::trainer_options(), {finder});
  if (stage == Stage::kValidate) trainer.validate(module, data);
  if (stage == Stage::kTest) trainer.test(module, data);
  if (stage == Stage::kPredict) trainer.predict(module, data);
  CHECK(finder->optimal_batch_size() == 16);
  REQUIRE(finder->result().has_value());
  CHECK(finder->result()->trials.size() == 5);  // 2 4 8 16 32
  CHECK(data.batch_arg("batch_size") == 16);
  // The run itself: 64 samples in 4 batches of 16, after the trials' 3 batches each.
  REQUIRE(module.sizes.size() >= 4);
  CHECK(std::vector<int64_t>(module.sizes.end() - 4, module.sizes.end()) ==
        std::vector<int64_t>{16, 16, 16, 16});
}

TEST_CASE("BatchSizeFinder in validate names a batch_arg_name the val loader does not use",
          "[callbacks][batch_size_finder]") {
  // A size the val loader ignores (as FashionMnistDataModule's batch_size, the training loader's)
  // would let every trial "fit" at the loader's own size, up to max_val.
  class TrainSizeOnly : public RandomDataModule {
   public:
    using RandomDataModule::RandomDataModule;
    std::optional<int64_t> batch_arg(const std::string& name) const override {
      return name == "train_size" ? std::optional<int64_t>(train_size_)
                                  : RandomDataModule::batch_arg(name);
    }
    bool set_batch_arg(const std::string& name, int64_t value) override {
      if (name != "train_size") return RandomDataModule::set_batch_arg(name, value);
      train_size_ = value;
      return true;
    }

   private:
    int64_t train_size_ = 2;
  } data(64, 8);
  BoringModule module;
  auto finder = std::make_shared<BatchSizeFinder>(
      tuner::BatchSizeFinderOptions().batch_arg_name("train_size"));
  Trainer trainer(testing::trainer_options(), {finder});
  CHECK_THROWS_WITH(trainer.validate(module, data),
                    Contains("the trial set `train_size` to 2, but the validate loader's first "
                             "batch has 8 samples") &&
                        Contains("eval_batch_size"));
}

TEST_CASE("BatchSizeFinder refuses several val loaders in validate, as Lightning's",
          "[callbacks][batch_size_finder]") {
  BoringModule module;
  class TwoValLoaders : public RandomDataModule {
   public:
    using RandomDataModule::RandomDataModule;
    std::vector<std::shared_ptr<DataLoader>> val_dataloaders() override {
      return {val_dataloader(), val_dataloader()};
    }
  } data(8, 2);
  Trainer trainer(testing::trainer_options(),
                  {std::make_shared<BatchSizeFinder>(tuner::BatchSizeFinderOptions())});
  CHECK_THROWS_WITH(trainer.validate(module, data),
                    Contains("cannot be used with multiple val dataloaders (2)"));
}

TEST_CASE("BatchSizeFinder refuses a data module without the batch size, before any trial",
          "[callbacks][batch_size_finder]") {
  FitsUpToModule module(20);
  RandomDataModule source(8, 2);
  data::LoaderDataModule loaders(source.train_dataloader());
  Trainer trainer(testing::trainer_options().max_epochs(1),
                  {std::make_shared<BatchSizeFinder>(tuner::BatchSizeFinderOptions())});
  CHECK_THROWS_WITH(
      trainer.fit(module, loaders),
      Contains("field `batch_size` not found in the data module") && Contains("LoaderDataModule"));
  CHECK(trainer.global_step() == 0);
}

TEST_CASE("A batch_size_finder spec takes Lightning's options and the memory budget",
          "[callbacks][batch_size_finder]") {
  const auto callback = make_callback(
      "batch_size_finder:mode=binsearch,steps_per_trial=2,init_val=4,max_trials=10,margin=0.1,"
      "max_val=1024,memory_budget=64MiB,batch_arg_name=batch_size");
  const auto* finder = dynamic_cast<BatchSizeFinder*>(callback.get());
  REQUIRE(finder != nullptr);
  CHECK(finder->options().mode() == tuner::BatchSizeMode::kBinsearch);
  CHECK(finder->options().steps_per_trial() == 2);
  CHECK(finder->options().init_val() == 4);
  CHECK(finder->options().max_trials() == 10);
  CHECK(finder->options().margin() == 0.1);
  CHECK(finder->options().max_val() == 1024);
  CHECK(finder->options().memory_budget() == 64 * 1048576);
  CHECK(finder->kind() == CallbackKind::kTuner);
  CHECK_THROWS_WITH(make_callback("batch_size_finder:mode=linear"),
                    Contains("mode=linear: expected power or binsearch"));
  CHECK_THROWS_WITH(make_callback("batch_size_finder:memory_budget=lots"),
                    Contains("memory_budget=lots: expected bytes"));
  CHECK_THROWS_WITH(make_callback("batch_size_finder:margin=1.5"),
                    Contains("--callback 'batch_size_finder:margin=1.5'") &&
                        Contains("margin must be in [0, 1)"));
  CHECK_THROWS_WITH(make_callback("batch_size_finder:patience=3"),
                    Contains("batch_size_finder has no option 'patience'"));
}
