// Trainer::save_checkpoint and resuming with fit(module, data, {ckpt_path}).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>

#include <torch/csrc/autograd/grad_mode.h>
#include <torch/optim/schedulers/step_lr.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "base/crc32c.h"
#include "checkpoint/format.h"
#include "checkpoint/module_state.h"
#include "core/trainer.h"
#include "proto/checkpoint.pb.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// SGD with momentum, so that the optimizer state matters for an exact resume.
class MomentumModule : public BoringModule {
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(),
                                               torch::optim::SGDOptions(0.05).momentum(0.9));
  }
};

/// MomentumModule whose StepLR halves the rate after every epoch: a resume must restore the rate.
class StepLRModule : public BoringModule {
  OptimizerConfig configure_optimizers() override {
    auto optimizer = std::make_shared<torch::optim::SGD>(
        parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
    SchedulerConfig scheduler;
    scheduler.scheduler = std::make_shared<torch::optim::StepLR>(*optimizer, 1, 0.5);
    return OptimizerConfig(optimizer, scheduler);
  }
};

/// Counts training batches; its count is its state.
class BatchCounter : public Callback {
 public:
  void on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t) override {
    ++count;
  }
  StateDict state_dict() const override {
    StateDict state;
    state.insert("count", count);
    return state;
  }
  void load_state_dict(const StateDict& state) override { count = state.at("count").toInt(); }
  int64_t count = 0;
};

/// Each training step's loss, by the global step it ended at.
class LossRecorder : public Callback {
 public:
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput& outputs, const Batch&,
                          int64_t) override {
    losses[trainer.global_step()] = outputs.loss().item<double>();
  }
  std::map<int64_t, double> losses;
};

/// Saves a checkpoint after batch `batch` of epoch `epoch`.
class SaveAt : public Callback {
 public:
  SaveAt(std::string path, int64_t epoch, int64_t batch)
      : path_(std::move(path)), epoch_(epoch), batch_(batch) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() == epoch_ && batch_idx == batch_) trainer.save_checkpoint(path_);
  }

 private:
  std::string path_;
  int64_t epoch_, batch_;
};

TrainerOptions options_for_resume() {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(3);
  options.limit_val_batches(0);
  options.seed(11);
  options.deterministic(true);
  return options;
}

std::vector<at::Tensor> weights(Module& module) {
  std::vector<at::Tensor> out;
  for (const auto& p : module.parameters()) out.push_back(p.detach().clone());
  return out;
}

bool same(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].equal(b[i])) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("Resuming mid-epoch reproduces the uninterrupted run exactly", "[core][checkpoint]") {
  TempDir dir;
  for (const auto& [epoch, batch] : std::vector<std::pair<int64_t, int64_t>>{{0, 15}, {1, 6}}) {
    DYNAMIC_SECTION("saved after batch " << batch << " of epoch " << epoch) {
      const std::string path = dir.file("mid.ckpt");
      auto counter = std::make_shared<BatchCounter>();
      auto losses = std::make_shared<LossRecorder>();
      Trainer uninterrupted(options_for_resume(),
                            {counter, losses, std::make_shared<SaveAt>(path, epoch, batch)});
      MomentumModule original;
      RandomDataModule data(64, 4, /*shuffle=*/true);
      uninterrupted.fit(original, data);

      auto resumed_counter = std::make_shared<BatchCounter>();
      auto resumed_losses = std::make_shared<LossRecorder>();
      Trainer resumed(options_for_resume(), {resumed_counter, resumed_losses});
      MomentumModule fresh;
      resumed.fit(fresh, data, FitOptions().ckpt_path(path));

      CHECK(same(weights(original), weights(fresh)));
      CHECK(resumed.global_step() == uninterrupted.global_step());
      CHECK(resumed.current_epoch() == 3);
      // Step for step: every step after the save has exactly the loss it had in the uninterrupted
      // run.
      const int64_t saved_at = epoch * 16 + batch + 1;
      CHECK(resumed_losses->losses.size() == static_cast<size_t>(3 * 16 - saved_at));
      CHECK(resumed_losses->losses.begin()->first == saved_at + 1);
      for (const auto& [step, loss] : resumed_losses->losses) {
        INFO("step " << step);
        CHECK(loss == losses->losses.at(step));
      }
      CHECK(resumed_counter->count ==
            counter->count);  // restored from the checkpoint, then counted on
    }
  }
}

