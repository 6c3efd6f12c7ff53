// LR scheduler configs as Lightning's lr_scheduler_config: interval and frequency counted as
// Lightning counts them, ReduceLROnPlateau (which LibTorch 1.13 lacks) stepped with its monitor
// after validation, `strict`, and its state across a resume.
#include <memory>
#include <vector>

#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "core/reduce_lr_on_plateau.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::TempDir;

namespace {

double lr_of(const torch::optim::Optimizer& optimizer, std::size_t group = 0) {
  return optimizer.param_groups().at(group).options().get_lr();
}

// Halves the lr at every step; counts its steps.
class Halving : public torch::optim::LRScheduler {
 public:
  using LRScheduler::LRScheduler;
  int steps = 0;

 protected:
  std::vector<double> get_lrs() override {
    ++steps;
    std::vector<double> lrs = get_current_lrs();
    for (double& lr : lrs) lr *= 0.5;
    return lrs;
  }
};

// Logs `val_metric` from a scripted sequence, one value per validation, and configures SGD(lr 1)
// with the scheduler `make_scheduler` builds.
class PlateauModule : public testing::BoringModule {
 public:
  std::vector<double> metric_per_validation;
  SchedulerInterval interval = SchedulerInterval::kEpoch;
  std::string monitor = "val_metric";
  bool strict = true;
  ReduceLROnPlateauOptions plateau_options = ReduceLROnPlateauOptions().factor(0.5).patience(1);
  std::vector<double> lr_at_epoch_start;

  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    const std::size_t index = std::min(validations_, metric_per_validation.size() - 1);
    log("val_metric", metric_per_validation[index]);
    return {};
  }
  void on_validation_epoch_end() override { ++validations_; }
  void on_train_epoch_start() override {
    lr_at_epoch_start.push_back(lr_of(*trainer().optimizers().at(0)));
  }
  OptimizerConfig configure_optimizers() override {
    auto sgd = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(1.0));
    SchedulerConfig config;
    config.scheduler = std::make_shared<ReduceLROnPlateau>(*sgd, plateau_options);
    config.interval = interval;
    config.monitor = monitor;
    config.strict = strict;
    return OptimizerConfig(sgd, config);
  }
  std::size_t validations_ = 0;
};

}  // namespace

