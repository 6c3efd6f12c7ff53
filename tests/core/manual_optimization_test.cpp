// Manual optimization (Module::automatic_optimization(false)), as Lightning's
// loops/optimization/manual.py, core/optimizer.py (LightningOptimizer) and core/module.py
// (manual_backward, optimizers, lr_schedulers, toggle_optimizer, clip_gradients) do it.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <torch/optim/schedulers/step_lr.h>
#include <torch/optim/sgd.h>

#include "callbacks/gradient_accumulation_scheduler.h"
#include "callbacks/stochastic_weight_averaging.h"
#include "core/reduce_lr_on_plateau.h"
#include "core/trainer.h"
#include "events/all.h"
#include "observers/csv_logger.h"
#include "tests/support/catch.h"
#include "tests/support/log_files.h"
#include "tests/support/recording.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

// Named, not anonymous: a unity build puts this file beside the other tests.
namespace manual_optimization_test {

namespace {

namespace F = torch::nn::functional;

TrainerOptions manual_options(int64_t epochs, int64_t batches) {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(epochs).limit_train_batches(batches).limit_val_batches(0);
  options.enable_model_summary(false);
  return options;
}

/// A GAN in miniature: the generator maps a sample to a fake one, the discriminator tells them
/// apart. Each batch steps the generator, then the discriminator, each with its optimizer
/// toggled, as Lightning's GAN example (docs: model/manual_optimization.rst).
class Gan : public Module {
 public:
  Gan() {
    automatic_optimization(false);
    generator = register_module("generator", torch::nn::Linear(32, 32));
    discriminator = register_module("discriminator", torch::nn::Linear(32, 1));
  }

  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    std::vector<LightningOptimizer> optimizers = this->optimizers();
    LightningOptimizer& opt_g = optimizers.at(0);
    LightningOptimizer& opt_d = optimizers.at(1);

    toggle_optimizer(opt_g);
    discriminator_trainable_in_g_step |= discriminator->weight.requires_grad();
    generator_bias_trainable |= generator->bias.requires_grad();
    const at::Tensor fake = generator->forward(batch.data);
    const at::Tensor d_fake = discriminator->forward(fake);
    const at::Tensor g_loss = F::mse_loss(d_fake, torch::ones_like(d_fake));
    opt_g.zero_grad();
    const at::Tensor d_grad_before = discriminator->weight.grad().defined()
                                         ? discriminator->weight.grad().clone()
                                         : at::Tensor();
    manual_backward(g_loss);
    const at::Tensor d_grad_after = discriminator->weight.grad();
    discriminator_grad_in_g_step |=
        d_grad_before.defined() != d_grad_after.defined() ||
        (d_grad_after.defined() && !torch::equal(d_grad_before, d_grad_after));
    opt_g.step();
    untoggle_optimizer(opt_g);

    toggle_optimizer(opt_d);
    generator_trainable_in_d_step |= generator->weight.requires_grad();
    const at::Tensor d_real = discriminator->forward(batch.data);
    const at::Tensor d_fake_detached = discriminator->forward(fake.detach());
    const at::Tensor d_loss = F::mse_loss(d_real, torch::ones_like(d_real)) +
                              F::mse_loss(d_fake_detached, torch::zeros_like(d_fake_detached));
    opt_d.zero_grad();
    manual_backward(d_loss);
    opt_d.step();
    untoggle_optimizer(opt_d);
    all_trainable_after_untoggle &=
        discriminator->weight.requires_grad() && generator->weight.requires_grad();

    log("g_loss", g_loss.detach(), LogOptions().on_step(true).on_epoch(false));
    return g_loss;
  }

  OptimizerConfig configure_optimizers() override {
    OptimizerConfig config;
    config.optimizers = {std::make_shared<torch::optim::SGD>(generator->parameters(),
                                                             torch::optim::SGDOptions(0.05)),
                         std::make_shared<torch::optim::SGD>(discriminator->parameters(),
                                                             torch::optim::SGDOptions(0.05))};
    return config;
  }

