// ModelCheckpoint: names, top-k, last, resume from "last"/"best".
#include <algorithm>
#include <filesystem>
#include <set>
#include <stdexcept>

#include <torch/optim/sgd.h>

#include "callbacks/model_checkpoint.h"
#include "checkpoint/format.h"
#include "checkpoint/module_state.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using Catch::Matchers::Contains;
using trainbus::testing::names_in;
using trainbus::testing::TempDir;
namespace fs = std::filesystem;

namespace {

/// Logs a scripted val_loss per epoch, so that the ranking is known in advance.
class ScriptedLoss : public testing::BoringModule {
 public:
  explicit ScriptedLoss(std::vector<double> losses) : losses_(std::move(losses)) {}
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    log("val_loss", losses_.at(static_cast<size_t>(trainer().current_epoch())));
    return {};
  }

 private:
  std::vector<double> losses_;
};

// With checkpointing enabled: every test gives its own checkpoint callback (but one).
TrainerOptions short_fit(int64_t epochs) {
  return testing::trainer_options()
      .enable_checkpointing(true)
      .max_epochs(epochs)
      .limit_train_batches(4)
      .limit_val_batches(1)
      .num_sanity_val_steps(0);
}

}  // namespace

TEST_CASE("ModelCheckpoint formats names as Lightning", "[callbacks][checkpoint]") {
  ModelCheckpoint checkpoint(ModelCheckpointOptions().dirpath("dir").filename(
      "{epoch}-{val_loss:.2f}-{other_metric:.3f}"));
  const Metrics metrics{{"epoch", 2}, {"step", 30}, {"val_loss", 0.1234}};
  CHECK(checkpoint.format_checkpoint_name(metrics, "") == "epoch=2-step=30");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{epoch}-{val_loss:.2f}-{other_metric:.3f}") ==
        "epoch=2-val_loss=0.12-other_metric=0.000");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{epoch:03d}", 2) == "epoch=002-v2");
  ModelCheckpointOptions plain;
  plain.auto_insert_metric_name(false);
  CHECK(ModelCheckpoint(plain).format_checkpoint_name(metrics, "e{epoch}_{val_loss:.1e}") ==
        "e2_1.2e-01");
  CHECK_THROWS_WITH(checkpoint.format_checkpoint_name(metrics, "{val_loss:>>x}"),
                    Contains("format spec `:>>x` is not supported"));
}

TEST_CASE("ModelCheckpoint formats each metric with Python's format spec, as Lightning",
          "[callbacks][checkpoint]") {
  // Lightning's ModelCheckpoint._format_checkpoint_name: `filename.format(metrics)` on tensors,
  // whose __format__ is float.__format__ (logged metrics are float tensors) or int.__format__
  // (epoch, step, and a missing metric, which becomes torch.tensor(0)). The expected names are
  // CPython 3.11's format(value, spec).
  ModelCheckpoint checkpoint(ModelCheckpointOptions().dirpath("dir"));
  const Metrics metrics{{"epoch", 3}, {"step", 120}, {"acc", 0.1234}, {"val_loss", 12.0}};
  CHECK(checkpoint.format_checkpoint_name(metrics, "{acc:.1%}") == "acc=12.3%");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{acc:+08.3f}") == "acc=+000.123");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{val_loss}") == "val_loss=12.0");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{val_loss:.3}") == "val_loss=12.0");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{val_loss:g}-{acc:.2e}") ==
        "val_loss=12-acc=1.23e-01");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{epoch:02d}-{step:,}") == "epoch=03-step=120");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{missing}-{missing:.2f}") ==
        "missing=0-missing=0.00");
  CHECK(checkpoint.format_checkpoint_name(metrics, "{epoch:.1f}") == "epoch=3.0");
  // Python refuses an integer presentation type for a float.
  CHECK_THROWS_WITH(checkpoint.format_checkpoint_name(metrics, "{acc:03d}"),
                    Contains("Unknown format code 'd' for object of type 'float'"));
}

TEST_CASE("ModelCheckpoint refuses what Lightning refuses", "[callbacks][checkpoint]") {
  ModelCheckpointOptions both;
  both.every_n_train_steps(10);
  both.every_n_epochs(2);
  CHECK_THROWS_WITH(ModelCheckpoint(both), Contains("mutually exclusive"));
  ModelCheckpointOptions no_monitor;
  no_monitor.save_top_k(3);
  CHECK_THROWS_WITH(ModelCheckpoint(no_monitor), Contains("no quantity for top_k to track"));
  ModelCheckpointOptions bad_k;
  bad_k.save_top_k(-2);
  CHECK_THROWS_WITH(ModelCheckpoint(bad_k), Contains("save_top_k=-2"));
}

