// StochasticWeightAveraging: the equal-weight average of the weights each epoch from swa_start
// starts with, SWALR's learning rates, swa_epoch_start as an epoch or a fraction, the BatchNorm
// epoch, an exact resume, and the command-line spec.
#include "callbacks/stochastic_weight_averaging.h"

#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/schedulers/step_lr.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include "tests/support/catch.h"

#include "base/errors.h"
#include "callbacks/callback_spec.h"
#include "callbacks/lambda_callback.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

TrainerOptions swa_trainer_options(int64_t epochs) {
  return testing::trainer_options()
      .max_epochs(epochs)
      .num_sanity_val_steps(0)
      .limit_val_batches(0)
      .enable_model_summary(false)
      .seed(7);
}

/// Linear(32, 8) [-> BatchNorm1d(8)] -> ReLU -> Linear(8, 2), trained towards ones with SGD.
struct SwaNetSettings {
  bool batch_norm = false;
  std::optional<double> step_lr_gamma;  // a StepLR(step_size=1) every epoch
  bool two_groups = false;              // first layer lr 0.1, second 0.2
  double momentum = 0.0;
};

class SwaNet : public Module {
 public:
  explicit SwaNet(SwaNetSettings settings = {}) : settings_(settings) {
    first = register_module("first", torch::nn::Linear(32, 8));
    if (settings_.batch_norm) norm = register_module("norm", torch::nn::BatchNorm1d(8));
    second = register_module("second", torch::nn::Linear(8, 2));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor hidden = first->forward(x);
    if (norm) hidden = norm->forward(hidden);
    return second->forward(torch::relu(hidden));
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    const at::Tensor out = forward(batch.data);
    return torch::nn::functional::mse_loss(out, torch::ones_like(out));
  }
  OptimizerConfig configure_optimizers() override {
    std::shared_ptr<torch::optim::SGD> optimizer;
    if (settings_.two_groups) {
      std::vector<torch::optim::OptimizerParamGroup> groups;
      groups.emplace_back(first->parameters(), std::make_unique<torch::optim::SGDOptions>(
                                                   torch::optim::SGDOptions(0.1)));
      groups.emplace_back(second->parameters(), std::make_unique<torch::optim::SGDOptions>(
                                                    torch::optim::SGDOptions(0.2)));
      optimizer =
          std::make_shared<torch::optim::SGD>(std::move(groups), torch::optim::SGDOptions(0.1));
    } else {
      optimizer = std::make_shared<torch::optim::SGD>(
          parameters(), torch::optim::SGDOptions(0.1).momentum(settings_.momentum));
    }
    if (!settings_.step_lr_gamma) return optimizer;
    SchedulerConfig scheduler;
    scheduler.scheduler =
        std::make_shared<torch::optim::StepLR>(*optimizer, 1, *settings_.step_lr_gamma);
    return OptimizerConfig(optimizer, scheduler);
  }

