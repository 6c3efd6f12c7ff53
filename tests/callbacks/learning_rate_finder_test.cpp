// LearningRateFinder in a real fit: the range test at on_fit_start, its table and plot in the
// run directory, the suggestion in the module's lr hyper-parameter and in the fit's optimizer,
// the weights the fit continues from as they were; bad options refused by name.
#include "callbacks/learning_rate_finder.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "callbacks/callback_spec.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// BoringModule with the "lr" hyper-parameter update_attr writes.
class LrHparamModule : public BoringModule {
 public:
  LrHparamModule() {
    StateDict hparams;
    hparams.insert("lr", 0.1);
    save_hyperparameters(hparams);
  }
};

/// The weights at on_fit_start and the learning rate each training batch runs with.
class LrObserver : public Callback {
 public:
  void on_fit_start(Trainer&, Module& module) override {
    for (const auto& parameter : module.parameters()) weights.push_back(parameter.detach().clone());
  }
  void on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) override {
    lrs.push_back(trainer.optimizers().at(0)->param_groups().at(0).options().get_lr());
  }
  std::vector<at::Tensor> weights;
  std::vector<double> lrs;
};

std::string slurp(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("LearningRateFinder runs the range test at fit start and trains with the suggestion",
          "[callbacks][learning_rate_finder]") {
  TempDir dir;
  torch::manual_seed(2);
  LrHparamModule module;
  std::vector<at::Tensor> initial;
  for (const auto& parameter : module.parameters()) initial.push_back(parameter.detach().clone());
  RandomDataModule data(64, 2);
  auto observer = std::make_shared<LrObserver>();
  auto finder = std::make_shared<LearningRateFinder>(
      LearningRateFinderOptions().min_lr(1e-4).num_training_steps(30).early_stop_threshold(
          std::nullopt));
  Trainer trainer(
      testing::trainer_options().seed(1).max_epochs(1).limit_val_batches(0).default_root_dir(
          dir.path().string()),
      {observer, finder});
  trainer.fit(module, data);

  REQUIRE(finder->lr_finder().has_value());
  CHECK(finder->lr_finder()->lrs().size() == 30);  // within the fit's one epoch of 32 batches
  REQUIRE(finder->optimal_lr().has_value());
  const double lr = *finder->optimal_lr();
  CHECK(module.hparams().at("lr").toDouble() == lr);
  CHECK(observer->lrs == std::vector<double>(32, lr));
  CHECK(trainer.global_step() == 32);
  REQUIRE(observer->weights.size() == initial.size());
  for (std::size_t i = 0; i < initial.size(); ++i) {
    CHECK(torch::equal(observer->weights[i], initial[i]));
  }
  CHECK(finder->plot_path() == dir.file("lr_find.svg"));
  CHECK_THAT(slurp(finder->plot_path()), Contains("<svg") && Contains("suggested lr"));
  CHECK_THAT(slurp(finder->table_path()), Contains("<- suggested"));
}

TEST_CASE("LearningRateFinder needs an lr hyper-parameter to update, as Lightning's",
          "[callbacks][learning_rate_finder]") {
  BoringModule module;  // no hyper-parameters
  RandomDataModule data(16, 2);
  Trainer trainer(testing::trainer_options().max_epochs(1).limit_val_batches(0),
                  {std::make_shared<LearningRateFinder>()});
  CHECK_THROWS_WITH(trainer.fit(module, data), Contains("neither \"lr\" nor \"learning_rate\""));

  // update_attr=false: the test runs and the lr stays.
  auto finder = std::make_shared<LearningRateFinder>(
      LearningRateFinderOptions().num_training_steps(20).update_attr(false).early_stop_threshold(
          std::nullopt));  // no divergence stop: a random start may diverge early
  TempDir dir;
  Trainer keeps(testing::trainer_options().max_epochs(1).limit_val_batches(0).default_root_dir(
                    dir.path().string()),
                {finder});
  keeps.fit(module, data);
  // The fit's epoch limit bounds the test, as in Lightning (the same fit loop there): 8 batches.
  CHECK(finder->lr_finder()->lrs().size() == 8);
  CHECK(keeps.global_step() == 8);
}

TEST_CASE("A learning_rate_finder spec takes Lightning's options",
          "[callbacks][learning_rate_finder]") {
  const auto callback = make_callback(
      "learning_rate_finder:min_lr=1e-6,max_lr=0.5,num_training_steps=40,mode=linear,"
      "early_stop_threshold=none,update_attr=false,attr_name=learning_rate");
  REQUIRE(dynamic_cast<LearningRateFinder*>(callback.get()) != nullptr);
  CHECK(callback->kind() == CallbackKind::kTuner);
  CHECK_THROWS_WITH(make_callback("learning_rate_finder:mode=cosine"),
                    Contains("mode=cosine: expected exponential or linear"));
  CHECK_THROWS_WITH(
      make_callback("learning_rate_finder:min_lr=0"),
      Contains("--callback 'learning_rate_finder:min_lr=0'") && Contains("min_lr must be > 0"));
  CHECK_THROWS_WITH(make_callback("learning_rate_finder:num_training=5"),
                    Contains("learning_rate_finder has no option 'num_training'"));
}