  torch::nn::Linear generator{nullptr};
  torch::nn::Linear discriminator{nullptr};
  bool discriminator_trainable_in_g_step = false;
  bool discriminator_grad_in_g_step = false;
  bool generator_trainable_in_d_step = false;
  bool generator_bias_trainable = false;
  bool all_trainable_after_untoggle = true;
};

at::Tensor copy_of(const at::Tensor& tensor) { return tensor.detach().clone(); }

}  // namespace

TEST_CASE("Manual optimization: a GAN steps two optimizers per batch, toggled in turn",
          "[core][manual]") {
  Trainer trainer(manual_options(1, 4));
  Gan gan;
  // A parameter frozen before fit stays frozen through toggle/untoggle (Lightning keeps each
  // parameter's requires_grad from before toggle_optimizer).
  gan.generator->bias.set_requires_grad(false);
  const at::Tensor generator_bias = copy_of(gan.generator->bias);
  const at::Tensor generator_before = copy_of(gan.generator->weight);
  const at::Tensor discriminator_before = copy_of(gan.discriminator->weight);
  RandomDataModule data;

  trainer.fit(gan, data);

  // Lightning's global_step in manual optimization is optim_step_progress.total.completed
  // (loops/training_epoch_loop.py, global_step): one per optimizer.step(), two per batch here.
  CHECK(trainer.global_step() == 8);
  CHECK_FALSE(gan.discriminator_trainable_in_g_step);
  CHECK_FALSE(gan.discriminator_grad_in_g_step);  // the generator's backward left D alone
  CHECK_FALSE(gan.generator_trainable_in_d_step);
  CHECK_FALSE(gan.generator_bias_trainable);
  CHECK(gan.all_trainable_after_untoggle);
  CHECK_FALSE(gan.generator->bias.requires_grad());
  CHECK(torch::equal(gan.generator->bias, generator_bias));
  CHECK_FALSE(torch::equal(gan.generator->weight, generator_before));
  CHECK_FALSE(torch::equal(gan.discriminator->weight, discriminator_before));
}

namespace {

/// Lightning's test_trainer_model_hook_system_fit with automatic_optimization=False
/// (tests/tests_pytorch/models/test_hooks.py): zero_grad, manual_backward, then step with a
/// closure that only records itself.
class ManualRecordingModule : public RecordingModule {
 public:
  explicit ManualRecordingModule(std::shared_ptr<HookLog> log)
      : RecordingModule(log), log_(std::move(log)) {
    automatic_optimization(false);
  }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    StepOutput out = RecordingModule::training_step(batch, batch_idx);  // "training_step:i"
    LightningOptimizer opt = optimizer();
    opt.zero_grad();
    manual_backward(out.loss());
    opt.step([this] {
      log_->push_back("closure");
      return at::Tensor();
    });
    return out;
  }

 private:
  std::shared_ptr<HookLog> log_;
};

using Hooks = std::vector<std::string>;

void append(Hooks& out, const Hooks& more) { out.insert(out.end(), more.begin(), more.end()); }

Hooks callback_then_module(const std::string& hook) { return {"Callback." + hook, hook}; }

}  // namespace

TEST_CASE("Manual optimization: a step that throws while toggled leaves no parameter frozen",
          "[core][manual]") {
  // Between toggle_optimizer and untoggle_optimizer the discriminator's parameters are frozen;
  // a failed fit must give them back, or a retried fit's toggle takes frozen as their state.
  class ThrowsWhileToggled : public Gan {
   public:
    StepOutput training_step(const Batch& batch, int64_t) override {
      toggle_optimizer(optimizers().at(0));
      (void)batch;
      throw std::runtime_error("training_step failed on purpose");
    }
  };
  ThrowsWhileToggled module;
  RandomDataModule data;
  Trainer trainer(manual_options(1, 2));
  CHECK_THROWS_WITH(trainer.fit(module, data), Catch::Contains("failed on purpose"));
  for (const auto& parameter : module.parameters()) CHECK(parameter.requires_grad());
}