  torch::nn::Linear first{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
  torch::nn::Linear second{nullptr};

 private:
  SwaNetSettings settings_;
};

std::vector<at::Tensor> copies(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> copied;
  for (const auto& tensor : tensors) copied.push_back(tensor.detach().clone());
  return copied;
}

std::vector<at::Tensor> parameters_and_buffers(const Module& module) {
  std::vector<at::Tensor> tensors = copies(module.parameters());
  for (const auto& buffer : module.buffers()) tensors.push_back(buffer.detach().clone());
  return tensors;
}

bool all_equal(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

/// The learning rate of each param group at the first batch of each epoch.
std::shared_ptr<LambdaCallback> lr_recorder(std::vector<std::vector<double>>& rates) {
  return std::make_shared<LambdaCallback>(LambdaHooks().on_train_batch_start(
      [&](Trainer& trainer, Module&, const Batch&, int64_t batch_idx) {
        if (batch_idx != 0) return;
        std::vector<double> groups;
        for (const auto& group : trainer.optimizers()[0]->param_groups())
          groups.push_back(group.options().get_lr());
        rates.push_back(groups);
      }));
}

double swa_cos(double t) { return (1 - std::cos(std::acos(-1.0) * t)) / 2; }

}  // namespace

TEST_CASE("StochasticWeightAveraging averages the weights each epoch from swa_start starts with",
          "[callbacks][swa]") {
  // max_epochs 5, swa_epoch_start 3: epochs 2, 3 and 4 (0-based) add the weights they start with,
  // as Lightning's; the weights epoch 4 trains are not in the average.
  auto swa = std::make_shared<StochasticWeightAveraging>(
      StochasticWeightAveragingOptions().swa_lrs({0.05}).swa_epoch_start(3));
  std::vector<at::Tensor> at_epoch_start;
  std::vector<int64_t> n_at_epoch_end;
  at::Tensor trained;
  auto before =
      std::make_shared<LambdaCallback>(LambdaHooks().on_train_end([&](Trainer&, Module& module) {
        trained = dynamic_cast<BoringModule&>(module).layer->weight.detach().clone();
      }));
  auto probe = std::make_shared<LambdaCallback>(
      LambdaHooks()
          .on_train_epoch_start([&](Trainer&, Module& module) {
            at_epoch_start.push_back(
                dynamic_cast<BoringModule&>(module).layer->weight.detach().clone());
          })
          .on_train_epoch_end(
              [&](Trainer&, Module&) { n_at_epoch_end.push_back(swa->n_averaged()); }));
  // Seeded: LibTorch seeds its default generator at random per process, and with some initial
  // weights (one run in fifteen here, once in CI) the running average and the direct mean
  // differed past allclose's default tolerances.
  torch::manual_seed(3);
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(swa_trainer_options(5), {before, swa, probe});
  trainer.fit(module, data);

  CHECK(swa->swa_start() == 2);
  CHECK(swa->swa_end() == 4);
  CHECK(n_at_epoch_end == std::vector<int64_t>{0, 0, 1, 2, 3});
  REQUIRE(at_epoch_start.size() == 5);
  const at::Tensor expected = (at_epoch_start[2] + at_epoch_start[3] + at_epoch_start[4]) / 3;
  REQUIRE(swa->average().size() == 2);  // weight and bias
  CHECK(torch::allclose(swa->average()[0], expected));
  // The module ends with the average, not with what it trained.
  CHECK(torch::allclose(module.layer->weight.detach(), expected));
  CHECK(torch::equal(module.layer->bias.detach(), swa->average()[1]));
  CHECK_FALSE(torch::allclose(trained, expected));
  // No BatchNorm: no extra epoch.
  CHECK(trainer.current_epoch() == 5);
  CHECK(trainer.global_step() == 20);
}

TEST_CASE("StochasticWeightAveraging's custom avg_fn and the average's device",
          "[callbacks][swa]") {
  std::vector<int64_t> counts;
  auto swa = std::make_shared<StochasticWeightAveraging>(
      StochasticWeightAveragingOptions()
          .swa_lrs({0.05})
          .swa_epoch_start(1)
          .device(std::nullopt)
          .avg_fn([&](const at::Tensor&, const at::Tensor& current, int64_t n) {
            counts.push_back(n);
            return current;  // keeps the newest
          }));
  std::vector<at::Tensor> at_epoch_start;
  auto probe = std::make_shared<LambdaCallback>(
      LambdaHooks().on_train_epoch_start([&](Trainer&, Module& module) {
        at_epoch_start.push_back(
            dynamic_cast<BoringModule&>(module).layer->weight.detach().clone());
      }));
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(swa_trainer_options(3), {swa, probe});
  trainer.fit(module, data);
  // The first update copies; then avg_fn runs for the weight and the bias, with the updates made
  // before it.
  CHECK(counts == std::vector<int64_t>{1, 1, 2, 2});
  CHECK(torch::equal(module.layer->weight.detach(), at_epoch_start[2]));
}

TEST_CASE("StochasticWeightAveraging anneals the learning rate as PyTorch's SWALR",
          "[callbacks][swa]") {
  std::vector<std::vector<double>> rates;
  SECTION("cos, replacing the module's StepLR") {
    auto swa = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.01}).swa_epoch_start(3).annealing_epochs(3));
    std::vector<int64_t> steps_at_epoch_end;
    std::vector<bool> swalr_installed;
    auto probe = std::make_shared<LambdaCallback>(
        LambdaHooks().on_train_epoch_end([&](Trainer& trainer, Module&) {
          steps_at_epoch_end.push_back(swa->swa_scheduler() ? swa->swa_scheduler()->step_count()
                                                            : -1);
          swalr_installed.push_back(trainer.lr_scheduler_configs().size() == 1 &&
                                    trainer.lr_scheduler_configs()[0].scheduler.get() ==
                                        swa->swa_scheduler());
        }));
    SwaNetSettings settings;
    settings.step_lr_gamma = 0.5;
    SwaNet module(settings);
    RandomDataModule data(4, 2);
    Trainer trainer(swa_trainer_options(6), {swa, lr_recorder(rates), probe});
    trainer.fit(module, data);

    // LibTorch's StepLR halves the rate from its second step on (PyTorch's first step is the one
    // when it is made): 0.05 at swa_start (epoch 2), from which SWALR anneals.
    const double lr0 = 0.05, swa_lr = 0.01;
    const std::vector<double> expected{0.1,
                                       0.1,
                                       lr0,
                                       swa_lr * swa_cos(1.0 / 3) + lr0 * (1 - swa_cos(1.0 / 3)),
                                       swa_lr * swa_cos(2.0 / 3) + lr0 * (1 - swa_cos(2.0 / 3)),
                                       swa_lr};
    REQUIRE(rates.size() == expected.size());
    for (std::size_t epoch = 0; epoch < expected.size(); ++epoch) {
      INFO("epoch " << epoch);
      CHECK(rates[epoch][0] == Approx(expected[epoch]).epsilon(1e-12));
    }
    // As Lightning's test: SWALR steps once when made, then at every epoch end.
    CHECK(steps_at_epoch_end == std::vector<int64_t>{-1, -1, 2, 3, 4, 5});
    CHECK(swalr_installed == std::vector<bool>{false, false, true, true, true, true});
  }
  SECTION("linear, one swa_lr per param group") {
    auto swa = std::make_shared<StochasticWeightAveraging>(StochasticWeightAveragingOptions()
                                                               .swa_lrs({0.01, 0.02})
                                                               .swa_epoch_start(2)
                                                               .annealing_epochs(2)
                                                               .annealing_strategy("linear"));
    SwaNetSettings settings;
    settings.two_groups = true;
    SwaNet module(settings);
    RandomDataModule data(4, 2);
    Trainer trainer(swa_trainer_options(5), {swa, lr_recorder(rates)});
    trainer.fit(module, data);
    const std::vector<std::vector<double>> expected{
        {0.1, 0.2}, {0.1, 0.2}, {0.055, 0.11}, {0.01, 0.02}, {0.01, 0.02}};
    REQUIRE(rates.size() == expected.size());
    for (std::size_t epoch = 0; epoch < expected.size(); ++epoch) {
      INFO("epoch " << epoch);
      CHECK(rates[epoch][0] == Approx(expected[epoch][0]).epsilon(1e-12));
      CHECK(rates[epoch][1] == Approx(expected[epoch][1]).epsilon(1e-12));
    }
  }
  SECTION("annealing_epochs 0: swa_lr from swa_start") {
    auto swa = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.03}).swa_epoch_start(2).annealing_epochs(0));
    BoringModule module;
    RandomDataModule data(4, 2);
    Trainer trainer(swa_trainer_options(3), {swa, lr_recorder(rates)});
    trainer.fit(module, data);
    REQUIRE(rates.size() == 3);
    CHECK(rates[0][0] == 0.1);
    CHECK(rates[1][0] == 0.03);
    CHECK(rates[2][0] == 0.03);
  }
  SECTION("swa_lrs that match no param group count") {
    auto swa = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.01, 0.02, 0.03}));
    SwaNetSettings settings;
    settings.two_groups = true;
    SwaNet module(settings);
    RandomDataModule data(4, 2);
    Trainer trainer(swa_trainer_options(3), {swa});
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Contains("swa_lrs has 3 values but the optimizer has 2 param groups"));
  }
}

