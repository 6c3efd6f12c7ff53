// A custom optimizer (a torch::optim::Optimizer subclass of the user's) in checkpoints: what its
// save() writes, or nothing when it has none, is kept as it is and given back to its load() on
// resume, as LibTorch's Optimizer::save/load have it; evaluating from such a checkpoint never
// reads it.
#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/autograd/grad_mode.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "checkpoint/format.h"
#include "checkpoint/optimizer_state.h"
#include "core/load_from_checkpoint.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace custom_optimizer_test {

struct PlainOptions : torch::optim::OptimizerCloneableOptions<PlainOptions> {
  explicit PlainOptions(double lr) : lr_(lr) {}
  double get_lr() const override { return lr_; }
  void set_lr(const double lr) override { lr_ = lr; }
  double lr_;
};

/// SGD without momentum, of the user's own: options LibTorch's serialisation does not know, no
/// save()/load() override (LibTorch's defaults write and read nothing).
class PlainSGD : public torch::optim::Optimizer {
 public:
  PlainSGD(const std::vector<at::Tensor>& params, double lr)
      : Optimizer({torch::optim::OptimizerParamGroup(params)}, std::make_unique<PlainOptions>(lr)) {
  }
  at::Tensor step(LossClosure = nullptr) override {
    torch::NoGradGuard no_grad;
    for (auto& group : param_groups_) {
      for (auto& parameter : group.params()) {
        if (parameter.grad().defined()) parameter.add_(parameter.grad(), -group.options().get_lr());
      }
    }
    ++steps;
    return {};
  }
  int64_t steps = 0;
};

/// PlainSGD that saves its step count in an archive of its own layout.
class CountingSGD : public PlainSGD {
 public:
  using PlainSGD::PlainSGD;
  void save(torch::serialize::OutputArchive& archive) const override {
    archive.write("steps", c10::IValue(steps));
  }
  void load(torch::serialize::InputArchive& archive) override {
    c10::IValue value;
    archive.read("steps", value);
    steps = value.toInt();
  }
};

template <class Optimizer>
class CustomOptimizerModule : public BoringModule {
 public:
  OptimizerConfig configure_optimizers() override {
    optimizer = std::make_shared<Optimizer>(parameters(), 0.1);
    return optimizer;
  }
  std::shared_ptr<Optimizer> optimizer;
};

class SaveAtEnd : public Callback {
 public:
  explicit SaveAtEnd(std::string path) : path_(std::move(path)) {}
  void on_train_end(Trainer& trainer, Module&) override { trainer.save_checkpoint(path_); }

 private:
  std::string path_;
};

/// Notes what the optimizer states look like to on_load_checkpoint.
class SeesOptimizerStates : public Callback {
 public:
  void on_load_checkpoint(Trainer&, Module&, CheckpointData& checkpoint) override {
    states = checkpoint.optimizer_states;
  }
  std::vector<StateDict> states;
};

TrainerOptions fit_epochs(int64_t epochs) {
  return TrainerOptions().max_epochs(epochs).limit_train_batches(4).limit_val_batches(0).seed(3);
}

}  // namespace custom_optimizer_test

using namespace custom_optimizer_test;

TEST_CASE("A custom optimizer without save() is checkpointed, resumed and evaluated from",
          "[core][checkpoint][optimizer]") {
  TempDir dir;
  const std::string path = dir.file("plain.ckpt");
  CustomOptimizerModule<PlainSGD> trained;
  {
    Trainer trainer(fit_epochs(1), {std::make_shared<SaveAtEnd>(path)});
    RandomDataModule data(16, 4);
    REQUIRE_NOTHROW(trainer.fit(trained, data));
  }
  CHECK(checkpoint::inspect_checkpoint(path).valid);

  // Evaluation and load_from_checkpoint use the weights only.
  {
    CustomOptimizerModule<PlainSGD> evaluated;
    Trainer trainer(TrainerOptions().limit_val_batches(1));
    RandomDataModule data(16, 4);
    REQUIRE_NOTHROW(trainer.validate(evaluated, data, EvaluateOptions().ckpt_path(path)));
    CHECK(evaluated.layer->weight.equal(trained.layer->weight));
    CHECK(load_from_checkpoint<CustomOptimizerModule<PlainSGD>>(path)->layer->weight.equal(
        trained.layer->weight));
  }

  // Resuming gives the optimizer's load() what its save() wrote (nothing), as LibTorch would.
  auto sees = std::make_shared<SeesOptimizerStates>();
  CustomOptimizerModule<PlainSGD> resumed;
  Trainer trainer(fit_epochs(2), {sees});
  RandomDataModule data(16, 4);
  REQUIRE_NOTHROW(trainer.fit(resumed, data, FitOptions().ckpt_path(path)));
  REQUIRE(sees->states.size() == 1);
  CHECK(checkpoint::is_archived_optimizer_state(sees->states[0]));
  CHECK(resumed.optimizer->steps == 4);  // the second epoch's
}

TEST_CASE("A custom optimizer's own save() layout is kept and given back to its load()",
          "[core][checkpoint][optimizer]") {
  TempDir dir;
  const std::string path = dir.file("counting.ckpt");
  CustomOptimizerModule<CountingSGD> trained;
  {
    Trainer trainer(fit_epochs(1), {std::make_shared<SaveAtEnd>(path)});
    RandomDataModule data(16, 4);
    REQUIRE_NOTHROW(trainer.fit(trained, data));
  }
  REQUIRE(trained.optimizer->steps == 4);
  CustomOptimizerModule<CountingSGD> resumed;
  Trainer trainer(fit_epochs(2));
  RandomDataModule data(16, 4);
  REQUIRE_NOTHROW(trainer.fit(resumed, data, FitOptions().ckpt_path(path)));
  CHECK(resumed.optimizer->steps == 8);  // 4 restored, 4 more
}
