// BaseFinetuning and BackboneFinetuning: the backbone frozen before training, unfrozen into its own
// param group at its epoch with Lightning's learning rates, BatchNorm statistics kept while frozen,
// an exact resume (the added param group rebuilt before the optimizer state is loaded), and the
// errors a user gets.
#include "callbacks/backbone_finetuning.h"

#include <memory>
#include <string>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>

#include "tests/support/catch.h"

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

constexpr double kLr = 0.01;

/// A backbone (Linear, BatchNorm1d, ReLU) and a head; Adam over the parameters that require grad,
/// as Lightning asks of a module with a finetuning callback.
class BackboneModule : public Module {
 public:
  BackboneModule() {
    backbone = register_module(
        "backbone", torch::nn::Sequential(torch::nn::Linear(32, 16), torch::nn::BatchNorm1d(16),
                                          torch::nn::ReLU()));
    head = register_module("head", torch::nn::Linear(16, 2));
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    const at::Tensor out = head->forward(backbone->forward(batch.data));
    return torch::nn::functional::mse_loss(out, torch::ones_like(out));
  }
  OptimizerConfig configure_optimizers() override {
    std::vector<at::Tensor> trainable;
    for (const auto& p : parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    return std::make_shared<torch::optim::Adam>(trainable, torch::optim::AdamOptions(kLr));
  }
  torch::nn::BatchNorm1dImpl& batch_norm() {
    return *backbone->ptr(1)->as<torch::nn::BatchNorm1d>();
  }
  at::Tensor backbone_weight() { return backbone->ptr(0)->as<torch::nn::Linear>()->weight; }

  torch::nn::Sequential backbone{nullptr};
  torch::nn::Linear head{nullptr};
};

TrainerOptions finetuning_options(int64_t epochs) {
  return testing::trainer_options()
      .max_epochs(epochs)
      .limit_val_batches(0)
      .enable_model_summary(false)
      .seed(5);
}

/// At every train epoch start (listed after the finetuning callback): the lr of each param group
/// of the first optimizer, and whether the backbone trains.
struct EpochProbe {
  std::vector<std::vector<double>> lrs;
  std::vector<bool> backbone_trains;
  std::shared_ptr<LambdaCallback> callback() {
    return std::make_shared<LambdaCallback>(
        LambdaHooks().on_train_epoch_start([this](Trainer& trainer, Module& module) {
          std::vector<double> epoch;
          for (const auto& group : trainer.optimizers().at(0)->param_groups()) {
            epoch.push_back(group.options().get_lr());
          }
          lrs.push_back(epoch);
          backbone_trains.push_back(
              dynamic_cast<BackboneModule&>(module).backbone_weight().requires_grad());
        }));
  }
};

}  // namespace

