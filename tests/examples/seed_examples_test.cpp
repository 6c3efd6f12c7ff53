// Each custom callback of the callback guide, doing its job.
#include <filesystem>
#include <sstream>

#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <torch/serialize.h>
#include "tests/support/catch.h"

#include "core/trainer.h"
#include "examples/seed/conditional_callback.h"
#include "examples/seed/custom_checkpoint.h"
#include "examples/seed/freeze_unfreeze.h"
#include "examples/seed/gradient_monitor.h"
#include "examples/seed/lr_finder.h"
#include "examples/seed/metrics_logger.h"
#include "examples/seed/multi_stage_training.h"
#include "examples/seed/prediction_saver.h"
#include "examples/seed/stateful_callback.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::examples;
using namespace trainbus::testing;

namespace {

TrainerOptions epochs(int64_t max_epochs, int64_t val_batches = 0) {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(max_epochs);
  options.limit_train_batches(4);
  options.limit_val_batches(val_batches);
  return options;
}

/// A BoringModule whose first layer is the `backbone`, as in the guide's FreezeUnfreeze.
class WithBackbone : public BoringModule {
 public:
  WithBackbone() { backbone = register_module("backbone", torch::nn::Linear(32, 32)); }
  at::Tensor loss_of(const Batch& batch) {
    const at::Tensor out = layer->forward(backbone->forward(batch.data));
    return (out - 1).pow(2).mean();
  }
  StepOutput training_step(const Batch& batch, int64_t) override { return loss_of(batch); }
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-2));
  }
  torch::nn::Linear backbone{nullptr};
};

}  // namespace

TEST_CASE("MetricsLogger keeps callback_metrics after each validation", "[examples]") {
  std::ostringstream out;
  auto logger = std::make_shared<MetricsLogger>(out);
  Trainer trainer(epochs(2, 2), {logger});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  // The sanity check and one validation per epoch, as in Lightning.
  REQUIRE(logger->metrics.size() == 3);
  CHECK(logger->metrics.back().count("val_loss") == 1);
  CHECK(out.str().find("Validation metrics: {'val_loss': ") != std::string::npos);
}

TEST_CASE("GradientMonitor logs the gradient norm of every parameter", "[examples]") {
  Trainer trainer(epochs(1), {std::make_shared<GradientMonitor>()});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(trainer.logged_metrics().at("grad_norm/layer.weight") > 0.0);
  CHECK(trainer.logged_metrics().at("grad_norm/layer.bias") > 0.0);
}

TEST_CASE("CustomCheckpoint saves every 5 epochs, and the checkpoints resume", "[examples]") {
  TempDir dir;
  std::ostringstream out;
  Trainer trainer(epochs(7), {std::make_shared<CustomCheckpoint>(dir.path().string(), out)});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(std::filesystem::exists(dir.file("custom-0.ckpt")));
  CHECK(std::filesystem::exists(dir.file("custom-5.ckpt")));
  CHECK_FALSE(std::filesystem::exists(dir.file("custom-1.ckpt")));
  CHECK(out.str() == "Saved checkpoint: " + dir.file("custom-0.ckpt") +
                         "\nSaved checkpoint: " + dir.file("custom-5.ckpt") + "\n");
  Trainer resumed(epochs(7));
  BoringModule fresh;
  resumed.fit(fresh, data, FitOptions().ckpt_path(dir.file("custom-5.ckpt")));
  CHECK(resumed.global_step() == 7 * 4);
}

TEST_CASE("FreezeUnfreeze keeps the backbone fixed until its epoch, then trains it", "[examples]") {
  auto snapshot = [](torch::nn::Linear& l) { return l->weight.detach().clone(); };
  class Watch : public Callback {
   public:
    explicit Watch(std::vector<at::Tensor>& out) : out_(out) {}
    void on_train_epoch_end(Trainer&, Module& module) override {
      out_.push_back(
          module.named_children()["backbone"]->named_parameters()["weight"].detach().clone());
    }
    std::vector<at::Tensor>& out_;
  };
  std::vector<at::Tensor> weights;
  Trainer trainer(epochs(4),
                  {std::make_shared<FreezeUnfreeze>(2), std::make_shared<Watch>(weights)});
  WithBackbone module;
  const at::Tensor initial = snapshot(module.backbone);
  RandomDataModule data;
  trainer.fit(module, data);
  REQUIRE(weights.size() == 4);
  CHECK(weights[0].equal(initial));
  CHECK(weights[1].equal(initial));
  CHECK_FALSE(weights[2].equal(initial));
  CHECK(module.backbone->weight.requires_grad());

  class NoBackbone : public BoringModule {};
  Trainer failing(epochs(1), {std::make_shared<FreezeUnfreeze>(2)});
  NoBackbone plain;
  CHECK_THROWS_WITH(failing.fit(plain, data),
                    Catch::Contains("needs a submodule registered as \"backbone\""));
}