TEST_CASE("Top-k keeps exactly the k best, written in the background", "[callbacks][checkpoint]") {
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.filename("{epoch}-{val_loss:.2f}");
  options.monitor("val_loss");
  options.save_top_k(2);
  auto checkpoint = std::make_shared<ModelCheckpoint>(options);
  Trainer trainer(short_fit(6), {checkpoint});
  ScriptedLoss module({0.9, 0.5, 0.7, 0.3, 0.8, 0.4});
  testing::RandomDataModule data(64, 4);
  trainer.fit(module, data);

  CHECK(names_in(dir.file("ckpts")) ==
        std::set<std::string>{"epoch=3-val_loss=0.30.ckpt", "epoch=5-val_loss=0.40.ckpt"});
  CHECK(checkpoint->best_model_path() == dir.file("ckpts/epoch=3-val_loss=0.30.ckpt"));
  CHECK(checkpoint->best_model_score() == Approx(0.3));
  CHECK(checkpoint->kth_best_model_path() == dir.file("ckpts/epoch=5-val_loss=0.40.ckpt"));
  REQUIRE(trainer.checkpoints().writer() != nullptr);
  const checkpoint::CheckpointWriterStats stats = trainer.checkpoints().writer()->stats();
  CHECK(stats.written == 5);   // epochs 0, 1, 2, 3 and 5 entered the top 2 when they ended
  CHECK(stats.replaced == 0);  // top-k members are never replaced while pending
  CHECK(stats.bytes_held == 0);
  for (const auto& name : names_in(dir.file("ckpts")))
    CHECK_NOTHROW(checkpoint::read_checkpoint(dir.file("ckpts/" + name)));

  // Its own state is in the checkpoint: a resume from "best" restores it.
  auto restored = std::make_shared<ModelCheckpoint>(options);
  Trainer resumed(short_fit(6), {restored});
  ScriptedLoss fresh({0.9, 0.5, 0.7, 0.3, 0.8, 0.4});
  resumed.fit(fresh, data, FitOptions().ckpt_path(checkpoint->best_model_path()));
  CHECK(resumed.checkpoints().resumed_from() == checkpoint->best_model_path());
  CHECK(restored->best_k_models().size() == 2);
}

TEST_CASE("save_last keeps `last` as a link or a copy of the newest save",
          "[callbacks][checkpoint]") {
  TempDir dir;
  for (auto mode :
       {ModelCheckpointOptions::SaveLast::kLink, ModelCheckpointOptions::SaveLast::kCopy}) {
    const bool link = mode == ModelCheckpointOptions::SaveLast::kLink;
    DYNAMIC_SECTION((link ? "link" : "copy")) {
      ModelCheckpointOptions options;
      options.dirpath(dir.file(link ? "link" : "copy"));
      options.save_last(mode);
      options.save_top_k(1);
      auto checkpoint = std::make_shared<ModelCheckpoint>(options);
      Trainer trainer(short_fit(3), {checkpoint});
      testing::BoringModule module;
      testing::RandomDataModule data(64, 4);
      trainer.fit(module, data);
      CHECK(names_in(options.dirpath()) ==
            std::set<std::string>{"epoch=2-step=12.ckpt", "last.ckpt"});
      CHECK(fs::is_symlink(options.dirpath() + "/last.ckpt") == link);
      CHECK(checkpoint->last_model_path() == options.dirpath() + "/last.ckpt");
      CHECK(checkpoint::read_checkpoint(options.dirpath() + "/last.ckpt").data.global_step == 12);
    }
  }
}