TEST_CASE("BackboneFinetuning freezes the backbone, then trains it in its own param group",
          "[callbacks][finetuning]") {
  auto finetuning = std::make_shared<BackboneFinetuning>(
      BackboneFinetuningOptions().unfreeze_backbone_at_epoch(1));
  EpochProbe probe;
  at::Tensor backbone_after_epoch0, head_initial;
  auto snapshot = std::make_shared<LambdaCallback>(
      LambdaHooks()
          .on_train_start([&](Trainer&, Module& m) {
            head_initial = dynamic_cast<BackboneModule&>(m).head->weight.detach().clone();
          })
          .on_train_epoch_end([&](Trainer& t, Module& m) {
            if (t.current_epoch() == 0) {
              backbone_after_epoch0 = dynamic_cast<BackboneModule&>(m).backbone_weight().clone();
            }
          }));
  torch::manual_seed(3);
  BackboneModule module;
  const at::Tensor backbone_initial = module.backbone_weight().detach().clone();
  RandomDataModule data(16, 4);
  Trainer trainer(finetuning_options(6), {finetuning, probe.callback(), snapshot});
  trainer.fit(module, data);

  // Epoch 0: frozen, untouched, the optimizer holds the head (and the BatchNorm: train_bn).
  CHECK(probe.backbone_trains == std::vector<bool>{false, true, true, true, true, true});
  CHECK(torch::equal(backbone_after_epoch0, backbone_initial));
  CHECK_FALSE(torch::equal(module.head->weight.detach(), head_initial));
  // Lightning's lrs: ratio 0.1 at the unfreeze epoch, then x2 per epoch, aligned at the head's.
  REQUIRE(probe.lrs.size() == 6);
  CHECK(probe.lrs[0] == std::vector<double>{kLr});
  const std::vector<double> backbone_lrs = {0.001, 0.002, 0.004, 0.008, kLr};
  for (std::size_t epoch = 1; epoch < 6; ++epoch) {
    REQUIRE(probe.lrs[epoch].size() == 2);
    CHECK(probe.lrs[epoch][0] == kLr);
    CHECK(probe.lrs[epoch][1] == Approx(backbone_lrs[epoch - 1]));
  }
  CHECK(finetuning->previous_backbone_lr() == Approx(kLr));
  // From epoch 1 on the backbone trains.
  CHECK_FALSE(torch::equal(module.backbone_weight().detach(), backbone_initial));
}

TEST_CASE("BackboneFinetuning's initial lr, lambda_func and should_align as Lightning's",
          "[callbacks][finetuning]") {
  auto finetuning = std::make_shared<BackboneFinetuning>(
      BackboneFinetuningOptions()
          .unfreeze_backbone_at_epoch(0)
          .backbone_initial_lr(0.004)
          .lambda_func([](int64_t epoch) { return static_cast<double>(epoch); })
          .should_align(false));
  EpochProbe probe;
  BackboneModule module;
  RandomDataModule data(8, 4);
  Trainer trainer(finetuning_options(3), {finetuning, probe.callback()});
  trainer.fit(module, data);
  REQUIRE(probe.lrs.size() == 3);
  CHECK(probe.lrs[0][1] == Approx(0.004));
  CHECK(probe.lrs[1][1] == Approx(0.004 * 2));      // lambda_func(epoch + 1), epoch 1
  CHECK(probe.lrs[2][1] == Approx(0.004 * 2 * 3));  // past the head's 0.01: not aligned
}

namespace {

/// Freezes the whole backbone, BatchNorm included (train_bn false), and unfreezes it at epoch 1.
class FreezesBatchNorm : public BaseFinetuning {
 public:
  void freeze_before_training(Module& module) override {
    freeze(dynamic_cast<BackboneModule&>(module).backbone, /*train_bn=*/false);
  }
  void finetune_function(Module& module, int64_t epoch,
                         torch::optim::Optimizer& optimizer) override {
    if (epoch == 1) {
      unfreeze_and_add_param_group(dynamic_cast<BackboneModule&>(module).backbone, optimizer);
    }
  }
};

}  // namespace

TEST_CASE("A frozen BatchNorm keeps its statistics until it is unfrozen",
          "[callbacks][finetuning]") {
  at::Tensor mean_after_epoch0;
  auto snapshot =
      std::make_shared<LambdaCallback>(LambdaHooks().on_train_epoch_end([&](Trainer& t, Module& m) {
        if (t.current_epoch() == 0) {
          mean_after_epoch0 = dynamic_cast<BackboneModule&>(m).batch_norm().running_mean.clone();
        }
      }));
  BackboneModule module;
  const at::Tensor initial_mean = module.batch_norm().running_mean.clone();
  const auto momentum = module.batch_norm().options.momentum();
  RandomDataModule data(16, 4);
  Trainer trainer(finetuning_options(2), {std::make_shared<FreezesBatchNorm>(), snapshot});
  trainer.fit(module, data);
  CHECK(torch::equal(mean_after_epoch0, initial_mean));
  CHECK(module.batch_norm().weight.requires_grad());
  CHECK(module.batch_norm().options.momentum() == momentum);  // given back at the unfreeze
  CHECK_FALSE(torch::equal(module.batch_norm().running_mean, initial_mean));
  // Its parameters joined the new group with the Linear's.
  CHECK(trainer.optimizers()[0]->param_groups()[1].params().size() == 4);
}

