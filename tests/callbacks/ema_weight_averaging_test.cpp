// EMAWeightAveraging: the average PyTorch's AveragedModel with an EMA computes, when it updates,
// validation on the averaged weights, the module left with them, and an exact resume.
#include "callbacks/ema_weight_averaging.h"

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>
#include <torch/utils.h>

#include "tests/support/catch.h"

#include "callbacks/lambda_callback.h"
#include "checkpoint/format.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

TrainerOptions options_for(int64_t epochs) {
  return testing::trainer_options()
      .max_epochs(epochs)
      .num_sanity_val_steps(0)
      .enable_model_summary(false)
      .seed(7);
}

/// Copies of the layer's weight after every optimizer step (listed after the EMA callback).
std::shared_ptr<LambdaCallback> weight_recorder(std::vector<at::Tensor>& weights) {
  return std::make_shared<LambdaCallback>(LambdaHooks().on_train_batch_end(
      [&](Trainer&, Module& module, const StepOutput&, const Batch&, int64_t) {
        weights.push_back(dynamic_cast<BoringModule&>(module).layer->weight.detach().clone());
      }));
}

/// Validation records the weight it runs with.
class ValidationProbe : public BoringModule {
 public:
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    seen.push_back(layer->weight.detach().clone());
    return BoringModule::validation_step(batch, batch_idx);
  }
  std::vector<at::Tensor> seen;
};

}  // namespace

TEST_CASE("EMAWeightAveraging averages as AveragedModel with an EMA and leaves it in the module",
          "[callbacks][ema]") {
  const double decay = 0.9;
  auto ema = std::make_shared<EMAWeightAveraging>(EMAWeightAveragingOptions().decay(decay));
  std::vector<at::Tensor> weights;
  ValidationProbe module;
  RandomDataModule data(4, 1);
  Trainer trainer(options_for(1), {ema, weight_recorder(weights)});
  trainer.fit(module, data);

  REQUIRE(weights.size() == 4);
  at::Tensor expected = weights[0];  // the first update takes the weights
  for (std::size_t i = 1; i < weights.size(); ++i)
    expected = decay * expected + (1 - decay) * weights[i];
  CHECK(ema->num_averaged() == 4);
  CHECK(torch::allclose(ema->average()[0], expected));
  // Validation ran on the average, then training's weights came back; at the end the module keeps
  // the average.
  REQUIRE(module.seen.size() == 4);
  CHECK(torch::allclose(module.seen[0], expected));
  CHECK(torch::allclose(module.layer->weight.detach(), expected));
  CHECK_FALSE(torch::allclose(expected, weights.back()));
}

TEST_CASE("EMAWeightAveraging gives training its own weights back after validation",
          "[callbacks][ema]") {
  auto ema = std::make_shared<EMAWeightAveraging>(EMAWeightAveragingOptions().decay(0.5));
  std::vector<at::Tensor> weights, at_epoch_start;
  auto probe = std::make_shared<LambdaCallback>(
      LambdaHooks().on_train_epoch_start([&](Trainer&, Module& module) {
        at_epoch_start.push_back(
            dynamic_cast<BoringModule&>(module).layer->weight.detach().clone());
      }));
  ValidationProbe module;
  RandomDataModule data(4, 1);
  Trainer trainer(testing::trainer_options().max_epochs(2).enable_model_summary(false),
                  {ema, weight_recorder(weights), probe});
  trainer.fit(module, data);
  REQUIRE(weights.size() == 8);
  REQUIRE(at_epoch_start.size() == 2);
  // Epoch 1 starts from the weights of epoch 0's last step, not from the average validated on.
  CHECK(torch::equal(at_epoch_start[1], weights[3]));
  // The sanity check ran before any update: on the weights themselves.
  REQUIRE(module.seen.size() == 2 + 4 + 4);
  CHECK(torch::equal(module.seen[0], at_epoch_start[0]));
  CHECK_FALSE(torch::equal(module.seen[2], weights[3]));  // epoch 0's validation: the average
}