TEST_CASE("StochasticWeightAveraging's swa_epoch_start: an epoch, a fraction, or refused",
          "[callbacks][swa]") {
  BoringModule module;
  RandomDataModule data(2, 1);
  SECTION("an integer is the N-th epoch") {
    auto swa = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.05}).swa_epoch_start(3));
    Trainer trainer(swa_trainer_options(4), {swa});
    trainer.fit(module, data);
    CHECK(swa->swa_start() == 2);
    CHECK(swa->n_averaged() == 2);  // epochs 2 and 3
  }
  SECTION("a fraction of max_epochs: int(0.5 x 4) = the 2nd epoch") {
    auto swa = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.05}).swa_epoch_start(0.5));
    Trainer trainer(swa_trainer_options(4), {swa});
    trainer.fit(module, data);
    CHECK(swa->swa_start() == 1);
    CHECK(swa->n_averaged() == 3);
  }
  SECTION("the default 0.8 of 10 epochs, and 0.0") {
    auto late = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.05}));
    Trainer trainer(swa_trainer_options(10), {late});
    trainer.fit(module, data);
    CHECK(late->swa_start() == 7);
    CHECK(late->n_averaged() == 3);
    auto first = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.05}).swa_epoch_start(0.0));
    Trainer from_start(swa_trainer_options(2), {first});
    from_start.fit(module, data);
    CHECK(first->swa_start() == 0);
    CHECK(first->n_averaged() == 2);
  }
  SECTION("after max_epochs: refused when fit starts, naming the option") {
    auto swa = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.05}).swa_epoch_start(6));
    Trainer trainer(swa_trainer_options(4), {swa});
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Contains("swa_epoch_start=6 is after the last epoch (max_epochs=4)"));
    auto unlimited = std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.05}));
    Trainer by_steps(
        testing::trainer_options().max_steps(4).limit_val_batches(0).enable_model_summary(false),
        {unlimited});
    CHECK_THROWS_WITH(by_steps.fit(module, data), Contains("needs max_epochs >= 1"));
  }
  using Options = StochasticWeightAveragingOptions;
  CHECK_THROWS_AS(StochasticWeightAveraging(Options().swa_lrs({0.05}).swa_epoch_start(0)),
                  MisconfigurationError);
  CHECK_THROWS_WITH(StochasticWeightAveraging(Options().swa_lrs({0.05}).swa_epoch_start(0)),
                    Contains("swa_epoch_start should be a >0 integer or a float between 0 and 1, "
                             "got 0"));
  CHECK_THROWS_WITH(StochasticWeightAveraging(Options().swa_lrs({0.05}).swa_epoch_start(1.5)),
                    Contains("swa_epoch_start should be a >0 integer") && Contains("got 1.5"));
  CHECK_THROWS_WITH(StochasticWeightAveraging(Options().swa_lrs({0.05}).swa_epoch_start(-1)),
                    Contains("swa_epoch_start should be a >0 integer"));
  CHECK_THROWS_WITH(StochasticWeightAveraging(Options()), Contains("swa_lrs is required"));
  CHECK_THROWS_WITH(StochasticWeightAveraging(Options().swa_lrs({0.2, -1.0})),
                    Contains("swa_lrs should be a positive float"));
  CHECK_THROWS_WITH(StochasticWeightAveraging(Options().swa_lrs({0.05}).annealing_strategy("exp")),
                    Contains("annealing_strategy must be \"cos\" or \"linear\", got \"exp\""));
  CHECK_THROWS_WITH(StochasticWeightAveraging(Options().swa_lrs({0.05}).annealing_epochs(-1)),
                    Contains("annealing_epochs must be >= 0, got -1"));
}