TEST_CASE("Resuming restores the learning rates an LR scheduler set", "[core][checkpoint]") {
  // LibTorch's Optimizer::load leaves the param groups' options as configure_optimizers made them;
  // PyTorch's load_state_dict (and so Lightning) restores them.
  TempDir dir;
  const std::string path = dir.file("mid.ckpt");
  Trainer uninterrupted(options_for_resume(), {std::make_shared<SaveAt>(path, 2, 6)});
  StepLRModule original;
  RandomDataModule data(64, 4, /*shuffle=*/true);
  uninterrupted.fit(original, data);
  const double lr = uninterrupted.optimizers()[0]->param_groups()[0].options().get_lr();
  CHECK(lr < 0.05);

  Trainer resumed(options_for_resume());
  StepLRModule fresh;
  resumed.fit(fresh, data, FitOptions().ckpt_path(path));
  CHECK(resumed.optimizers()[0]->param_groups()[0].options().get_lr() == lr);
  CHECK(same(weights(original), weights(fresh)));
}

TEST_CASE("A checkpoint saved at a mid-epoch validation end resumes exactly after that validation",
          "[core][checkpoint]") {
  // Where ModelCheckpoint saves with val_check_interval < 1 (or a save deferred to validation).
  class SaveAtValidationEnd : public Callback {
   public:
    explicit SaveAtValidationEnd(std::string path) : path_(std::move(path)) {}
    void on_validation_end(Trainer& trainer, Module&) override {
      if (trainer.sanity_checking()) return;
      ++validations;
      if (trainer.current_epoch() == 1 && trainer.global_step() == 16 + 8)
        trainer.save_checkpoint(path_);
    }
    std::string path_;
    int validations = 0;
  };
  TempDir dir;
  const std::string path = dir.file("val-end.ckpt");
  TrainerOptions options = options_for_resume();
  options.limit_val_batches(2);
  options.val_check_interval(0.5);  // after batches 7 and 15 of each epoch
  auto saver = std::make_shared<SaveAtValidationEnd>(path);
  Trainer uninterrupted(options, {saver});
  MomentumModule original;
  RandomDataModule data(64, 4, /*shuffle=*/true);
  uninterrupted.fit(original, data);
  REQUIRE(saver->validations == 6);

  auto counter = std::make_shared<SaveAtValidationEnd>(dir.file("unused.ckpt"));
  Trainer resumed(options, {counter});
  MomentumModule fresh;
  resumed.fit(fresh, data, FitOptions().ckpt_path(path));
  CHECK(same(weights(original), weights(fresh)));
  CHECK(resumed.global_step() == uninterrupted.global_step());
  CHECK(counter->validations == 3);  // the one it was saved at is not repeated
}

TEST_CASE("A checkpoint saved at an epoch end resumes with the next epoch", "[core][checkpoint]") {
  TempDir dir;
  class SaveAtEpochEnd : public Callback {
   public:
    explicit SaveAtEpochEnd(std::string path) : path_(std::move(path)) {}
    void on_train_epoch_end(Trainer& trainer, Module&) override {
      if (trainer.current_epoch() == 0) trainer.save_checkpoint(path_);
    }
    std::string path_;
  };
  const std::string path = dir.file("nested/dir/epoch0.ckpt");
  Trainer first(options_for_resume(), {std::make_shared<SaveAtEpochEnd>(path)});
  MomentumModule original;
  RandomDataModule data(64, 4, true);
  first.fit(original, data);
  REQUIRE(std::filesystem::exists(path));
  // Only the checkpoint: no temporary file is left next to it.
  CHECK(std::distance(std::filesystem::directory_iterator(dir.file("nested/dir")),
                      std::filesystem::directory_iterator()) == 1);

  Trainer resumed(options_for_resume());
  MomentumModule fresh;
  resumed.fit(fresh, data, FitOptions().ckpt_path(path));
  CHECK(same(weights(original), weights(fresh)));
  CHECK(resumed.global_step() == 3 * 16);
}