TEST_CASE("EMAWeightAveraging updates on its schedule", "[callbacks][ema]") {
  BoringModule module;
  RandomDataModule data(6, 1);
  SECTION("every 2nd step from step 2") {
    auto ema = std::make_shared<EMAWeightAveraging>(
        EMAWeightAveragingOptions().update_every_n_steps(2).update_starting_at_step(2));
    Trainer trainer(options_for(2).limit_val_batches(0), {ema});
    trainer.fit(module, data);
    CHECK(ema->num_averaged() == 5);  // steps 2, 4, 6, 8, 10 of 0..11
  }
  SECTION("once per optimizer step under accumulation, plus epoch ends from epoch 1") {
    auto ema = std::make_shared<EMAWeightAveraging>(
        EMAWeightAveragingOptions().update_starting_at_epoch(1));
    Trainer trainer(options_for(2).limit_val_batches(0).accumulate_grad_batches(2), {ema});
    trainer.fit(module, data);
    // As Lightning's EMAWeightAveraging.should_update: the 6 steps (3 per epoch; the step updates
    // do not wait for update_starting_at_epoch), and the end of epoch 1.
    CHECK(ema->num_averaged() == 7);
  }
  SECTION("no update in the run: the module keeps what it trained") {
    auto ema = std::make_shared<EMAWeightAveraging>(
        EMAWeightAveragingOptions().update_starting_at_step(100));
    std::vector<at::Tensor> weights;
    Trainer trainer(options_for(1), {ema, weight_recorder(weights)});
    trainer.fit(module, data);
    CHECK(ema->num_averaged() == 0);
    CHECK(torch::equal(module.layer->weight.detach(), weights.back()));
  }
  CHECK_THROWS_WITH(EMAWeightAveraging(EMAWeightAveragingOptions().decay(1.5)),
                    Contains("decay must be in [0, 1], got 1.5"));
  CHECK_THROWS_WITH(EMAWeightAveraging(EMAWeightAveragingOptions().update_every_n_steps(0)),
                    Contains("update_every_n_steps must be >= 1"));
}

/// EMAWeightAveraging as it saved before the average moved into the checkpoint's state_dict: the
/// average in its own state, the trained weights as the model's.
class EarlierLayoutEMA : public EMAWeightAveraging {
 public:
  using EMAWeightAveraging::EMAWeightAveraging;
  StateDict state_dict() const override {
    StateDict state = EMAWeightAveraging::state_dict();
    c10::List<at::Tensor> tensors;
    for (const auto& tensor : average()) tensors.push_back(tensor);
    state.insert("average", tensors);
    return state;
  }
  std::string state_key() const override { return "trainbus::callbacks::EMAWeightAveraging"; }
  void on_save_checkpoint(Trainer&, Module&, CheckpointData&) override {}
};

TEST_CASE("EMAWeightAveraging checkpoints hold the average as the model, as Lightning's",
          "[callbacks][ema]") {
  // Lightning's WeightAveraging.on_save_checkpoint: checkpoint["state_dict"] is the average
  // model's, checkpoint["current_model_state"] the weights being trained; so the best checkpoint
  // by a validation score (of the average) holds the model that was scored.
  TempDir dir;
  const std::string path = (dir.path() / "saved.ckpt").string();
  auto ema = std::make_shared<EMAWeightAveraging>(EMAWeightAveragingOptions().decay(0.8));
  at::Tensor trained;
  at::Tensor averaged;
  const auto save = [&](Trainer& trainer, Module& module) {
    trainer.save_checkpoint(path);
    trained = dynamic_cast<BoringModule&>(module).layer->weight.detach().clone();
    averaged = ema->average()[0].clone();
  };
  std::vector<std::shared_ptr<Callback>> callbacks;
  std::vector<at::Tensor> weights;
  SECTION("saved after training ended, the average copied into the module") {
    // As ModelCheckpoint's last at on_train_end, which runs after every other callback.
    callbacks = {
        ema, weight_recorder(weights),
        std::make_shared<LambdaCallback>(LambdaHooks().on_train_end([&](Trainer& trainer, Module&) {
          trainer.save_checkpoint(path);
          trained = weights.back().clone();
          averaged = ema->average()[0].clone();
        }))};
  }
  SECTION("saved between steps") {
    callbacks = {ema, std::make_shared<LambdaCallback>(LambdaHooks().on_train_epoch_end(save))};
  }
  SECTION("saved during validation, the average swapped into the module") {
    // Listed first, so that its hook runs before the average is swapped back out.
    callbacks = {std::make_shared<LambdaCallback>(
                     LambdaHooks().on_validation_epoch_end([&](Trainer& trainer, Module& module) {
                       trainer.save_checkpoint(path);
                       // The module holds the average; the callback holds training's weights.
                       averaged =
                           dynamic_cast<BoringModule&>(module).layer->weight.detach().clone();
                       trained = ema->average()[0].clone();
                     })),
                 ema};
  }
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(options_for(1), callbacks);
  trainer.fit(module, data);
  REQUIRE(trained.defined());
  REQUIRE_FALSE(torch::equal(trained, averaged));

  const checkpoint::LoadedCheckpoint loaded = checkpoint::read_checkpoint(path);
  CHECK(torch::equal(loaded.data.state_dict.at("layer.weight").toTensor(), averaged));
  const StateDict current = loaded.data.extra.dict_at(EMAWeightAveraging::kCurrentModelState);
  CHECK(torch::equal(current.at("layer.weight").toTensor(), trained));
  CHECK(current.contains("layer.bias"));

  // validate with the checkpoint scores the average; load_from_checkpoint-style use gets it too.
  BoringModule fresh;
  Trainer validator(options_for(1));
  validator.validate(fresh, data, EvaluateOptions().ckpt_path(path));
  CHECK(torch::equal(fresh.layer->weight.detach(), averaged));
}