TEST_CASE("Manual optimization: hooks fire in Lightning's order around manual_backward and step",
          "[core][manual][hooks]") {
  auto log = std::make_shared<HookLog>();
  Trainer trainer(manual_options(1, 2), {std::make_shared<RecordingCallback>(log)});
  Hooks published;
  std::vector<events::Subscription> subscriptions;
  subscriptions.push_back(trainer.bus().subscribe<events::BeforeZeroGrad>(
      [&](const events::BeforeZeroGrad&) { published.emplace_back("before_zero_grad"); }));
  subscriptions.push_back(
      trainer.bus().subscribe<events::BeforeBackward>([&](const events::BeforeBackward& e) {
        published.push_back("before_backward:" + std::to_string(e.batch_idx));
      }));
  subscriptions.push_back(
      trainer.bus().subscribe<events::AfterOptimizerStep>([&](const events::AfterOptimizerStep& e) {
        published.push_back("after_optimizer_step:" + std::to_string(e.progress.global_step));
      }));
  ManualRecordingModule module(log);
  RandomDataModule data;

  trainer.fit(module, data);

  // Lightning's _manual_train_batch (test_hooks.py). There HookedModel records a step when it
  // returns, so `training_step` comes after the hooks inside it; RecordingModule records it on
  // entry. No on_before_zero_grad: the module zeroes the gradients itself. `closure` runs
  // inside the optimizer's step, before on_before_optimizer_step, as Precision._wrap_closure.
  // on_after_optimizer_step is a trainbus hook (Lightning has none).
  Hooks expected{"prepare_data",         "Callback.setup:fit",    "setup:fit",   "configure_model",
                 "configure_optimizers", "Callback.on_fit_start", "on_fit_start"};
  append(expected, callback_then_module("on_train_start"));
  append(expected, callback_then_module("on_train_epoch_start"));
  for (int i = 0; i < 2; ++i) {
    const std::string idx = ":" + std::to_string(i);
    append(expected, {"Callback.on_train_batch_start" + idx, "on_train_batch_start" + idx,
                      "training_step" + idx});
    append(expected, callback_then_module("on_before_backward"));
    append(expected, callback_then_module("on_after_backward"));
    append(expected, {"closure"});
    append(expected, callback_then_module("on_before_optimizer_step"));
    append(expected, callback_then_module("on_after_optimizer_step"));
    append(expected, {"Callback.on_train_batch_end" + idx, "on_train_batch_end" + idx});
  }
  append(expected, callback_then_module("on_train_epoch_end"));
  append(expected, callback_then_module("on_train_end"));
  append(expected, callback_then_module("on_fit_end"));
  append(expected, {"Callback.teardown:fit", "teardown:fit"});
  CHECK(*log == expected);
  CHECK(published == Hooks{"before_backward:0", "after_optimizer_step:1", "before_backward:1",
                           "after_optimizer_step:2"});
  // Lightning's saved checkpoint in that test: "global_step": train_batches.
  CHECK(trainer.global_step() == 2);
}

namespace {

/// Steps its one optimizer `steps_per_batch` times per batch, and its scheduler only when the
/// module says so (each epoch end).
class MultiStep : public BoringModule {
 public:
  explicit MultiStep(int steps_per_batch, bool step_scheduler = false)
      : steps_per_batch_(steps_per_batch), step_scheduler_(step_scheduler) {
    automatic_optimization(false);
  }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    LightningOptimizer opt = optimizer();
    for (int i = 0; i < steps_per_batch_; ++i) {
      opt.zero_grad();
      manual_backward(loss(batch));
      opt.step();
    }
    log("step_loss", loss(batch).detach(), LogOptions().on_step(true).on_epoch(false));
    return {};  // nothing: allowed in manual optimization
  }
  OptimizerConfig configure_optimizers() override {
    auto optimizer =
        std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(0.01));
    SchedulerConfig scheduler;
    scheduler.scheduler = std::make_shared<torch::optim::StepLR>(*optimizer, 1, 0.5);
    scheduler.interval = SchedulerInterval::kStep;  // would step every batch in automatic mode
    return OptimizerConfig(optimizer, scheduler);
  }
  void on_train_epoch_end() override {
    if (step_scheduler_) lr_schedulers().at(0)->step();
  }

 private:
  int steps_per_batch_;
  bool step_scheduler_;
};

double lr_of(const Trainer& trainer) {
  return trainer.optimizers().at(0)->param_groups().at(0).options().get_lr();
}

}  // namespace