TEST_CASE("Loading a bad checkpoint names the file, the part and the problem",
          "[core][checkpoint]") {
  TempDir dir;
  Trainer trainer(options_for_resume());
  BoringModule module;
  RandomDataModule data;
  const std::string path = dir.file("full.ckpt");
  {
    Trainer saver(options_for_resume(), {std::make_shared<SaveAt>(path, 0, 3)});
    BoringModule saved;
    saver.fit(saved, data);
  }
  const std::string model_file = path + "/model.pt";
  SECTION("missing") {
    CHECK_THROWS_MATCHES(
        trainer.fit(module, data, FitOptions().ckpt_path(dir.file("none.ckpt"))), CheckpointError,
        Catch::Matchers::Message("checkpoint " + dir.file("none.ckpt") + " not found"));
  }
  SECTION("a file, not a checkpoint directory") {
    std::ofstream(dir.file("junk.ckpt")) << "not a checkpoint";
    CHECK_THROWS_WITH(
        trainer.fit(module, data, FitOptions().ckpt_path(dir.file("junk.ckpt"))),
        Contains("checkpoint " + dir.file("junk.ckpt") + " is a file, not a trainbus checkpoint"));
  }
  SECTION("truncated part") {
    const auto size = std::filesystem::file_size(model_file);
    std::filesystem::resize_file(model_file, size / 2);
    CHECK_THROWS_WITH(
        trainer.fit(module, data, FitOptions().ckpt_path(path)),
        Contains("checkpoint " + path + ": part `model` (model.pt) is truncated: " +
                 std::to_string(size / 2) + " bytes, the manifest says " + std::to_string(size)));
  }
  SECTION("bad CRC") {
    std::fstream file(model_file, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(100);
    file.put('\x5a');
    file.close();
    CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path(path)),
                      Contains("checkpoint " + path + ": part `model` (model.pt) has CRC32C") &&
                          Contains("the file is damaged"));
  }
  SECTION("missing part") {
    std::filesystem::remove(path + "/optimizer_0.pt");
    CHECK_THROWS_WITH(
        trainer.fit(module, data, FitOptions().ckpt_path(path)),
        Contains("checkpoint " + path + ": part `optimizer_0` (optimizer_0.pt) is missing"));
  }
  SECTION("missing manifest (an incomplete write)") {
    std::filesystem::remove(path + "/MANIFEST");
    CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path(path)),
                      Contains("checkpoint " + path + ": part `MANIFEST` is missing"));
  }
  SECTION("from a newer format") {
    trainbus::checkpoint::Manifest manifest;
    {
      std::ifstream in(path + "/MANIFEST", std::ios::binary);
      REQUIRE(manifest.ParseFromIstream(&in));
    }
    manifest.set_format_version(99);
    {
      std::ofstream out(path + "/MANIFEST", std::ios::binary | std::ios::trunc);
      REQUIRE(manifest.SerializeToOstream(&out));
    }
    CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path(path)),
                      Contains("checkpoint " + path +
                               " has format version 99, newer than this trainbus reads (2)"));
  }
  SECTION("an unfinished write") {
    CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path(path + ".tmp-1-0")),
                      Contains("is an unfinished write"));
  }
  SECTION("inspect says the same without throwing") {
    std::filesystem::resize_file(model_file, 10);
    const checkpoint::CheckpointReport report = checkpoint::inspect_checkpoint(path);
    CHECK_FALSE(report.valid);
    CHECK_THAT(report.text, Contains("global step 4") &&
                                Contains("INVALID: checkpoint " + path + ": part `model`"));
  }
}

TEST_CASE("An asynchronous save holds exactly the step it was taken at",
          "[core][checkpoint][async]") {
  // The tensors change right after save_checkpoint returns (the next steps); the checkpoint must
  // still hold the weights of the moment it was called. The second save copies into the buffers
  // the first one gave back: both must hold their own step.
  TempDir dir;
  class SaveAsyncAt : public Callback {
   public:
    explicit SaveAsyncAt(std::string dir) : dir_(std::move(dir)) {}
    void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput&, const Batch&,
                            int64_t batch_idx) override {
      if (trainer.current_epoch() != 0 || (batch_idx != 5 && batch_idx != 9)) return;
      if (batch_idx == 9) {
        trainer.checkpoints().wait();
        kept_before_second = trainer.checkpoints().writer()->stats().bytes_kept;
      }
      trainer.save_checkpoint(dir_ + "/step" + std::to_string(batch_idx + 1),
                              SaveCheckpointOptions().async(true));
      if (batch_idx == 9) kept_after_second = trainer.checkpoints().writer()->stats().bytes_kept;
      at_save.push_back(weights(module));
      // Change every weight in place at once: a checkpoint still reading the live tensors would see
      // it.
      torch::NoGradGuard no_grad;
      for (auto& p : module.parameters()) p.add_(1000.0);
    }
    std::string dir_;
    std::vector<std::vector<at::Tensor>> at_save;
    std::size_t kept_before_second = 0, kept_after_second = 0;
  };
  auto saver = std::make_shared<SaveAsyncAt>(dir.path().string());
  Trainer trainer(options_for_resume(), {saver});
  MomentumModule module;
  RandomDataModule data(64, 4, true);
  trainer.fit(module, data);
  REQUIRE(trainer.checkpoints().writer() != nullptr);
  CHECK(trainer.checkpoints().writer()->stats().written == 2);
  CHECK(saver->kept_before_second > 0);  // the first snapshot's copies, given back after its write
  CHECK(saver->kept_after_second == 0);  // ... and all taken by the second snapshot
  REQUIRE(saver->at_save.size() == 2);
  for (int i = 0; i < 2; ++i) {
    const int64_t step = i == 0 ? 6 : 10;
    const checkpoint::LoadedCheckpoint loaded =
        checkpoint::read_checkpoint(dir.file("step" + std::to_string(step)));
    MomentumModule restored;
    checkpoint::load_module_state(restored, loaded.data.state_dict, loaded.path);
    CHECK(same(weights(restored), saver->at_save[static_cast<size_t>(i)]));
    CHECK(loaded.data.global_step == step);
  }
}