TEST_CASE("ReduceLROnPlateau decides as PyTorch's on a crafted metric sequence",
          "[core][scheduler][plateau]") {
  torch::nn::Linear layer(2, 2);
  torch::optim::SGD sgd(layer->parameters(), torch::optim::SGDOptions(1.0));
  SECTION("min, patience 2: the third step without improvement lowers the lr") {
    ReduceLROnPlateau plateau(sgd, ReduceLROnPlateauOptions().factor(0.5).patience(2));
    std::vector<double> lrs;
    for (double metric : {1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85}) {
      plateau.step(metric);
      lrs.push_back(lr_of(sgd));
    }
    // torch.optim.lr_scheduler.ReduceLROnPlateau: bad steps 1, 2, 3 > patience -> lr x 0.5.
    CHECK(lrs == std::vector<double>{1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25});
    CHECK(plateau.best() == 0.8);
    CHECK(plateau.last_epoch() == 9);
  }
  SECTION("a cooldown ignores the bad steps that follow a reduction") {
    ReduceLROnPlateau plateau(sgd, ReduceLROnPlateauOptions().factor(0.5).patience(0).cooldown(2));
    std::vector<double> lrs;
    for (double metric : {1.0, 2.0, 2.0, 2.0, 2.0}) {
      plateau.step(metric);
      lrs.push_back(lr_of(sgd));
    }
    CHECK(lrs == std::vector<double>{1, 0.5, 0.5, 0.5, 0.25});
  }
  SECTION("max with an absolute threshold, and min_lr bounds the lr") {
    ReduceLROnPlateau plateau(sgd, ReduceLROnPlateauOptions()
                                       .mode("max")
                                       .threshold_mode("abs")
                                       .threshold(0.1)
                                       .factor(0.1)
                                       .patience(0)
                                       .min_lr(0.05));
    plateau.step(0.5);
    plateau.step(0.55);  // not 0.1 better than 0.5: bad
    CHECK(lr_of(sgd) == Approx(0.1));
    plateau.step(0.7);  // better
    CHECK(lr_of(sgd) == Approx(0.1));
    plateau.step(0.7);
    CHECK(lr_of(sgd) == Approx(0.05));  // max(0.1 x 0.1, min_lr)
    plateau.step(0.7);
    CHECK(lr_of(sgd) == Approx(0.05));  // below eps of a change: left as it is
  }
  SECTION("a param group added later (BaseFinetuning) is covered by min_lr, as PyTorch 2's") {
    torch::nn::Linear other(2, 2);
    ReduceLROnPlateau plateau(sgd, ReduceLROnPlateauOptions().factor(0.5).patience(0));
    sgd.add_param_group(torch::optim::OptimizerParamGroup(
        other->parameters(), std::make_unique<torch::optim::SGDOptions>(0.4)));
    plateau.step(1.0);
    plateau.step(2.0);  // bad: both groups halved
    CHECK(lr_of(sgd, 0) == 0.5);
    CHECK(lr_of(sgd, 1) == 0.2);
  }
  SECTION("per-group min_lrs cannot cover an added group: named") {
    torch::nn::Linear other(2, 2);
    ReduceLROnPlateau plateau(sgd,
                              ReduceLROnPlateauOptions().factor(0.5).patience(0).min_lrs({0.01}));
    sgd.add_param_group(torch::optim::OptimizerParamGroup(
        other->parameters(), std::make_unique<torch::optim::SGDOptions>(0.4)));
    plateau.step(1.0);
    CHECK_THROWS_WITH(plateau.step(2.0), Catch::Contains("2 param groups but min_lrs has 1"));
  }
  SECTION("bad options are named") {
    CHECK_THROWS_WITH(ReduceLROnPlateau(sgd, ReduceLROnPlateauOptions().mode("lowest")),
                      Catch::Contains("mode must be \"min\" or \"max\""));
    CHECK_THROWS_WITH(ReduceLROnPlateau(sgd, ReduceLROnPlateauOptions().factor(1.0)),
                      Catch::Contains("factor must be < 1.0"));
    CHECK_THROWS_WITH(ReduceLROnPlateau(sgd, ReduceLROnPlateauOptions().min_lrs({0.1, 0.2})),
                      Catch::Contains("expected 1 min_lrs"));
  }
}

TEST_CASE("In a fit, an epoch-interval ReduceLROnPlateau steps on its monitor after validation",
          "[core][scheduler][plateau]") {
  PlateauModule module;
  module.metric_per_validation = {1.0, 1.0, 1.0, 0.5, 0.5};
  Trainer trainer(testing::trainer_options()
                      .max_epochs(5)
                      .limit_train_batches(2)
                      .limit_val_batches(1)
                      .num_sanity_val_steps(0));
  testing::RandomDataModule data;
  trainer.fit(module, data);
  // Epoch 0 sets best 1.0; epochs 1 and 2 are bad: the 2nd bad one (> patience 1) halves the lr
  // after epoch 2's validation, so epoch 3 starts at 0.5.
  CHECK(module.lr_at_epoch_start == std::vector<double>{1, 1, 1, 0.5, 0.5});
}