TEST_CASE(
    "Manual optimization: global_step counts optimizer steps, max_steps stops between "
    "batches",
    "[core][manual]") {
  SECTION("three steps per batch") {
    Trainer trainer(manual_options(2, 4));
    MultiStep module(3);
    RandomDataModule data;
    trainer.fit(module, data);
    CHECK(trainer.global_step() == 24);
    // The trainer never steps the schedulers in manual optimization (Lightning's
    // _update_learning_rates returns when not automatic_optimization), whatever their interval.
    CHECK(lr_of(trainer) == Approx(0.01));
  }
  SECTION("max_steps is checked after each batch, as Lightning's epoch loop `done`") {
    Trainer trainer(manual_options(-1, 4).max_steps(5));
    MultiStep module(2);
    RandomDataModule data;
    trainer.fit(module, data);
    CHECK(trainer.global_step() == 6);  // 2, 4, then 6 >= 5 after the third batch
    CHECK(trainer.fit_progress().total_batch_idx == 3);
  }
  SECTION("the module steps its schedulers itself, through lr_schedulers()") {
    Trainer trainer(manual_options(2, 4));
    MultiStep module(1, /*step_scheduler=*/true);
    RandomDataModule data;
    trainer.fit(module, data);
    // Two step() calls, one at each epoch end; LibTorch's StepLR changes the rate from its
    // second step() on (the first only counts), so the rate halved once. Had the trainer stepped
    // it too (interval kStep: after each of the 8 batches) it would have halved 9 times.
    CHECK(lr_of(trainer) == Approx(0.01 * 0.5));
  }
}

namespace {

/// A ReduceLROnPlateau without a monitor, stepped by the module with its own value, and a StepLR
/// given a monitor, which manual optimization ignores.
class StepsPlateau : public BoringModule {
 public:
  StepsPlateau() { automatic_optimization(false); }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    LightningOptimizer opt = optimizer();
    opt.zero_grad();
    manual_backward(loss(batch));
    opt.step();
    return {};
  }
  OptimizerConfig configure_optimizers() override {
    auto sgd = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1));
    OptimizerConfig config(sgd);
    SchedulerConfig plateau;
    plateau.scheduler = std::make_shared<ReduceLROnPlateau>(
        *sgd, ReduceLROnPlateauOptions().factor(0.5).patience(0));
    SchedulerConfig step;
    step.scheduler = std::make_shared<torch::optim::StepLR>(*sgd, 100, 0.5);
    step.monitor = "train_loss";
    step.strict = false;
    config.lr_schedulers = {plateau, step};
    return config;
  }
  void on_train_epoch_end() override {
    // The same value every epoch: no improvement after the first, so the rate halves.
    static_cast<ReduceLROnPlateau&>(*lr_schedulers().at(0)).step(1.0);
  }
};

}  // namespace

TEST_CASE(
    "Manual optimization: scheduler monitors are ignored, the module steps a plateau "
    "scheduler with its own value",
    "[core][manual]") {
  Trainer trainer(manual_options(3, 2));
  StepsPlateau module;
  RandomDataModule data;
  trainer.fit(module, data);  // Lightning requires no monitor in manual optimization
  REQUIRE(trainer.lr_scheduler_configs().size() == 2);
  // Lightning's _configure_schedulers_manual_opt drops "monitor" and "strict" with a warning.
  CHECK(trainer.lr_scheduler_configs()[1].monitor.empty());
  CHECK(trainer.lr_scheduler_configs()[1].strict);
  CHECK(lr_of(trainer) == Approx(0.1 * 0.5 * 0.5));  // epochs 2 and 3 had no improvement
}

namespace {

/// Calls manual_backward from training_step (automatic mode), or from on_train_batch_end.
class MisplacedBackward : public BoringModule {
 public:
  explicit MisplacedBackward(bool manual) { automatic_optimization(!manual); }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    at::Tensor value = loss(batch);
    if (automatic_optimization()) manual_backward(value);
    return value;
  }
  void on_train_batch_end(const StepOutput&, const Batch& batch, int64_t) override {
    manual_backward(loss(batch));
  }
};

/// Two optimizers, with optimizer() asked for the one.
class TwoOptimizers : public BoringModule {
 public:
  TwoOptimizers() { automatic_optimization(false); }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    optimizer().step();
    return {};
  }
  OptimizerConfig configure_optimizers() override {
    OptimizerConfig config;
    config.optimizers = {
        std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1)),
        std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.1))};
    return config;
  }
};