TEST_CASE("An asynchronous save resumes exactly like a synchronous one",
          "[core][checkpoint][async]") {
  TempDir dir;
  const std::string path = dir.file("mid.ckpt");
  class SaveAsync : public Callback {
   public:
    explicit SaveAsync(std::string path) : path_(std::move(path)) {}
    void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                            int64_t batch_idx) override {
      if (trainer.current_epoch() == 1 && batch_idx == 6)
        trainer.save_checkpoint(path_, SaveCheckpointOptions().async(true));
    }
    std::string path_;
  };
  Trainer uninterrupted(options_for_resume(), {std::make_shared<SaveAsync>(path)});
  MomentumModule original;
  RandomDataModule data(64, 4, true);
  uninterrupted.fit(original, data);
  Trainer resumed(options_for_resume());
  MomentumModule fresh;
  resumed.fit(fresh, data, FitOptions().ckpt_path(path));
  CHECK(same(weights(original), weights(fresh)));
  CHECK(resumed.global_step() == uninterrupted.global_step());
}

TEST_CASE("save_checkpoint outside fit says where it may be called", "[core][checkpoint]") {
  Trainer trainer(testing::trainer_options());
  CHECK_THROWS_WITH(trainer.save_checkpoint("x.ckpt"), Contains("needs a running fit"));
}

TEST_CASE("A weights-only checkpoint cannot resume training", "[core][checkpoint]") {
  TempDir dir;
  class SaveWeights : public Callback {
   public:
    explicit SaveWeights(std::string path) : path_(std::move(path)) {}
    void on_train_end(Trainer& trainer, Module&) override {
      trainer.save_checkpoint(path_, SaveCheckpointOptions().weights_only(true));
    }
    std::string path_;
  };
  const std::string path = dir.file("weights.ckpt");
  Trainer saver(options_for_resume(), {std::make_shared<SaveWeights>(path)});
  BoringModule module;
  RandomDataModule data;
  saver.fit(module, data);
  Trainer trainer(options_for_resume());
  BoringModule other;
  CHECK_THROWS_WITH(trainer.fit(other, data, FitOptions().ckpt_path(path)),
                    Contains("holds only the model weights"));
}

namespace {

// Every part of a checkpoint that is not a module or optimizer tensor, each holding a tensor (and a
// list, which IValues share by reference too) that the test changes in place right after a save.
struct LiveState {
  at::Tensor callback_tensor = at::zeros({1000});
  c10::List<int64_t> callback_list{1, 2, 3};
  at::Tensor callback_extra = at::zeros({10});
  at::Tensor datamodule_tensor = at::zeros({10});
  at::Tensor hparams_tensor = at::zeros({10});
  at::Tensor module_extra = at::zeros({10});

  void change_in_place() {
    for (at::Tensor* t :
         {&callback_tensor, &callback_extra, &datamodule_tensor, &hparams_tensor, &module_extra}) {
      t->fill_(1);
    }
    callback_list.set(0, 99);
  }
};

class StateModule : public MomentumModule {
 public:
  explicit StateModule(std::shared_ptr<LiveState> live) : live_(std::move(live)) {
    StateDict hparams;
    hparams.insert("tensor", live_->hparams_tensor);
    save_hyperparameters(hparams);
  }
  void on_save_checkpoint(CheckpointData& checkpoint) override {
    checkpoint.extra.insert("module", live_->module_extra);
  }

