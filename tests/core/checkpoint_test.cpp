// Trainer::save_checkpoint and resuming with fit(module, data, {ckpt_path}).
#include <filesystem>
#include <fstream>

#include "tests/support/catch.h"
#include <torch/optim/sgd.h>
#include <torch/serialize/output-archive.h>

#include "core/checkpoint_io.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// SGD with momentum, so that the optimizer state matters for an exact resume.
class MomentumModule : public BoringModule {
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  }
};

/// Counts training batches; its count is its state.
class BatchCounter : public Callback {
 public:
  void on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t) override { ++count; }
  StateDict state_dict() const override {
    StateDict state;
    state.insert("count", count);
    return state;
  }
  void load_state_dict(const StateDict& state) override { count = state.at("count").toInt(); }
  int64_t count = 0;
};

/// Saves a checkpoint after batch `batch` of epoch `epoch`.
class SaveAt : public Callback {
 public:
  SaveAt(std::string path, int64_t epoch, int64_t batch) : path_(std::move(path)), epoch_(epoch), batch_(batch) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&, int64_t batch_idx) override {
    if (trainer.current_epoch() == epoch_ && batch_idx == batch_) trainer.save_checkpoint(path_);
  }

 private:
  std::string path_;
  int64_t epoch_, batch_;
};

TrainerOptions options_for_resume() {
  TrainerOptions options;
  options.max_epochs = 3;
  options.limit_val_batches = 0;
  options.seed = 11;
  options.deterministic = true;
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
      Trainer uninterrupted(options_for_resume(), {counter, std::make_shared<SaveAt>(path, epoch, batch)});
      MomentumModule original;
      RandomDataModule data(64, 4, /*shuffle=*/true);
      uninterrupted.fit(original, data);

      auto resumed_counter = std::make_shared<BatchCounter>();
      Trainer resumed(options_for_resume(), {resumed_counter});
      MomentumModule fresh;
      resumed.fit(fresh, data, {path});

      CHECK(same(weights(original), weights(fresh)));
      CHECK(resumed.global_step() == uninterrupted.global_step());
      CHECK(resumed.current_epoch() == 3);
      CHECK(resumed_counter->count == counter->count);  // restored from the checkpoint, then counted on
    }
  }
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
  resumed.fit(fresh, data, {path});
  CHECK(same(weights(original), weights(fresh)));
  CHECK(resumed.global_step() == 3 * 16);
}

TEST_CASE("Loading a bad checkpoint names the file and the problem", "[core][checkpoint]") {
  TempDir dir;
  Trainer trainer(options_for_resume());
  BoringModule module;
  RandomDataModule data;
  SECTION("missing") {
    CHECK_THROWS_MATCHES(trainer.fit(module, data, {dir.file("none.ckpt")}), CheckpointError,
                         Catch::Matchers::Message("checkpoint " + dir.file("none.ckpt") + " not found"));
  }
  SECTION("not a checkpoint") {
    std::ofstream(dir.file("junk.ckpt")) << "not a zip archive";
    CHECK_THROWS_WITH(trainer.fit(module, data, {dir.file("junk.ckpt")}),
                      Contains("checkpoint " + dir.file("junk.ckpt") + " cannot be read"));
  }
  SECTION("truncated") {
    const std::string path = dir.file("full.ckpt");
    Trainer saver(options_for_resume(), {std::make_shared<SaveAt>(path, 0, 3)});
    saver.fit(module, data);
    std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
    BoringModule other;
    CHECK_THROWS_WITH(trainer.fit(other, data, {path}), Contains("checkpoint " + path));
  }
  SECTION("from a newer format") {
    StateDict tampered;
    tampered.insert("format_version", int64_t{99});
    torch::serialize::OutputArchive newer_archive;
    newer_archive.write("trainbus", tampered.to_ivalue());
    newer_archive.save_to(dir.file("newer.ckpt"));
    CHECK_THROWS_WITH(trainer.fit(module, data, {dir.file("newer.ckpt")}), Contains("has format version 99, newer than this trainbus reads (1)"));
  }
}

TEST_CASE("save_checkpoint outside fit says where it may be called", "[core][checkpoint]") {
  Trainer trainer;
  CHECK_THROWS_WITH(trainer.save_checkpoint("x.ckpt"), Contains("needs a running fit"));
}

TEST_CASE("A weights-only checkpoint cannot resume training", "[core][checkpoint]") {
  TempDir dir;
  class SaveWeights : public Callback {
   public:
    explicit SaveWeights(std::string path) : path_(std::move(path)) {}
    void on_train_end(Trainer& trainer, Module&) override { trainer.save_checkpoint(path_, /*weights_only=*/true); }
    std::string path_;
  };
  const std::string path = dir.file("weights.ckpt");
  Trainer saver(options_for_resume(), {std::make_shared<SaveWeights>(path)});
  BoringModule module;
  RandomDataModule data;
  saver.fit(module, data);
  Trainer trainer(options_for_resume());
  BoringModule other;
  CHECK_THROWS_WITH(trainer.fit(other, data, {path}), Contains("holds only the model weights"));
}