TEST_CASE("LRFinder sweeps the learning rate exponentially, records losses, and stops",
          "[examples]") {
  TempDir dir;
  auto finder = std::make_shared<LRFinder>(1e-5, 1e-1, 10, dir.file("lr_finder.csv"));
  TrainerOptions options = epochs(3);
  options.limit_train_batches(50);
  Trainer trainer(options, {finder});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  REQUIRE(finder->lrs.size() == 10);
  CHECK(finder->losses.size() == 10);
  CHECK(finder->lrs.front() == Approx(1e-5));
  CHECK(finder->lrs[5] == Approx(1e-3));  // 1e-5 * (1e4)^(5/10)
  CHECK(trainer.global_step() == 11);     // stopped after batch 10 of the first epoch
  CHECK(trainer.optimizers()[0]->param_groups()[0].options().get_lr() ==
        Approx(finder->lrs.back()));
  CHECK(std::filesystem::file_size(dir.file("lr_finder.csv")) > 0);
}

TEST_CASE("PredictionSaver saves every predict batch's output", "[examples]") {
  TempDir dir;
  std::ostringstream out;
  auto saver = std::make_shared<PredictionSaver>(dir.file("predictions.pt"), out);
  Trainer trainer(testing::trainer_options(), {saver});
  BoringModule module;
  RandomDataModule data(64, 16);
  const std::vector<at::Tensor> predictions = trainer.predict(module, data);
  std::vector<at::Tensor> loaded;
  torch::load(loaded, dir.file("predictions.pt"));
  REQUIRE(loaded.size() == 4);
  for (size_t i = 0; i < loaded.size(); ++i) CHECK(loaded[i].equal(predictions[i]));
  CHECK(out.str() == "Predictions saved to " + dir.file("predictions.pt") + "\n");
}

TEST_CASE("StatefulCallback's counter survives a checkpoint under its state_key", "[examples]") {
  TempDir dir;
  class SaveAtEnd : public Callback {
   public:
    explicit SaveAtEnd(std::string path) : path_(std::move(path)) {}
    void on_train_end(Trainer& trainer, Module&) override { trainer.save_checkpoint(path_); }
    std::string path_;
  };
  auto counter = std::make_shared<StatefulCallback>();
  Trainer trainer(epochs(2), {counter, std::make_shared<SaveAtEnd>(dir.file("last.ckpt"))});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(counter->counter == 8);

  auto restored = std::make_shared<StatefulCallback>();
  Trainer resumed(epochs(3), {restored});
  BoringModule fresh;
  resumed.fit(fresh, data, FitOptions().ckpt_path(dir.file("last.ckpt")));
  CHECK(restored->counter == 12);  // 8 restored + 4 from the third epoch
  CHECK(restored->state_key() == "my_stateful_callback");
}

TEST_CASE("ConditionalCallback acts only from its epoch on", "[examples]") {
  auto conditional = std::make_shared<ConditionalCallback>(2);
  Trainer trainer(epochs(5), {conditional});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(conditional->active_epochs == std::vector<int64_t>{2, 3, 4});
}

TEST_CASE("MultiStageTraining divides every learning rate by 10 at each stage", "[examples]") {
  std::ostringstream out;
  auto stages = std::make_shared<MultiStageTraining>(std::vector<int64_t>{1, 3}, out);
  Trainer trainer(epochs(4), {stages});
  BoringModule module;  // SGD, lr 0.1
  RandomDataModule data;
  trainer.fit(module, data);
  CHECK(stages->current_stage == 2);
  CHECK(trainer.optimizers()[0]->param_groups()[0].options().get_lr() == Approx(0.001));
  CHECK(out.str() == "Entering stage 1\nEntering stage 2\n");
}