 private:
  std::shared_ptr<LiveState> live_;
};

class StateDataModule : public RandomDataModule {
 public:
  explicit StateDataModule(std::shared_ptr<LiveState> live)
      : RandomDataModule(64, 4, true), live_(std::move(live)) {}
  StateDict state_dict() const override {
    StateDict state;
    state.insert("tensor", live_->datamodule_tensor);
    return state;
  }

 private:
  std::shared_ptr<LiveState> live_;
};

// Saves twice after batch 3: the first save is held in flight until the state has changed, so the
// second, pending behind it, is certainly serialised after the change.
class SavesThenChanges : public Callback {
 public:
  SavesThenChanges(std::string dir, std::shared_ptr<LiveState> live)
      : dir_(std::move(dir)), live_(std::move(live)) {}
  StateDict state_dict() const override {
    StateDict state;
    state.insert("tensor", live_->callback_tensor);
    state.insert("list", c10::IValue(live_->callback_list));
    return state;
  }
  void on_save_checkpoint(Trainer&, Module&, CheckpointData& checkpoint) override {
    checkpoint.extra.insert("callback", live_->callback_extra);
  }
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() != 0 || batch_idx != 3) return;
    std::promise<void> changed;
    std::shared_future<void> done = changed.get_future().share();
    CheckpointRequest first;
    first.path = dir_ + "/first";
    first.after_commit = [done](const std::string&) { done.wait(); };
    trainer.checkpoints().submit(std::move(first));
    trainer.save_checkpoint(dir_ + "/second", SaveCheckpointOptions().async(true));
    live_->change_in_place();
    changed.set_value();
  }

 private:
  std::string dir_;
  std::shared_ptr<LiveState> live_;
};

}  // namespace

TEST_CASE("An asynchronous save holds every part as it was when save returned",
          "[core][checkpoint][async]") {
  TempDir dir;
  auto live = std::make_shared<LiveState>();
  Trainer trainer(options_for_resume(),
                  {std::make_shared<SavesThenChanges>(dir.path().string(), live)});
  StateModule module(live);
  StateDataModule data(live);
  trainer.fit(module, data);
  for (const char* name : {"first", "second"}) {
    INFO(name);
    const checkpoint::LoadedCheckpoint loaded = checkpoint::read_checkpoint(dir.file(name));
    const CheckpointData& saved = loaded.data;
    const StateDict callback = saved.callbacks.begin()->second;
    CHECK(callback.at("tensor").toTensor().sum().item<double>() == 0.0);
    CHECK(callback.at("list").toIntList().get(0) == 1);
    CHECK(saved.extra.at("callback").toTensor().sum().item<double>() == 0.0);
    CHECK(saved.extra.at("module").toTensor().sum().item<double>() == 0.0);
    CHECK(saved.datamodule.at("tensor").toTensor().sum().item<double>() == 0.0);
    CHECK(saved.hyper_parameters.at("tensor").toTensor().sum().item<double>() == 0.0);
  }
}

namespace main_era_checkpoint_test {

/// SGD with momentum: its optimizer part holds a tensor per parameter.
class MomentumBoring : public BoringModule {
 public:
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(),
                                               torch::optim::SGDOptions(0.05).momentum(0.9));
  }
};

std::string bytes_of(torch::serialize::OutputArchive& archive) {
  std::ostringstream bytes;
  archive.save_to(bytes);
  return bytes.str();
}

/// Saves a checkpoint at the end of training, and what Module::save and Optimizer::save write
/// at that moment: the parts as trainbus before the checkpoint hooks wrote them.
class SaveWithLibTorchParts : public Callback {
 public:
  explicit SaveWithLibTorchParts(std::string path) : path_(std::move(path)) {}
  void on_train_end(Trainer& trainer, Module& module) override {
    trainer.save_checkpoint(path_);
    torch::serialize::OutputArchive model_archive;
    module.save(model_archive);
    model = bytes_of(model_archive);
    torch::serialize::OutputArchive optimizer_archive;
    trainer.optimizers()[0]->save(optimizer_archive);
    optimizer = bytes_of(optimizer_archive);
  }
  std::string model, optimizer;

 private:
  std::string path_;
};