TEST_CASE("BackboneFinetuning leaves BatchNorm trainable before the unfreeze, as Lightning's",
          "[callbacks][finetuning]") {
  // train_bn=false only keeps the BatchNorm out of the backbone's group at the unfreeze.
  BackboneModule module;
  const at::Tensor initial_mean = module.batch_norm().running_mean.clone();
  RandomDataModule data(16, 4);
  Trainer trainer(finetuning_options(2),
                  {std::make_shared<BackboneFinetuning>(
                      BackboneFinetuningOptions().unfreeze_backbone_at_epoch(1).train_bn(false))});
  trainer.fit(module, data);
  CHECK_FALSE(torch::equal(module.batch_norm().running_mean, initial_mean));
  CHECK(module.batch_norm().weight.requires_grad());
  // Group 0: the head and the BatchNorm (configure_optimizers took what required grad); group 1:
  // the Linear's weight and bias.
  CHECK(trainer.optimizers()[0]->param_groups()[0].params().size() == 4);
  CHECK(trainer.optimizers()[0]->param_groups()[1].params().size() == 2);
}

namespace {

/// BackboneModule whose optimizer takes every parameter, frozen or not (most modules' way).
class AllParamsModule : public BackboneModule {
 public:
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(kLr));
  }
};

}  // namespace

TEST_CASE("A resume before the unfreeze epoch keeps the backbone frozen",
          "[callbacks][finetuning]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "epoch0.ckpt").string();
  const auto make_callback = [] {
    return std::make_shared<BackboneFinetuning>(
        BackboneFinetuningOptions().unfreeze_backbone_at_epoch(3));
  };
  {
    auto saver = std::make_shared<LambdaCallback>(
        LambdaHooks().on_train_epoch_end([&](Trainer& trainer, Module&) {
          if (trainer.current_epoch() == 0) trainer.save_checkpoint(checkpoint);
        }));
    AllParamsModule module;
    RandomDataModule data(8, 4);
    Trainer trainer(finetuning_options(1), {make_callback(), saver});
    trainer.fit(module, data);
  }
  EpochProbe probe;
  AllParamsModule module;
  RandomDataModule data(8, 4);
  Trainer trainer(finetuning_options(4), {make_callback(), probe.callback()});
  trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
  CHECK(probe.backbone_trains == std::vector<bool>{false, false, true});
}

TEST_CASE("A run resumed mid-epoch does not change the backbone's lr twice",
          "[callbacks][finetuning]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "mid.ckpt").string();
  const auto make_callback = [] {
    return std::make_shared<BackboneFinetuning>(
        BackboneFinetuningOptions().unfreeze_backbone_at_epoch(1));
  };
  EpochProbe uninterrupted;
  {
    torch::manual_seed(2);
    BackboneModule module;
    RandomDataModule data(16, 4);
    Trainer trainer(finetuning_options(4), {make_callback(), uninterrupted.callback()});
    trainer.fit(module, data);
  }
  {
    auto saver = std::make_shared<LambdaCallback>(LambdaHooks().on_train_batch_end(
        [&](Trainer& trainer, Module&, const StepOutput&, const Batch&, int64_t batch_idx) {
          if (trainer.current_epoch() == 2 && batch_idx == 1) trainer.save_checkpoint(checkpoint);
        }));
    torch::manual_seed(2);
    BackboneModule module;
    RandomDataModule data(16, 4);
    Trainer trainer(finetuning_options(3), {make_callback(), saver});
    trainer.fit(module, data);
  }
  EpochProbe resumed;
  BackboneModule module;
  RandomDataModule data(16, 4);
  Trainer trainer(finetuning_options(4), {make_callback(), resumed.callback()});
  trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
  // Epochs 2 and 3, as the uninterrupted run had them.
  REQUIRE(resumed.lrs.size() == 2);
  REQUIRE(uninterrupted.lrs.size() == 4);
  CHECK(resumed.lrs[0] == uninterrupted.lrs[2]);
  CHECK(resumed.lrs[1] == uninterrupted.lrs[3]);
}