TEST_CASE("ckpt_path \"last\" resumes from the newest complete checkpoint, never a torn one",
          "[callbacks][checkpoint]") {
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.save_top_k(-1);
  options.every_n_train_steps(2);
  testing::RandomDataModule data(64, 4);
  {
    Trainer trainer(short_fit(2), {std::make_shared<ModelCheckpoint>(options)});
    testing::BoringModule module;
    trainer.fit(module, data);
  }
  CHECK(names_in(options.dirpath()).size() == 4);  // steps 2, 4, 6, 8
  // A crash mid-write leaves a temporary directory; a damaged checkpoint fails its CRC.
  fs::create_directory(options.dirpath() + "/epoch=9-step=99.ckpt.tmp-4242-0");
  fs::copy(options.dirpath() + "/epoch=1-step=8.ckpt", options.dirpath() + "/epoch=9-step=98.ckpt",
           fs::copy_options::recursive);
  fs::resize_file(options.dirpath() + "/epoch=9-step=98.ckpt/model.pt", 7);
  auto checkpoint = std::make_shared<ModelCheckpoint>(options);
  CHECK(checkpoint->find_last_checkpoint() == options.dirpath() + "/epoch=1-step=8.ckpt");
  Trainer resumed(short_fit(3), {checkpoint});
  testing::BoringModule module;
  resumed.fit(module, data, FitOptions().ckpt_path("last"));
  CHECK(resumed.checkpoints().resumed_from() == options.dirpath() + "/epoch=1-step=8.ckpt");
  CHECK(resumed.global_step() == 12);
  // Never deleted: the checkpoint resumed from (save_top_k=-1 deletes nothing anyway), still there.
  CHECK(fs::exists(options.dirpath() + "/epoch=1-step=8.ckpt"));
}

TEST_CASE("ckpt_path \"last\" without a checkpoint callback says what is missing",
          "[callbacks][checkpoint]") {
  Trainer trainer(short_fit(1).enable_checkpointing(false));
  testing::BoringModule module;
  testing::RandomDataModule data(64, 4);
  CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path("last")),
                    Contains("needs a checkpoint callback"));
}

TEST_CASE(
    "A step-triggered save that monitors a validation metric waits for fresh validation metrics",
    "[callbacks][checkpoint]") {
  // Lightning #20185: saving every 2 steps while monitoring val_loss failed before the first
  // validation, and saves right before a validation ranked the previous validation's value.
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.filename("{step}-{val_loss:.2f}");
  options.monitor("val_loss");
  options.save_top_k(-1);
  options.every_n_train_steps(2);
  auto checkpoint = std::make_shared<ModelCheckpoint>(options);
  Trainer trainer(short_fit(2), {checkpoint});
  ScriptedLoss module({0.9, 0.5});
  testing::RandomDataModule data(64, 4);
  trainer.fit(module, data);
  // Step 2: val_loss not logged yet, deferred to epoch 0's validation (step 4). Step 6: saved at
  // once. Step 8: validation follows, so it waits and ranks epoch 1's value.
  CHECK(names_in(options.dirpath()) == std::set<std::string>{"step=4-val_loss=0.90.ckpt",
                                                             "step=6-val_loss=0.90.ckpt",
                                                             "step=8-val_loss=0.50.ckpt"});
  CHECK(checkpoint->best_model_path() == options.dirpath() + "/step=8-val_loss=0.50.ckpt");
  const checkpoint::LoadedCheckpoint best =
      checkpoint::read_checkpoint(checkpoint->best_model_path());
  CHECK(best.data.global_step == 8);
  CHECK(best.data.callback_metrics.at("val_loss") == Approx(0.5));
}

TEST_CASE("save_last writes `last` when training ends after the newest save",
          "[callbacks][checkpoint]") {
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.every_n_train_steps(5);
  options.save_last(ModelCheckpointOptions::SaveLast::kCopy);
  auto checkpoint = std::make_shared<ModelCheckpoint>(options);
  Trainer trainer(short_fit(3), {checkpoint});
  testing::BoringModule module;
  testing::RandomDataModule data(64, 4);
  trainer.fit(module, data);
  // Saves at steps 5 and 10 (the newest kept); 12 steps in all, so `last` is written at the end.
  CHECK(names_in(options.dirpath()) == std::set<std::string>{"epoch=2-step=10.ckpt", "last.ckpt"});
  CHECK(checkpoint::read_checkpoint(options.dirpath() + "/last.ckpt").data.global_step == 12);
  CHECK(checkpoint::read_checkpoint(options.dirpath() + "/epoch=2-step=10.ckpt").data.global_step ==
        10);
}

