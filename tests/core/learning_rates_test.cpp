// Learning rates and momenta per param group, under LearningRateMonitor's names, as the
// AfterOptimizerStep event (and so the recording) carries them.
#include "core/learning_rates.h"

#include <memory>
#include <vector>

#include <torch/nn/modules/linear.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include "core/trainer.h"
#include "events/optimization.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using Optimizers = std::vector<std::shared_ptr<torch::optim::Optimizer>>;

TEST_CASE("Learning rates are named as LearningRateMonitor names them", "[core][lr]") {
  torch::nn::Linear a(2, 2), b(2, 2);
  auto adam = std::make_shared<torch::optim::Adam>(
      a->parameters(), torch::optim::AdamOptions(1e-3).betas({0.8, 0.999}));
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(a->parameters(), std::make_unique<torch::optim::SGDOptions>(
                                           torch::optim::SGDOptions(0.1).momentum(0.9)));
  groups.emplace_back(b->parameters(),
                      std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(0.01)));
  auto sgd = std::make_shared<torch::optim::SGD>(groups, torch::optim::SGDOptions(0.5));
  auto second_adam =
      std::make_shared<torch::optim::Adam>(b->parameters(), torch::optim::AdamOptions(2e-3));
  auto adagrad =
      std::make_shared<torch::optim::Adagrad>(b->parameters(), torch::optim::AdagradOptions(0.3));
  const Optimizers optimizers{adam, sgd, second_adam, adagrad};

  CHECK(learning_rates(optimizers, 0) == Metrics{{"lr-Adam", 1e-3}, {"lr-Adam-momentum", 0.8}});
  CHECK(learning_rates(optimizers, 1) == Metrics{{"lr-SGD/pg1", 0.1},
                                                 {"lr-SGD/pg1-momentum", 0.9},
                                                 {"lr-SGD/pg2", 0.01},
                                                 {"lr-SGD/pg2-momentum", 0.0}});
  // A second optimizer of a class is "-1", as Lightning's names.
  CHECK(learning_rates(optimizers, 2) == Metrics{{"lr-Adam-1", 2e-3}, {"lr-Adam-1-momentum", 0.9}});
  CHECK(learning_rates(optimizers, 3) == Metrics{{"lr-Adagrad", 0.3}});  // no momentum
}

TEST_CASE("AfterOptimizerStep carries the learning rate each step used", "[core][lr]") {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_train_batches(3);
  options.limit_val_batches(0);
  Trainer trainer(options);
  std::vector<Metrics> seen;
  auto subscription = trainer.bus().subscribe<events::AfterOptimizerStep>(
      [&](const events::AfterOptimizerStep& event) { seen.push_back(event.learning_rates); });
  testing::BoringModule module;
  testing::RandomDataModule data;
  trainer.fit(module, data);
  REQUIRE(seen.size() == 3);
  const auto& optimizer = *trainer.optimizers().at(0);
  for (const Metrics& rates : seen) {
    REQUIRE(rates.size() >= 1);
    CHECK(rates.begin()->first.rfind("lr-", 0) == 0);
    CHECK(rates.begin()->second == optimizer.param_groups()[0].options().get_lr());
  }
}

namespace {
// A user's own optimizer, whose options do not implement get_lr() (LibTorch's base throws).
struct PlainOptions : torch::optim::OptimizerCloneableOptions<PlainOptions> {};
struct Plain : torch::optim::Optimizer {
  explicit Plain(std::vector<torch::Tensor> parameters)
      : Optimizer({torch::optim::OptimizerParamGroup(std::move(parameters))},
                  std::make_unique<PlainOptions>()) {}
  torch::Tensor step(LossClosure) override { return {}; }
};
}  // namespace

TEST_CASE("An optimizer without get_lr() is left out, not an error", "[core][lr]") {
  torch::nn::Linear layer(2, 2);
  const Optimizers optimizers{std::make_shared<Plain>(layer->parameters())};
  CHECK(learning_rates(optimizers, 0).empty());
}