TEST_CASE("BackboneFinetuning survives a resume: the same weights as an uninterrupted run",
          "[callbacks][finetuning]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "epoch2.ckpt").string();
  const auto make_callback = [] {
    return std::make_shared<BackboneFinetuning>(
        BackboneFinetuningOptions().unfreeze_backbone_at_epoch(1).train_bn(false));
  };
  at::Tensor uninterrupted_backbone, uninterrupted_head, uninterrupted_mean;
  {
    torch::manual_seed(1);
    BackboneModule module;
    RandomDataModule data(16, 4, /*shuffle=*/true);
    Trainer trainer(finetuning_options(5), {make_callback()});
    trainer.fit(module, data);
    uninterrupted_backbone = module.backbone_weight().detach().clone();
    uninterrupted_head = module.head->weight.detach().clone();
    uninterrupted_mean = module.batch_norm().running_mean.clone();
  }
  {
    auto saver = std::make_shared<LambdaCallback>(
        LambdaHooks().on_train_epoch_end([&](Trainer& trainer, Module&) {
          if (trainer.current_epoch() == 2) trainer.save_checkpoint(checkpoint);
        }));
    torch::manual_seed(1);
    BackboneModule module;
    RandomDataModule data(16, 4, /*shuffle=*/true);
    Trainer trainer(finetuning_options(3), {make_callback(), saver});
    trainer.fit(module, data);
  }
  auto finetuning = make_callback();
  EpochProbe probe;
  torch::manual_seed(99);  // other initial weights: the checkpoint's must replace them
  BackboneModule module;
  RandomDataModule data(16, 4, /*shuffle=*/true);
  Trainer trainer(finetuning_options(5), {finetuning, probe.callback()});
  trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
  // The backbone's group was rebuilt (with Adam's state in it) and goes on with its lr schedule.
  REQUIRE(probe.lrs.size() == 2);
  CHECK(probe.lrs[0].size() == 2);
  CHECK(probe.lrs[0][1] == Approx(0.004));  // epoch 3: 0.001 x 2^2
  CHECK(probe.lrs[1][1] == Approx(0.008));
  CHECK(probe.backbone_trains == std::vector<bool>{true, true});
  CHECK(torch::equal(module.backbone_weight().detach(), uninterrupted_backbone));
  CHECK(torch::equal(module.head->weight.detach(), uninterrupted_head));
  CHECK(torch::equal(module.batch_norm().running_mean, uninterrupted_mean));
}

TEST_CASE("Resuming without the finetuning callback that added a param group says what to do",
          "[callbacks][finetuning]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "last.ckpt").string();
  {
    auto saver = std::make_shared<LambdaCallback>(LambdaHooks().on_train_end(
        [&](Trainer& trainer, Module&) { trainer.save_checkpoint(checkpoint); }));
    BackboneModule module;
    RandomDataModule data(8, 4);
    Trainer trainer(finetuning_options(2),
                    {std::make_shared<BackboneFinetuning>(
                         BackboneFinetuningOptions().unfreeze_backbone_at_epoch(1)),
                     saver});
    trainer.fit(module, data);
  }
  BackboneModule module;
  RandomDataModule data(8, 4);
  Trainer trainer(finetuning_options(3));
  CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path(checkpoint)),
                    Contains("cannot restore the state of optimizer 0") &&
                        Contains("BaseFinetuning") && Contains("must be given again"));
}

