// Checkpoint surgery in hooks, as Lightning's on_save_checkpoint / on_load_checkpoint: the hooks
// see the whole checkpoint (weights, optimizer states, loops, callback states) and may change it
// before it is written or applied.
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <c10/util/string_utils.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include "core/load_from_checkpoint.h"
#include "core/trainer.h"
#include "events/all.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// SGD with momentum: its optimizer state has a tensor per parameter.
class MomentumModule : public BoringModule {
 public:
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(),
                                               torch::optim::SGDOptions(0.05).momentum(0.9));
  }
};

/// The same network after a refactoring renamed its layer `layer` to `head`. With `migrate`, its
/// on_load_checkpoint renames the old checkpoints' entries, as a Lightning module would:
///   checkpoint["state_dict"]["head.weight"] = checkpoint["state_dict"].pop("layer.weight")
class RenamedModule : public Module {
 public:
  explicit RenamedModule(bool migrate = true) : migrate_(migrate) {
    head = register_module("head", torch::nn::Linear(32, 2));
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    const at::Tensor out = head->forward(batch.data);
    return (out - 1).pow(2).mean();
  }
  StepOutput validation_step(const Batch& batch, int64_t) override {
    log("val_loss", (head->forward(batch.data) - 1).pow(2).mean());
    return {};
  }
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(),
                                               torch::optim::SGDOptions(0.05).momentum(0.9));
  }
  void on_load_checkpoint(CheckpointData& checkpoint) override {
    ++loads;
    if (!migrate_) return;
    for (const std::string name : {"weight", "bias"}) {
      if (checkpoint.state_dict.contains("layer." + name))
        checkpoint.state_dict.insert("head." + name, checkpoint.state_dict.pop("layer." + name));
    }
  }
  torch::nn::Linear head{nullptr};
  int loads = 0;

 private:
  bool migrate_;
};

/// Saves a checkpoint at the end of training (synchronously, or in the background).
class SaveAtTrainEnd : public Callback {
 public:
  SaveAtTrainEnd(std::string path, bool async) : path_(std::move(path)), async_(async) {}
  void on_train_end(Trainer& trainer, Module&) override {
    trainer.save_checkpoint(path_, SaveCheckpointOptions().async(async_));
  }

 private:
  std::string path_;
  bool async_;
};

/// A callback made of functions, for the hooks these tests need.
class Hooks : public Callback {
 public:
  std::function<void(Trainer&, Module&)> on_train_start_fn;
  std::function<void(CheckpointData&)> on_save_fn, on_load_fn;
  void on_train_start(Trainer& trainer, Module& module) override {
    if (on_train_start_fn) on_train_start_fn(trainer, module);
  }
  void on_save_checkpoint(Trainer&, Module&, CheckpointData& checkpoint) override {
    if (on_save_fn) on_save_fn(checkpoint);
  }
  void on_load_checkpoint(Trainer&, Module&, CheckpointData& checkpoint) override {
    if (on_load_fn) on_load_fn(checkpoint);
  }
};

TrainerOptions short_fit(int64_t epochs = 1) {
  return TrainerOptions().max_epochs(epochs).limit_train_batches(4).limit_val_batches(0).seed(3);
}

// A fit of `module` for one epoch that leaves a checkpoint at `path`.
template <class M>
void train_and_save(M& module, const std::string& path, bool async = false) {
  Trainer trainer(short_fit(), {std::make_shared<SaveAtTrainEnd>(path, async)});
  RandomDataModule data(16, 4);
  trainer.fit(module, data);
}

}  // namespace