/// Steps through optimizer() while automatic optimization is on.
class StepsInAutomatic : public BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    optimizer().step();
    return loss(batch);
  }
};

}  // namespace

TEST_CASE("Manual optimization refuses what needs the trainer's own steps, in Lightning's words",
          "[core][manual]") {
  RandomDataModule data;
  SECTION("Trainer gradient_clip_val") {
    Trainer trainer(manual_options(1, 2).gradient_clip_val(0.5));
    MultiStep module(1);
    CHECK_THROWS_WITH(
        trainer.fit(module, data),
        Catch::Contains("Automatic gradient clipping is not supported for manual optimization. "
                        "Remove `Trainer(gradient_clip_val=0.5)`") &&
            Catch::Contains("Module::clip_gradients"));
  }
  SECTION("Trainer accumulate_grad_batches > 1") {
    Trainer trainer(manual_options(1, 2).accumulate_grad_batches(3));
    MultiStep module(1);
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("Automatic gradient accumulation is not supported for "
                                      "manual optimization. Remove "
                                      "`Trainer(accumulate_grad_batches=3)`"));
  }
  SECTION("accumulation set during the fit (GradientAccumulationScheduler)") {
    // Lightning's GradientAccumulationScheduler.on_train_start refuses a manual module whatever
    // the schedule: here the factor above 1 comes only at epoch 10, and no batch may train first.
    Trainer trainer(manual_options(1, 2),
                    {std::make_shared<callbacks::GradientAccumulationScheduler>(
                        std::map<int64_t, int64_t>{{0, 1}, {10, 4}})});
    MultiStep module(1);
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("Automatic gradient accumulation and the "
                                      "`GradientAccumulationScheduler` is not supported for "
                                      "manual optimization"));
    CHECK(trainer.global_step() == 0);
  }
  SECTION("StochasticWeightAveraging (its averaging epoch skips only the trainer's steps)") {
    Trainer trainer(
        manual_options(1, 2),
        {std::make_shared<callbacks::StochasticWeightAveraging>(
            callbacks::StochasticWeightAveragingOptions().swa_lrs(std::vector<double>{0.05}))});
    MultiStep module(1);
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("StochasticWeightAveraging does not support manual "
                                      "optimization"));
  }
  SECTION("manual_backward with automatic optimization") {
    Trainer trainer(manual_options(1, 2));
    MisplacedBackward module(/*manual=*/false);
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("to use manual_backward, please disable automatic "
                                      "optimization"));
  }
  SECTION("manual_backward outside training_step") {
    Trainer trainer(manual_options(1, 2));
    MisplacedBackward module(/*manual=*/true);
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("manual_backward is called from training_step") &&
                          Catch::Contains("it was called in train_batch_end"));
  }
  SECTION("manual_backward without a trainer") {
    MultiStep module(1);
    CHECK_THROWS_WITH(module.manual_backward(torch::ones({1}, torch::requires_grad())),
                      Catch::Contains("not attached to a Trainer"));
  }
  SECTION("optimizer() with two optimizers") {
    Trainer trainer(manual_options(1, 2));
    TwoOptimizers module;
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("configure_optimizers() returned 2: use optimizers()[i]"));
  }
  SECTION("step() with automatic optimization") {
    Trainer trainer(manual_options(1, 2));
    StepsInAutomatic module;
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("optimizer().step() is for manual optimization"));
  }
}

namespace {

/// Clips its gradients by value in manual optimization and notes the largest gradient the
/// optimizer then sees.
class ClipsByValue : public BoringModule {
 public:
  ClipsByValue() { automatic_optimization(false); }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    LightningOptimizer opt = optimizer();
    opt.zero_grad();
    manual_backward(loss(batch) * 1000.0);
    clip_gradients(opt, 1e-3, GradientClipAlgorithm::kValue);
    opt.step();
    return {};
  }
  void on_before_optimizer_step(torch::optim::Optimizer&) override {
    for (const auto& parameter : parameters())
      largest_gradient = std::max(largest_gradient, parameter.grad().abs().max().item<double>());
  }
  double largest_gradient = 0.0;
};