TEST_CASE(
    "StochasticWeightAveraging recomputes BatchNorm statistics on the average in an extra "
    "forward-only epoch",
    "[callbacks][swa]") {
  auto swa = std::make_shared<StochasticWeightAveraging>(
      StochasticWeightAveragingOptions().swa_lrs({0.05}).swa_epoch_start(2));
  struct EpochCounts {
    int batches = 0, backwards = 0, optimizer_steps = 0, zero_grads = 0;
  };
  std::map<int64_t, EpochCounts> counts;
  std::vector<int64_t> max_epochs_seen;
  std::vector<at::Tensor> at_last_epoch_start;
  auto probe = std::make_shared<LambdaCallback>(
      LambdaHooks()
          .on_train_epoch_start([&](Trainer& trainer, Module& module) {
            max_epochs_seen.push_back(trainer.max_epochs());
            if (trainer.current_epoch() == 3) at_last_epoch_start = copies(module.parameters());
          })
          .on_train_batch_end([&](Trainer& trainer, Module&, const StepOutput&, const Batch&,
                                  int64_t) { ++counts[trainer.current_epoch()].batches; })
          .on_after_backward(
              [&](Trainer& trainer, Module&) { ++counts[trainer.current_epoch()].backwards; })
          .on_before_zero_grad([&](Trainer& trainer, Module&, torch::optim::Optimizer&) {
            ++counts[trainer.current_epoch()].zero_grads;
          })
          .on_before_optimizer_step([&](Trainer& trainer, Module&, torch::optim::Optimizer&) {
            ++counts[trainer.current_epoch()].optimizer_steps;
          }));
  torch::manual_seed(3);
  SwaNetSettings settings;
  settings.batch_norm = true;
  SwaNet module(settings);
  RandomDataModule data(16, 4);
  Trainer trainer(swa_trainer_options(3), {swa, probe});
  trainer.fit(module, data);

  // Epochs 0-2 train; epoch 3 is the BatchNorm epoch: training_step on every batch, nothing else.
  CHECK(max_epochs_seen == std::vector<int64_t>{4, 4, 4, 4});
  CHECK(trainer.max_epochs() == 3);  // given back when training ends
  CHECK(trainer.current_epoch() == 4);
  CHECK(trainer.global_step() == 12);
  REQUIRE(counts.count(3) == 1);
  CHECK(counts[3].batches == 4);
  CHECK(counts[3].backwards == 0);
  CHECK(counts[3].zero_grads == 0);
  CHECK(counts[3].optimizer_steps == 0);
  CHECK(counts[2].optimizer_steps == 4);
  CHECK_FALSE(trainer.skip_backward());

  // The module has the average (epochs 1 and 2 started with it), which the pass did not change.
  REQUIRE(swa->n_averaged() == 2);
  const std::vector<at::Tensor> final_parameters = copies(module.parameters());
  CHECK(all_equal(final_parameters, swa->average()));
  CHECK(all_equal(final_parameters, at_last_epoch_start));

  // The statistics by hand: the mean over the batches of each batch's mean and unbiased variance
  // of the BatchNorm's input, under the averaged weights.
  auto loader = data.train_dataloader();
  at::Tensor mean_sum = torch::zeros({8}), var_sum = torch::zeros({8});
  {
    torch::NoGradGuard no_grad;
    for (int64_t b = 0; b < loader->num_batches(); ++b) {
      const at::Tensor hidden = module.first->forward(loader->batch(b).data);
      const at::Tensor mean = hidden.mean(0);
      mean_sum += mean;
      var_sum += (hidden - mean).pow(2).sum(0) / (hidden.size(0) - 1);
    }
  }
  const double batches = static_cast<double>(loader->num_batches());
  CHECK(torch::allclose(module.norm->running_mean, mean_sum / batches, 1e-5, 1e-6));
  CHECK(torch::allclose(module.norm->running_var, var_sum / batches, 1e-5, 1e-6));
  CHECK(module.norm->num_batches_tracked.item<int64_t>() == 4);
  CHECK(module.norm->options.momentum() == c10::optional<double>(0.1));  // given back
}