TEST_CASE("EMAWeightAveraging forgets the average of a resume that failed", "[callbacks][ema]") {
  // A callback whose state cannot be restored fails the resume after EMAWeightAveraging took the
  // checkpoint's average; the next fit, of another model, starts its own.
  class FailsToLoad : public Callback {
   public:
    bool stateful() const override { return true; }
    StateDict state_dict() const override {
      StateDict state;
      state.insert("saved", true);
      return state;
    }
    void load_state_dict(const StateDict&) override {
      throw std::runtime_error("cannot restore on purpose");
    }
  };
  class Wider : public BoringModule {
   public:
    Wider() { extra = register_module("extra", torch::nn::Linear(2, 2)); }
    torch::nn::Linear extra{nullptr};
  };
  TempDir dir;
  const std::string path = (dir.path() / "saved.ckpt").string();
  auto ema = std::make_shared<EMAWeightAveraging>();
  {
    BoringModule module;
    RandomDataModule data(4, 1);
    Trainer trainer(options_for(1),
                    {ema, std::make_shared<FailsToLoad>(),
                     std::make_shared<LambdaCallback>(LambdaHooks().on_train_epoch_end(
                         [&](Trainer& running, Module&) { running.save_checkpoint(path); }))});
    trainer.fit(module, data);
  }
  Trainer trainer(options_for(1), {ema, std::make_shared<FailsToLoad>()});
  BoringModule module;
  RandomDataModule data(4, 1);
  CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path(path)),
                    Contains("cannot restore on purpose"));
  Trainer next(options_for(1), {ema});
  Wider wider;
  CHECK_NOTHROW(next.fit(wider, data));
  CHECK(ema->num_averaged() == 4);
}

TEST_CASE("EMAWeightAveraging survives a resume: the same average as an uninterrupted run",
          "[callbacks][ema]") {
  TempDir dir;
  const std::string checkpoint = (dir.path() / "epoch0.ckpt").string();
  at::Tensor uninterrupted;
  {
    auto ema = std::make_shared<EMAWeightAveraging>(EMAWeightAveragingOptions().decay(0.8));
    torch::manual_seed(1);  // the same initial weights in both runs
    BoringModule module;
    RandomDataModule data(4, 1, /*shuffle=*/true);
    Trainer trainer(options_for(2), {ema});
    trainer.fit(module, data);
    uninterrupted = module.layer->weight.detach().clone();
  }
  {
    std::shared_ptr<EMAWeightAveraging> ema;
    SECTION("from a checkpoint with the average as its model") {
      ema = std::make_shared<EMAWeightAveraging>(EMAWeightAveragingOptions().decay(0.8));
    }
    SECTION("from a checkpoint of the earlier layout, the average in the callback's state") {
      ema = std::make_shared<EarlierLayoutEMA>(EMAWeightAveragingOptions().decay(0.8));
    }
    auto saver = std::make_shared<LambdaCallback>(
        LambdaHooks().on_train_epoch_end([&](Trainer& trainer, Module&) {
          if (trainer.current_epoch() == 0) trainer.save_checkpoint(checkpoint);
        }));
    torch::manual_seed(1);
    BoringModule module;
    RandomDataModule data(4, 1, /*shuffle=*/true);
    Trainer trainer(options_for(1), {ema, saver});
    trainer.fit(module, data);
  }
  auto ema = std::make_shared<EMAWeightAveraging>(EMAWeightAveragingOptions().decay(0.8));
  BoringModule module;
  RandomDataModule data(4, 1, /*shuffle=*/true);
  Trainer trainer(options_for(2), {ema});
  trainer.fit(module, data, FitOptions().ckpt_path(checkpoint));
  CHECK(ema->num_averaged() == 8);
  CHECK(torch::equal(module.layer->weight.detach(), uninterrupted));
}