TEST_CASE("BackboneFinetuning names the submodules a module without a backbone has",
          "[callbacks][finetuning]") {
  BoringModule module;
  RandomDataModule data(8, 4);
  Trainer trainer(finetuning_options(1), {std::make_shared<BackboneFinetuning>()});
  CHECK_THROWS_WITH(trainer.fit(module, data),
                    Contains("has no submodule `backbone` (it has: layer)") &&
                        Contains("register_module(\"backbone\""));
  // A dotted path reaches into a submodule.
  BackboneModule nested;
  CHECK(&BackboneFinetuning::find_backbone(nested, "backbone.0") == nested.backbone->ptr(0).get());
  CHECK_THROWS_WITH(BackboneFinetuning::find_backbone(nested, "backbone.7"),
                    Contains("the module `backbone` has no submodule `7` (it has: 0, 1, 2)"));
  CHECK_THROWS_WITH(BackboneFinetuning(BackboneFinetuningOptions().unfreeze_backbone_at_epoch(-1)),
                    Contains("unfreeze_backbone_at_epoch must be >= 0"));
}

TEST_CASE("A BaseFinetuning subclass unfreezes as Lightning's example does",
          "[callbacks][finetuning]") {
  // Lightning's docstring example: the feature extractor joins at epoch 1 with the first group's lr
  // divided by initial_denom_lr.
  class FeatureExtractorFreezeUnfreeze : public BaseFinetuning {
   public:
    void freeze_before_training(Module& module) override {
      freeze(dynamic_cast<BackboneModule&>(module).backbone);
    }
    void finetune_function(Module& module, int64_t epoch,
                           torch::optim::Optimizer& optimizer) override {
      if (epoch == 1) {
        unfreeze_and_add_param_group(dynamic_cast<BackboneModule&>(module).backbone, optimizer);
      }
    }
  };
  EpochProbe probe;
  BackboneModule module;
  RandomDataModule data(8, 4);
  Trainer trainer(finetuning_options(2),
                  {std::make_shared<FeatureExtractorFreezeUnfreeze>(), probe.callback()});
  trainer.fit(module, data);
  REQUIRE(probe.lrs.size() == 2);
  REQUIRE(probe.lrs[1].size() == 2);
  CHECK(probe.lrs[1][1] == Approx(kLr / 10.0));
  // The new group holds the Linear's weight and bias (the BatchNorm's were trainable already).
  CHECK(trainer.optimizers()[0]->param_groups()[1].params().size() == 2);

  // Helpers: flatten_modules lists leaves; filter_on_optimizer drops what the optimizer has.
  CHECK(BaseFinetuning::flatten_modules(module).size() == 4);  // Linear, BatchNorm, ReLU, head
  torch::optim::Adam adam(module.head->parameters(), torch::optim::AdamOptions(0.1));
  CHECK(BaseFinetuning::filter_on_optimizer(adam, module.parameters()).size() == 4);
}

TEST_CASE("trainbus fit --callback backbone_finetuning builds one with the options given",
          "[callbacks][finetuning][spec]") {
  const auto callback = std::dynamic_pointer_cast<BackboneFinetuning>(make_callback(
      "backbone_finetuning:unfreeze_backbone_at_epoch=2,backbone=net.1,lambda_factor=1.5,"
      "train_bn=false,backbone_initial_lr=0.001"));
  REQUIRE(callback != nullptr);
  CHECK(callback->options().unfreeze_backbone_at_epoch() == 2);
  CHECK(callback->options().backbone() == "net.1");
  CHECK(callback->options().lambda_func()(7) == 1.5);
  CHECK_FALSE(callback->options().train_bn());
  CHECK(callback->options().backbone_initial_lr() == 0.001);
  CHECK_THROWS_WITH(make_callback("backbone_finetuning:unfreeze_at=2"),
                    Contains("backbone_finetuning has no option 'unfreeze_at'") &&
                        Contains("unfreeze_backbone_at_epoch"));
}