TEST_CASE("A module that renamed a layer loads an old checkpoint through on_load_checkpoint",
          "[core][checkpoint][hooks]") {
  TempDir dir;
  const std::string path = dir.file("old.ckpt");
  MomentumModule old_module;  // its layer is `layer`
  train_and_save(old_module, path);
  const at::Tensor old_weight = old_module.layer->weight.detach().clone();
  RandomDataModule data(16, 4);

  SECTION("without the migration, the load names the keys that do not match") {
    RenamedModule renamed(/*migrate=*/false);
    Trainer trainer(short_fit(2));
    // PyTorch's load_state_dict(strict=True) message, which Lightning's strict loading raises.
    CHECK_THROWS_WITH(
        trainer.fit(renamed, data, FitOptions().ckpt_path(path)),
        Contains(path) &&
            Contains("Missing key(s) in state_dict: \"head.bias\", \"head.weight\"") &&
            Contains("Unexpected key(s) in state_dict: \"layer.bias\", "
                     "\"layer.weight\""));
  }
  SECTION("fit resumes with the renamed weights and the optimizer state that goes with them") {
    RenamedModule renamed;
    auto at_start = std::make_shared<Hooks>();
    at::Tensor weight_at_start;
    bool momentum_restored = false;
    at_start->on_train_start_fn = [&](Trainer& trainer, Module&) {
      weight_at_start = renamed.head->weight.detach().clone();
      momentum_restored = !trainer.optimizers()[0]->state().empty();
    };
    Trainer trainer(short_fit(2), {at_start});
    trainer.fit(renamed, data, FitOptions().ckpt_path(path));
    CHECK(renamed.loads == 1);
    CHECK(weight_at_start.equal(old_weight));
    CHECK(momentum_restored);
    CHECK(trainer.global_step() == 8);  // 4 steps restored, 4 more
  }
  SECTION("validate with ckpt_path and load_from_checkpoint migrate it too") {
    RenamedModule renamed;
    Trainer trainer(TrainerOptions().limit_val_batches(1));
    trainer.validate(renamed, data, EvaluateOptions().ckpt_path(path));
    CHECK(renamed.loads == 1);
    CHECK(renamed.head->weight.equal(old_weight));

    std::shared_ptr<RenamedModule> loaded = load_from_checkpoint<RenamedModule>(path);
    CHECK(loaded->loads == 1);
    CHECK(loaded->head->weight.equal(old_weight));
  }
}

TEST_CASE("A callback edits an optimizer state in on_load_checkpoint before it is applied",
          "[core][checkpoint][hooks]") {
  TempDir dir;
  const std::string path = dir.file("momentum.ckpt");
  MomentumModule trained;
  train_and_save(trained, path);

  // Lightning: checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] = 0.5, and a state
  // tensor replaced: what the optimizer gets is the edited state.
  auto edit = std::make_shared<Hooks>();
  edit->on_load_fn = [](CheckpointData& checkpoint) {
    REQUIRE(checkpoint.optimizer_states.size() == 1);
    StateDict& optimizer = checkpoint.optimizer_states[0];
    auto group = optimizer.at("param_groups").toList().get(0).toGenericDict();
    CHECK(group.at("lr").toDouble() == 0.05);
    CHECK(group.at("momentum").toDouble() == 0.9);
    group.insert_or_assign("lr", 0.5);
    // layer.weight's: index 0 of the param groups (dict_at gives copies: insert_at edits).
    const at::Tensor momentum =
        optimizer.dict_at("state").dict_at("0").at("momentum_buffer").toTensor();
    optimizer.insert_at({"state", "0", "momentum_buffer"}, at::zeros_like(momentum));
    // The loops' progress is there too, for the same kind of surgery.
    CHECK(checkpoint.loops.at("global_step").toInt() == 4);
  };
  double lr_at_start = 0.0;
  at::Tensor momentum_at_start;
  auto at_start = std::make_shared<Hooks>();
  MomentumModule resumed;
  at_start->on_train_start_fn = [&](Trainer& trainer, Module&) {
    torch::optim::Optimizer& optimizer = *trainer.optimizers()[0];
    lr_at_start = optimizer.param_groups()[0].options().get_lr();
    const auto key = c10::guts::to_string(resumed.layer->weight.unsafeGetTensorImpl());
    momentum_at_start = static_cast<torch::optim::SGDParamState&>(*optimizer.state().at(key))
                            .momentum_buffer()
                            .clone();  // the optimizer steps on in place
  };
  Trainer trainer(short_fit(2), {edit, at_start});
  RandomDataModule data(16, 4);
  trainer.fit(resumed, data, FitOptions().ckpt_path(path));
  CHECK(lr_at_start == 0.5);
  REQUIRE(momentum_at_start.defined());
  CHECK(momentum_at_start.abs().sum().item<double>() == 0.0);
}