// Replaces the part `name` of the checkpoint at `path` with `bytes`, its manifest entry too.
void replace_part(const std::string& path, const std::string& name, const std::string& bytes) {
  checkpoint::Manifest manifest;
  {
    std::ifstream in(path + "/MANIFEST", std::ios::binary);
    REQUIRE(manifest.ParseFromIstream(&in));
  }
  bool found = false;
  for (auto& part : *manifest.mutable_parts()) {
    if (part.name() != name) continue;
    found = true;
    std::ofstream(path + "/" + part.file(), std::ios::binary | std::ios::trunc) << bytes;
    part.set_size(static_cast<int64_t>(bytes.size()));
    part.set_crc32c(crc32c(bytes));
  }
  REQUIRE(found);
  std::ofstream out(path + "/MANIFEST", std::ios::binary | std::ios::trunc);
  REQUIRE(manifest.SerializeToOstream(&out));
}

}  // namespace main_era_checkpoint_test

TEST_CASE("A checkpoint whose parts Module::save and Optimizer::save wrote (main's) resumes alike",
          "[core][checkpoint]") {
  using namespace main_era_checkpoint_test;
  TempDir dir;
  const std::string path = dir.file("current.ckpt");
  const std::string main_era = dir.file("main-era.ckpt");
  auto save = std::make_shared<SaveWithLibTorchParts>(path);
  {
    MomentumBoring trained;
    Trainer trainer(TrainerOptions().max_epochs(1).limit_train_batches(4).limit_val_batches(0),
                    {save});
    RandomDataModule data(16, 4);
    trainer.fit(trained, data);
  }
  std::filesystem::copy(path, main_era, std::filesystem::copy_options::recursive);
  replace_part(main_era, "model", save->model);
  replace_part(main_era, "optimizer_0", save->optimizer);
  REQUIRE(checkpoint::inspect_checkpoint(main_era).valid);

  // Resumed from either, the next epoch ends with the same weights (the momentum was restored).
  std::vector<at::Tensor> weights;
  for (const std::string& from : {path, main_era}) {
    MomentumBoring resumed;
    Trainer trainer(TrainerOptions().max_epochs(2).limit_train_batches(4).limit_val_batches(0));
    RandomDataModule data(16, 4);
    REQUIRE_NOTHROW(trainer.fit(resumed, data, FitOptions().ckpt_path(from)));
    weights.push_back(resumed.layer->weight.clone());
  }
  CHECK(weights[0].equal(weights[1]));
  CHECK(checkpoint::read_checkpoint(main_era).data.state_dict.contains("layer.weight"));
}

namespace {

// A loader that counts which batches were read, and a data module that serves it for training.
class BatchReadCounter : public data::TensorDataLoader {
 public:
  using data::TensorDataLoader::TensorDataLoader;
  Batch batch(int64_t index) override {
    ++reads[index];
    return data::TensorDataLoader::batch(index);
  }
  std::map<int64_t, int> reads;
};

class CountedData : public DataModule {
 public:
  std::shared_ptr<DataLoader> train_dataloader() override { return loader; }
  std::shared_ptr<BatchReadCounter> loader = std::make_shared<BatchReadCounter>(
      torch::randn({16, 32}), torch::zeros({16, 1}), data::DataLoaderOptions().batch_size(4));
};

// Saves a checkpoint after every training batch.
class SaveEveryBatch : public Callback {
 public:
  explicit SaveEveryBatch(std::string dir) : dir_(std::move(dir)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    trainer.save_checkpoint(dir_ + "/step" + std::to_string(batch_idx + 1));
  }
  std::string dir_;
};

}  // namespace

TEST_CASE("saving a checkpoint reads no batch of the train loader", "[checkpoint]") {
  // The checkpoint keeps the samples a step takes (for the resume check of another world size)
  // from the batches the fit ran: a save does not read one again.
  TempDir dir;
  BoringModule module;
  CountedData data;
  Trainer trainer(
      trainer_options().max_epochs(1).num_sanity_val_steps(0).enable_model_summary(false),
      {std::make_shared<SaveEveryBatch>(dir.path().string())});
  trainer.fit(module, data);
  CHECK(trainer.global_step() == 4);
  CHECK(data.loader->reads == std::map<int64_t, int>{{0, 1}, {1, 1}, {2, 1}, {3, 1}});
  // What a save inside the epoch keeps: 4 samples a step, on 1 process.
  const auto loaded = checkpoint::read_checkpoint(dir.file("step2"));
  CHECK(loaded.data.loops.at("global_batch_size").toInt() == 4);
}