/// Automatic optimization, clipping itself with another value than the trainer's.
class ClipsAgainstTrainer : public BoringModule {
 public:
  void on_before_optimizer_step(torch::optim::Optimizer& optimizer) override {
    clip_gradients(optimizer, 0.1);
  }
};

}  // namespace

TEST_CASE("Module::clip_gradients clips in manual optimization, a second value is refused",
          "[core][manual]") {
  RandomDataModule data;
  SECTION("by value, between manual_backward and step") {
    Trainer trainer(manual_options(1, 3));
    ClipsByValue module;
    trainer.fit(module, data);
    CHECK(module.largest_gradient > 0.0);
    CHECK(module.largest_gradient == Approx(1e-3));  // clipped (float32's 1e-3)
  }
  SECTION("against the trainer's gradient_clip_val (Lightning's message)") {
    Trainer trainer(manual_options(1, 2).gradient_clip_val(0.5));
    ClipsAgainstTrainer module;
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Catch::Contains("You have set `Trainer(gradient_clip_val=0.5)` and have "
                                      "passed `clip_gradients(gradient_clip_val=0.1)`. Please use "
                                      "only one of them."));
  }
}

namespace {

/// Saves a checkpoint at the end of one epoch.
class SaveAtEpochEnd : public Callback {
 public:
  SaveAtEpochEnd(std::string path, int64_t epoch) : path_(std::move(path)), epoch_(epoch) {}
  void on_train_epoch_end(Trainer& trainer, Module&) override {
    if (trainer.current_epoch() == epoch_) trainer.save_checkpoint(path_);
  }

 private:
  std::string path_;
  int64_t epoch_;
};

}  // namespace

TEST_CASE("Manual optimization resumes: global_step and the optimizer's state survive",
          "[core][manual][checkpoint]") {
  TempDir dir;
  const std::string path = dir.file("epoch0.ckpt");
  RandomDataModule data;

  MultiStep uninterrupted(2);
  Trainer first(manual_options(2, 4), {std::make_shared<SaveAtEpochEnd>(path, 0)});
  first.fit(uninterrupted, data);
  REQUIRE(first.global_step() == 16);

  MultiStep resumed_module(2);  // other initial weights: the checkpoint's replace them
  Trainer resumed(manual_options(2, 4));
  resumed.fit(resumed_module, data, FitOptions().ckpt_path(path));
  CHECK(resumed.global_step() == 16);
  // Adam's moments came back with the checkpoint: the resumed run ends where the uninterrupted
  // one did.
  for (const auto& item : uninterrupted.named_parameters())
    CHECK(torch::allclose(item.value(), resumed_module.named_parameters()[item.key()]));
}

TEST_CASE("Manual optimization: loggers count batches, not optimizer steps, as Lightning's",
          "[core][manual][csv]") {
  // Lightning logs a batch's row at _batches_that_stepped, which counts batches
  // (training_epoch_loop.on_advance_end adds one per batch, whatever the optimizer steps), and
  // log_every_n_steps counts them too: with two steps a batch, rows at 0, 1, 2.
  const int64_t every = GENERATE(1, 2);
  CAPTURE(every);
  TempDir dir;
  Trainer trainer(manual_options(1, 3).log_every_n_steps(every));
  auto csv = std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir(dir.file("run")).log_every_n_steps(every));
  trainer.add_observer(csv);
  MultiStep module(2);
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.global_step() == 6);
  CHECK(trainer.batches_that_stepped() == 3);

  const std::string csv_text = read_text_file(csv->metrics_file());
  if (every == 1) {
    CHECK(csv_text.find("\n0,0,") != std::string::npos);
    CHECK(csv_text.find("\n0,1,") != std::string::npos);
    CHECK(csv_text.find("\n0,2,") != std::string::npos);
  } else {
    // (batches_that_stepped + 1) % 2 == 0: the second batch only. Counting optimizer steps
    // (0, 2, 4 before each batch) would never write one.
    CHECK(csv_text.find("\n0,1,") != std::string::npos);
    CHECK(csv_text.find("\n0,0,") == std::string::npos);
  }
}

}  // namespace manual_optimization_test