TEST_CASE("A checkpoint directory removed during the run is made again by the next save",
          "[callbacks][checkpoint]") {
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.every_n_train_steps(1);
  options.save_last(ModelCheckpointOptions::SaveLast::kLink);
  class RemoveDirectory : public Callback {
   public:
    explicit RemoveDirectory(std::string dir) : dir_(std::move(dir)) {}
    void on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t batch_idx) override {
      if (batch_idx != 3) return;
      trainer.checkpoints().wait();
      fs::remove_all(dir_);  // as a user cleaning up by hand
    }
    std::string dir_;
  };
  auto checkpoint = std::make_shared<ModelCheckpoint>(options);
  Trainer trainer(short_fit(1), {std::make_shared<RemoveDirectory>(options.dirpath()), checkpoint});
  testing::BoringModule module;
  testing::RandomDataModule data(64, 4);
  trainer.fit(module, data);
  CHECK(names_in(options.dirpath()) == std::set<std::string>{"epoch=0-step=4.ckpt", "last.ckpt"});
  CHECK(checkpoint::read_checkpoint(options.dirpath() + "/last.ckpt").data.global_step == 4);
  CHECK(checkpoint->best_model_path() == options.dirpath() + "/epoch=0-step=4.ckpt");
}

namespace {

/// BoringModule with SGD momentum, so that the optimizer has state to copy too.
class MomentumBoring : public testing::BoringModule {
 public:
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(),
                                               torch::optim::SGDOptions(0.1).momentum(0.9));
  }
};

}  // namespace

TEST_CASE(
    "An asynchronous ModelCheckpoint prepares its buffers ahead, so no snapshot copies into new "
    "memory",
    "[callbacks][checkpoint][async]") {
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.save_top_k(-1);
  uint64_t saves = 0;
  SECTION("a step-triggered save: prepared from the batch before") {
    options.every_n_train_steps(2);
    saves = 4;  // steps 2, 4, 6, 8
  }
  SECTION("an epoch-end save: prepared from the epoch's last batch but one") { saves = 2; }
  SECTION("a save at validation end: prepared when validation starts") {
    options.save_on_train_epoch_end(false);
    saves = 2;
  }
  auto checkpoint = std::make_shared<ModelCheckpoint>(options);
  Trainer trainer(short_fit(2), {checkpoint});
  MomentumBoring module;
  testing::RandomDataModule data(64, 4);
  trainer.fit(module, data);

  REQUIRE(trainer.checkpoints().writer() != nullptr);
  const checkpoint::CheckpointWriterStats stats = trainer.checkpoints().writer()->stats();
  CHECK(stats.written == saves);
  CHECK(stats.prepared > saves);  // at train start too, for the first save
  CHECK(stats.fresh_copies == 0);
  // The newest save is of the final state: the prepared buffers hold exactly the weights.
  checkpoint::LoadedCheckpoint newest =
      checkpoint::read_checkpoint(dir.file("ckpts/epoch=1-step=8.ckpt"));
  MomentumBoring loaded;
  checkpoint::load_module_state(loaded, newest.data.state_dict, newest.path);
  CHECK(torch::equal(loaded.layer->weight, module.layer->weight));
  CHECK(torch::equal(loaded.layer->bias, module.layer->bias));
}

TEST_CASE("Without prepare_ahead, ModelCheckpoint's first save copies into new memory",
          "[callbacks][checkpoint][async]") {
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.every_n_train_steps(2);
  options.prepare_ahead(false);
  auto checkpoint = std::make_shared<ModelCheckpoint>(options);
  Trainer trainer(short_fit(1), {checkpoint});
  MomentumBoring module;
  testing::RandomDataModule data(64, 4);
  trainer.fit(module, data);

  const checkpoint::CheckpointWriterStats stats = trainer.checkpoints().writer()->stats();
  CHECK(stats.prepared == 0);
  // The first save: weight, bias and their momentum (later ones too if the last write is not done).
  CHECK(stats.fresh_copies >= 4);
}