TEST_CASE("StochasticWeightAveraging survives a resume: the same weights as an uninterrupted run",
          "[callbacks][swa]") {
  struct Variant {
    const char* name;
    SwaNetSettings settings;
    bool mid_epoch;
  };
  SwaNetSettings batch_norm_step_lr;
  batch_norm_step_lr.batch_norm = true;
  batch_norm_step_lr.step_lr_gamma = 0.7;
  batch_norm_step_lr.momentum = 0.9;
  SwaNetSettings plain;  // no BatchNorm, no scheduler of its own
  plain.momentum = 0.9;
  const std::vector<Variant> variants{
      {"BatchNorm, StepLR, saved at an epoch end", batch_norm_step_lr, false},
      {"BatchNorm, StepLR, saved mid-epoch", batch_norm_step_lr, true},
      {"no BatchNorm, no scheduler, saved mid-epoch", plain, true}};
  const auto make_swa = [] {
    return std::make_shared<StochasticWeightAveraging>(
        StochasticWeightAveragingOptions().swa_lrs({0.02}).swa_epoch_start(3).annealing_epochs(2));
  };
  for (const Variant& variant : variants) {
    INFO(variant.name);
    TempDir dir;
    const std::string checkpoint = (dir.path() / "mid-swa.ckpt").string();
    std::vector<at::Tensor> uninterrupted;
    double uninterrupted_lr = 0;
    std::map<int64_t, double> uninterrupted_rates, resumed_rates;  // by epoch x 10 + batch
    const auto rate_recorder = [](std::map<int64_t, double>& rates) {
      return std::make_shared<LambdaCallback>(LambdaHooks().on_train_batch_start(
          [&rates](Trainer& trainer, Module&, const Batch&, int64_t batch_idx) {
            rates[trainer.current_epoch() * 10 + batch_idx] =
                trainer.optimizers()[0]->param_groups()[0].options().get_lr();
          }));
    };
    {
      torch::manual_seed(1);  // the same initial weights in both runs
      SwaNet module(variant.settings);
      RandomDataModule data(16, 4, /*shuffle=*/true);
      auto swa = make_swa();
      Trainer trainer(swa_trainer_options(5), {swa, rate_recorder(uninterrupted_rates)});
      trainer.fit(module, data);
      REQUIRE(swa->n_averaged() == 3);
      uninterrupted = parameters_and_buffers(module);
      uninterrupted_lr = trainer.optimizers()[0]->param_groups()[0].options().get_lr();
    }
    {
      // Saved in epoch 3 (SWA from epoch 2), then the run dies.
      auto saver = std::make_shared<LambdaCallback>(
          LambdaHooks()
              .on_train_batch_end([&](Trainer& trainer, Module&, const StepOutput&, const Batch&,
                                      int64_t batch_idx) {
                if (!variant.mid_epoch || trainer.current_epoch() != 3) return;
                if (batch_idx == 1) trainer.save_checkpoint(checkpoint);
                if (batch_idx == 2) throw std::runtime_error("interrupted");
              })
              .on_train_epoch_end([&](Trainer& trainer, Module&) {
                if (!variant.mid_epoch && trainer.current_epoch() == 3)
                  trainer.save_checkpoint(checkpoint);
              })
              .on_train_epoch_start([&](Trainer& trainer, Module&) {
                if (trainer.current_epoch() == 4) throw std::runtime_error("interrupted");
              }));
      torch::manual_seed(1);
      SwaNet module(variant.settings);
      RandomDataModule data(16, 4, /*shuffle=*/true);
      auto swa = make_swa();
      Trainer trainer(swa_trainer_options(5), {swa, saver});
      CHECK_THROWS_WITH(trainer.fit(module, data), Contains("interrupted"));
      CHECK(trainer.max_epochs() == 5);  // the BatchNorm epoch taken back on the exception
    }
    torch::manual_seed(2);  // other initial weights: the checkpoint's must replace them
    SwaNet module(variant.settings);
    RandomDataModule data(16, 4, /*shuffle=*/true);
    auto swa = make_swa();
    Trainer trainer(swa_trainer_options(5), {swa, rate_recorder(resumed_rates)});
    trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
    CHECK(swa->n_averaged() == 3);
    // Every batch after the save trains at the rate it had in the uninterrupted run.
    REQUIRE(resumed_rates.size() ==
            (variant.mid_epoch ? 2u : 0u) + 4 + (variant.settings.batch_norm ? 4u : 0u));
    for (const auto& [batch, rate] : resumed_rates) {
      INFO("epoch x 10 + batch " << batch);
      CHECK(rate == uninterrupted_rates.at(batch));
    }
    CHECK(all_equal(parameters_and_buffers(module), uninterrupted));
    CHECK(trainer.optimizers()[0]->param_groups()[0].options().get_lr() == uninterrupted_lr);
  }
}