TEST_CASE("What on_save_checkpoint adds or changes is written, and on_load_checkpoint reads it",
          "[core][checkpoint][hooks]") {
  const bool async = GENERATE(false, true);
  CAPTURE(async);
  TempDir dir;
  const std::string path = dir.file("noted.ckpt");

  // The module notes an entry of its own and saves a zero bias in place of its own; a callback
  // drops nothing but checks that it sees the whole checkpoint.
  class Noting : public MomentumModule {
   public:
    void on_save_checkpoint(CheckpointData& checkpoint) override {
      checkpoint.extra.insert("note", std::string("migrated from v1"));
      checkpoint.extra.insert("scale", at::full({2}, 3.0));
      const at::Tensor bias = checkpoint.state_dict.at("layer.bias").toTensor();
      checkpoint.state_dict.insert("layer.bias", at::zeros_like(bias));
    }
    void on_load_checkpoint(CheckpointData& checkpoint) override {
      note = checkpoint.extra.at("note").toStringRef();
      scale = checkpoint.extra.at("scale").toTensor();
    }
    std::string note;
    at::Tensor scale;
  };
  auto sees_all = std::make_shared<Hooks>();
  bool saw_everything = false;
  sees_all->on_save_fn = [&](CheckpointData& checkpoint) {
    saw_everything = checkpoint.state_dict.contains("layer.weight") &&
                     checkpoint.optimizer_states.size() == 1 &&
                     checkpoint.loops.contains("global_step");
  };
  Noting trained;
  {
    Trainer trainer(short_fit(), {std::make_shared<SaveAtTrainEnd>(path, async), sees_all});
    RandomDataModule data(16, 4);
    trainer.fit(trained, data);
  }
  CHECK(saw_everything);
  CHECK(trained.layer->bias.abs().sum().item<double>() > 0.0);  // the live bias is untouched

  Noting loaded;
  Trainer trainer(TrainerOptions().limit_val_batches(1));
  RandomDataModule data(16, 4);
  trainer.validate(loaded, data, EvaluateOptions().ckpt_path(path));
  CHECK(loaded.note == "migrated from v1");
  CHECK(loaded.scale.equal(at::full({2}, 3.0)));
  CHECK(loaded.layer->bias.abs().sum().item<double>() == 0.0);
  CHECK(loaded.layer->weight.equal(trained.layer->weight));
}

TEST_CASE("An override of the read-only on_load_checkpoint still runs",
          "[core][checkpoint][hooks]") {
  TempDir dir;
  const std::string path = dir.file("plain.ckpt");
  MomentumModule trained;
  train_and_save(trained, path);
  class ReadOnly : public MomentumModule {
   public:
    void on_load_checkpoint(const CheckpointData& checkpoint) override {
      global_step = checkpoint.global_step;
    }
    int64_t global_step = -1;
  };
  ReadOnly module;
  Trainer trainer(TrainerOptions().limit_val_batches(1));
  RandomDataModule data(16, 4);
  trainer.validate(module, data, EvaluateOptions().ckpt_path(path));
  CHECK(module.global_step == 4);
}

TEST_CASE("A checkpoint a hook left unwritable is refused before its save is announced",
          "[core][checkpoint][hooks]") {
  // "layer.weight" and "layer.weight.scale": a tensor that is also a prefix cannot be laid out
  // as Module::save's archive. Observers must not see a SaveCheckpoint for a save that then fails.
  class SaveEvents : public events::Observer {
   public:
    void select_events(events::EventSelection& selection) const override {
      selection.add<events::SaveCheckpoint>();
    }
    void on_save_checkpoint(const events::SaveCheckpoint&) override { ++saves; }
    std::atomic<int> saves{0};
  };
  auto clash = std::make_shared<Hooks>();
  clash->on_save_fn = [](CheckpointData& checkpoint) {
    checkpoint.state_dict.insert("layer.weight.scale", at::ones({1}));
  };
  TempDir dir;
  auto observer = std::make_shared<SaveEvents>();
  {
    Trainer trainer(short_fit(),
                    {std::make_shared<SaveAtTrainEnd>(dir.file("bad.ckpt"), false), clash});
    trainer.add_observer(observer);
    MomentumModule module;
    RandomDataModule data(16, 4);
    CHECK_THROWS_WITH(trainer.fit(module, data),
                      Contains("layer.weight") && Contains("also the prefix"));
  }
  CHECK(observer->saves == 0);
}