TEST_CASE(
    "A monitored save with no score yet keeps only `last` before any validation, and is an error "
    "after one",
    "[callbacks][checkpoint]") {
  TempDir dir;
  ModelCheckpointOptions options;
  options.dirpath(dir.file("ckpts"));
  options.save_last(ModelCheckpointOptions::SaveLast::kCopy);
  SECTION("a run stopped by max_steps ahead of its first validation: a warning, as Lightning") {
    options.monitor("val_loss");
    TrainerOptions stop_early = short_fit(2);
    stop_early.max_steps(2);  // of 4 batches: the epoch ends there, before its validation
    auto checkpoint = std::make_shared<ModelCheckpoint>(options);
    Trainer trainer(stop_early, {checkpoint});
    ScriptedLoss module({0.5, 0.4});
    testing::RandomDataModule data(64, 4);
    trainer.fit(module, data);
    CHECK(names_in(dir.file("ckpts")) == std::set<std::string>{"last.ckpt"});
    CHECK(checkpoint->best_model_path().empty());
    CHECK(checkpoint::read_checkpoint(dir.file("ckpts/last.ckpt")).data.global_step == 2);
  }
  SECTION("a monitor the module never logs, once validation has run: the error names it") {
    options.monitor("val_nope");
    Trainer trainer(short_fit(1), {std::make_shared<ModelCheckpoint>(options)});
    ScriptedLoss module({0.5});
    testing::RandomDataModule data(64, 4);
    CHECK_THROWS_WITH(
        trainer.fit(module, data),
        Contains("ModelCheckpoint(monitor='val_nope') could not find the monitored key") &&
            Contains("log('val_nope', value)"));
  }
}

TEST_CASE("Every durable save and every eviction is published, with its score and size",
          "[callbacks][checkpoint][events]") {
  for (const bool async : {true, false}) {
    INFO("async " << async);
    TempDir dir;
    Trainer trainer(short_fit(4), {std::make_shared<ModelCheckpoint>(ModelCheckpointOptions()
                                                                         .dirpath(dir.file("ckpt"))
                                                                         .monitor("val_loss")
                                                                         .save_top_k(2)
                                                                         .async(async))});
    std::vector<events::CheckpointCommitted> committed;
    std::vector<events::CheckpointRemoved> removed;
    std::vector<std::string> on_disk_when_published;
    auto on_commit = trainer.bus().subscribe<events::CheckpointCommitted>(
        [&](const events::CheckpointCommitted& event) {
          committed.push_back(event);
          if (fs::exists(event.path)) on_disk_when_published.push_back(event.path);
        });
    auto on_remove = trainer.bus().subscribe<events::CheckpointRemoved>(
        [&](const events::CheckpointRemoved& event) { removed.push_back(event); });
    ScriptedLoss module({0.5, 0.4, 0.6, 0.3});  // epoch 2 is not in the top 2; 3 evicts 0
    testing::RandomDataModule data;
    trainer.fit(module, data);

    REQUIRE(committed.size() == 3);
    CHECK(on_disk_when_published.size() == 3);  // published once durable, never before
    CHECK(committed[0].path == dir.file("ckpt/epoch=0-step=4.ckpt"));
    CHECK(committed[0].progress == events::Progress{0, 4});
    CHECK(committed[0].monitor == "val_loss");
    CHECK(committed[0].score == Approx(0.5));
    CHECK(committed[1].score == Approx(0.4));
    CHECK(committed[2].path == dir.file("ckpt/epoch=3-step=16.ckpt"));
    CHECK(committed[2].score == Approx(0.3));
    for (const auto& event : committed) CHECK(event.bytes > 1000);
    REQUIRE(removed.size() == 1);
    CHECK(removed[0].path == dir.file("ckpt/epoch=0-step=4.ckpt"));
    CHECK(removed[0].progress == events::Progress{3, 16});
    CHECK_FALSE(fs::exists(removed[0].path));
  }
}

TEST_CASE("A subscriber that throws on a checkpoint event loses none of them",
          "[callbacks][checkpoint][events]") {
  TempDir dir;
  Trainer trainer(
      short_fit(2),
      {std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().dirpath(dir.file("ckpt")))});
  std::vector<std::string> received;
  bool thrown = false;
  auto on_commit = trainer.bus().subscribe<events::CheckpointCommitted>(
      [&](const events::CheckpointCommitted& event) {
        if (!thrown) {
          thrown = true;
          throw std::runtime_error("subscriber failed");
        }
        received.push_back(event.path);
      });
  ScriptedLoss module({0.5, 0.4});
  testing::RandomDataModule data;
  CHECK_THROWS_WITH(trainer.fit(module, data), Contains("subscriber failed"));
  // The event it threw on is published again on the way out, and nothing after it is lost.
  REQUIRE_FALSE(received.empty());
  CHECK(received.front() == dir.file("ckpt/epoch=0-step=4.ckpt"));
}