TEST_CASE("StochasticWeightAveraging from --callback stochastic_weight_averaging:...",
          "[callbacks][swa]") {
  const auto swa = std::dynamic_pointer_cast<StochasticWeightAveraging>(
      make_callback("stochastic_weight_averaging:swa_lrs=0.05,swa_epoch_start=0.5"));
  REQUIRE(swa != nullptr);
  CHECK(swa->options().swa_lrs() == std::vector<double>{0.05});
  CHECK(swa->options().swa_epoch_start().is_fraction());
  CHECK(swa->options().swa_epoch_start().fraction() == 0.5);
  CHECK(swa->options().annealing_epochs() == 10);  // defaults
  CHECK(swa->options().annealing_strategy() == "cos");
  CHECK(swa->options().device() == std::optional<c10::Device>(c10::Device("cpu")));

  const auto each = std::dynamic_pointer_cast<StochasticWeightAveraging>(
      make_callback("stochastic_weight_averaging:swa_lrs=0.01;0.02,swa_epoch_start=2,"
                    "annealing_epochs=3,annealing_strategy=linear,device=none"));
  REQUIRE(each != nullptr);
  CHECK(each->options().swa_lrs() == std::vector<double>{0.01, 0.02});
  CHECK_FALSE(each->options().swa_epoch_start().is_fraction());
  CHECK(each->options().swa_epoch_start().epoch() == 2);
  CHECK(each->options().annealing_epochs() == 3);
  CHECK(each->options().annealing_strategy() == "linear");
  CHECK_FALSE(each->options().device().has_value());

  CHECK_THROWS_WITH(make_callback("stochastic_weight_averaging:swa_lrs=0.05,swa_start=2"),
                    Contains("stochastic_weight_averaging has no option 'swa_start'") &&
                        Contains("it takes annealing_epochs, annealing_strategy, device, "
                                 "swa_epoch_start, swa_lrs"));
  CHECK_THROWS_WITH(make_callback("stochastic_weight_averaging:swa_epoch_start=2"),
                    Contains("--callback 'stochastic_weight_averaging:swa_epoch_start=2'") &&
                        Contains("swa_lrs is required"));
  CHECK_THROWS_WITH(make_callback("stochastic_weight_averaging:swa_lrs=0.05,swa_epoch_start=0"),
                    Contains("swa_epoch_start should be a >0 integer"));
  CHECK_THROWS_WITH(make_callback("stochastic_weight_averaging:swa_lrs=fast"),
                    Contains("swa_lrs=fast: expected a number"));
  CHECK_THROWS_WITH(
      make_callback("stochastic_weight_averaging:swa_lrs=0.05,annealing_strategy=exp"),
      Contains("annealing_strategy=exp: expected cos or linear"));
  CHECK_THROWS_WITH(make_callback("stochastic_weight_averaging:swa_lrs=0.05,device=gpu7"),
                    Contains("device=gpu7: expected a device"));
}