TEST_CASE("A ReduceLROnPlateau without a monitor, or whose monitor is missing, is named",
          "[core][scheduler][plateau]") {
  Trainer trainer(
      testing::trainer_options().max_epochs(2).limit_train_batches(2).limit_val_batches(1));
  testing::RandomDataModule data;
  SECTION("no monitor: refused before training, as Lightning does") {
    PlateauModule module;
    module.metric_per_validation = {1.0};
    module.monitor = "";
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("must include a monitor when a `ReduceLROnPlateau`"));
  }
  SECTION("strict: Lightning's error names the metrics there are") {
    PlateauModule module;
    module.metric_per_validation = {1.0};
    module.monitor = "val_los";
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("ReduceLROnPlateau conditioned on metric val_los which is "
                                      "not available. Available metrics are: [val_metric]"));
  }
  SECTION("not strict: skipped") {
    PlateauModule module;
    module.metric_per_validation = {1.0};
    module.monitor = "val_los";
    module.strict = false;
    trainer.fit(module, data);
    CHECK(module.lr_at_epoch_start == std::vector<double>{1, 1});
  }
}

TEST_CASE("A step-interval scheduler's frequency counts the batches of each epoch, as Lightning's",
          "[core][scheduler]") {
  // Lightning 2.x training_epoch_loop._update_learning_rates: current_idx = batch_idx + 1 for
  // interval "step", so with 3 batches an epoch and frequency 2 it steps after batch 2 of every
  // epoch: twice in 2 epochs (counting global_step, 2, 4 and 6, would step three times).
  class Scheduled : public testing::BoringModule {
   public:
    std::shared_ptr<Halving> scheduler;
    OptimizerConfig configure_optimizers() override {
      auto sgd = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(1.0));
      scheduler = std::make_shared<Halving>(*sgd);
      return OptimizerConfig(sgd, SchedulerConfig{scheduler, SchedulerInterval::kStep, 2});
    }
  };
  Scheduled module;
  Trainer trainer(
      testing::trainer_options().max_epochs(2).limit_train_batches(3).limit_val_batches(0));
  testing::RandomDataModule data;
  trainer.fit(module, data);
  CHECK(module.scheduler->steps == 2);
  CHECK(lr_of(*trainer.optimizers().at(0)) == 0.25);
}

TEST_CASE("ReduceLROnPlateau's best and bad steps survive a resume", "[core][scheduler][plateau]") {
  TempDir dir;
  // Saved in the middle of epoch 2, after the plateau steps of epochs 0 and 1. (From a checkpoint
  // saved at an epoch's end, that epoch's plateau step is skipped on resume, as Lightning's
  // fit_loop skips it while restarting.)
  const std::string path = dir.file("epoch2.ckpt");
  class SaveInEpoch2 : public Callback {
   public:
    explicit SaveInEpoch2(std::string path) : path_(std::move(path)) {}
    void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                            int64_t batch_idx) override {
      if (trainer.current_epoch() == 2 && batch_idx == 0) trainer.save_checkpoint(path_);
    }
    std::string path_;
  };
  auto options = [] {
    return testing::trainer_options()
        .max_epochs(4)
        .limit_train_batches(2)
        .limit_val_batches(1)
        .num_sanity_val_steps(0);
  };
  PlateauModule live;
  live.metric_per_validation = {1.0, 0.9, 0.95, 0.95};
  Trainer uninterrupted(options(), {std::make_shared<SaveInEpoch2>(path)});
  testing::RandomDataModule data;
  uninterrupted.fit(live, data);

  PlateauModule resumed_module;
  resumed_module.metric_per_validation = {0.95};  // epochs 2 and 3
  Trainer resumed(options());
  resumed.fit(resumed_module, data, FitOptions().ckpt_path(path));
  const auto& plateau =
      dynamic_cast<const ReduceLROnPlateau&>(*resumed.lr_scheduler_configs().at(0).scheduler);
  const auto& live_plateau =
      dynamic_cast<const ReduceLROnPlateau&>(*uninterrupted.lr_scheduler_configs().at(0).scheduler);
  CHECK(plateau.best() == live_plateau.best());
  CHECK(plateau.num_bad_epochs() == live_plateau.num_bad_epochs());
  CHECK(plateau.last_epoch() == live_plateau.last_epoch());
  CHECK(lr_of(*resumed.optimizers().at(0)) == lr_of(*uninterrupted.optimizers().at(0)));
}
