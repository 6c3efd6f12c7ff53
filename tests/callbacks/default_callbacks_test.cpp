// Lightning's default set: the ModelCheckpoint and the progress bar a Trainer adds by itself
// (enable_checkpointing, enable_progress_bar), where they write, and when they are left out or
// refused. The ModelSummary and max_time's Timer have theirs in model_summary_test and timer_test.
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "callbacks/model_checkpoint.h"
#include "callbacks/on_exception_checkpoint.h"
#include "core/trainer.h"
#include "observers/csv_logger.h"
#include "observers/progress_bar.h"
#include "tests/support/boring.h"
#include "tests/support/captured_stream.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using Catch::Matchers::Contains;
using trainbus::testing::names_in;
using trainbus::testing::TempDir;
namespace fs = std::filesystem;

namespace {

/// Lightning's defaults, everything written under `root`: two epochs of two batches.
TrainerOptions defaults_in(const TempDir& root) {
  return TrainerOptions()
      .default_root_dir(root.path().string())
      .max_epochs(2)
      .limit_train_batches(2)
      .limit_val_batches(1)
      .num_sanity_val_steps(0)
      .enable_model_summary(false);
}

/// What std::cout (where the default progress bar draws) receives while it lives.
class CapturedCout : public testing::CapturedStream {
 public:
  CapturedCout() : CapturedStream(std::cout) {}
};

std::vector<std::string> observer_names(const Trainer& trainer) {
  std::vector<std::string> names;
  if (trainer.observer_pool() == nullptr) return names;
  for (const events::ObserverStats& stats : trainer.observer_pool()->stats())
    names.push_back(stats.name);
  return names;
}

}  // namespace

TEST_CASE("The Trainer adds a ModelCheckpoint that keeps the last epoch in default_root_dir",
          "[callbacks][default_callbacks]") {
  TempDir root;
  Trainer trainer(defaults_in(root).enable_progress_bar(false));
  REQUIRE(checkpoint_callbacks(trainer).size() == 1);
  CHECK(trainer.callbacks().back().get() == checkpoint_callback(trainer));  // savers run last
  testing::BoringModule module;
  testing::RandomDataModule data(8, 2);
  trainer.fit(module, data);
  // Lightning's ModelCheckpoint(): no monitor, save_top_k 1, `{epoch}-{step}`.
  const std::string dir = (root.path() / "checkpoints").string();
  CHECK(checkpoint_callback(trainer)->dirpath() == dir);
  CHECK(names_in(dir) == std::set<std::string>{"epoch=1-step=4.ckpt"});
  CHECK(checkpoint_callback(trainer)->best_model_path() == dir + "/epoch=1-step=4.ckpt");
}

TEST_CASE("The default ModelCheckpoint writes into the first logger's log_dir",
          "[callbacks][default_callbacks]") {
  TempDir root;
  Trainer trainer(defaults_in(root).enable_progress_bar(false));
  const std::string version_dir = (root.path() / "lightning_logs" / "version_0").string();
  trainer.add_observer(
      std::make_shared<observers::CsvLogger>(observers::CsvLoggerOptions().log_dir(version_dir)));
  testing::BoringModule module;
  testing::RandomDataModule data(8, 2);
  trainer.fit(module, data);
  const std::string dir = version_dir + "/checkpoints";
  CHECK(checkpoint_callback(trainer)->dirpath() == dir);
  CHECK(names_in(dir) == std::set<std::string>{"epoch=1-step=4.ckpt"});
  CHECK_FALSE(fs::exists(root.path() / "checkpoints"));
}

TEST_CASE("A first logger that keeps no directory leaves the checkpoints in default_root_dir",
          "[callbacks][default_callbacks]") {
  // A logger with an empty log_dir (a remote one, say): Lightning falls back to default_root_dir
  // when the logger has no save_dir; trainbus wrote into a relative "checkpoints" before.
  class DirectorylessLogger : public events::Observer {
   public:
    bool is_logger() const override { return true; }
    std::string name() const override { return "DirectorylessLogger"; }
  };
  TempDir root;
  Trainer trainer(defaults_in(root).enable_progress_bar(false));
  trainer.add_observer(std::make_shared<DirectorylessLogger>());
  CHECK(trainer.log_dir() == root.path().string());
  testing::BoringModule module;
  testing::RandomDataModule data(8, 2);
  trainer.fit(module, data);
  const std::string dir = (root.path() / "checkpoints").string();
  CHECK(checkpoint_callback(trainer)->dirpath() == dir);
  CHECK(names_in(dir) == std::set<std::string>{"epoch=1-step=4.ckpt"});
}

TEST_CASE("A checkpoint callback given, or enable_checkpointing false, leaves the default out",
          "[callbacks][default_callbacks]") {
  TempDir root;
  SECTION("enable_checkpointing false") {
    Trainer trainer(defaults_in(root).enable_progress_bar(false).enable_checkpointing(false));
    CHECK(checkpoint_callbacks(trainer).empty());
    testing::BoringModule module;
    testing::RandomDataModule data(8, 2);
    trainer.fit(module, data);
    CHECK(names_in(root.path().string()).empty());
  }
  SECTION("a ModelCheckpoint given") {
    auto given = std::make_shared<ModelCheckpoint>(ModelCheckpointOptions().monitor("val_loss"));
    Trainer trainer(defaults_in(root), {given});
    REQUIRE(checkpoint_callbacks(trainer).size() == 1);
    CHECK(checkpoint_callback(trainer) == given.get());
  }
  SECTION("an OnExceptionCheckpoint given (a checkpoint callback too, as Lightning's)") {
    Trainer trainer(defaults_in(root),
                    {std::make_shared<OnExceptionCheckpoint>(root.path().string())});
    CHECK(checkpoint_callbacks(trainer).empty());
  }
}

TEST_CASE("enable_checkpointing false with a checkpoint callback is refused, as Lightning",
          "[callbacks][default_callbacks]") {
  CHECK_THROWS_WITH(
      Trainer(TrainerOptions().enable_checkpointing(false), {std::make_shared<ModelCheckpoint>()}),
      Contains("Trainer was configured with `enable_checkpointing=False` but found "
               "`trainbus::callbacks::ModelCheckpoint` in callbacks list"));
}

TEST_CASE("The Trainer attaches a progress bar on std::cout at the start of every kind of run",
          "[callbacks][default_callbacks]") {
  TempDir root;
  Trainer trainer(defaults_in(root).enable_checkpointing(false));
  CHECK(trainer.observer_pool() == nullptr);  // attached when a run starts, not before
  testing::BoringModule module;
  testing::RandomDataModule data(8, 2);
  SECTION("fit") {
    CapturedCout cout;
    trainer.fit(module, data);
    CHECK_THAT(cout.text(), Contains("epoch 1/2") && Contains("epoch 2/2"));
  }
  SECTION("test") {
    CapturedCout cout;
    trainer.test(module, data);
    CHECK_THAT(cout.text(), Contains("test  4/4"));
  }
  SECTION("validate (drawn on a terminal only)") {
    CapturedCout cout;
    trainer.validate(module, data);
  }
  SECTION("predict (drawn on a terminal only)") {
    CapturedCout cout;
    trainer.predict(module, data);
  }
  // Every section's run attached the bar (validate and predict draw nothing here, off a
  // terminal, so this is what they are checked by).
  CHECK(observer_names(trainer) == std::vector<std::string>{"trainbus::observers::ProgressBar"});
  // Once: the next run keeps it.
  CapturedCout cout;
  trainer.validate(module, data);
  CHECK(observer_names(trainer).size() == 1);
}

TEST_CASE("A progress bar added, or enable_progress_bar false, leaves the default out",
          "[callbacks][default_callbacks]") {
  TempDir root;
  testing::BoringModule module;
  testing::RandomDataModule data(8, 2);
  SECTION("enable_progress_bar false") {
    Trainer trainer(defaults_in(root).enable_checkpointing(false).enable_progress_bar(false));
    CapturedCout cout;
    trainer.fit(module, data);
    CHECK(trainer.observer_pool() == nullptr);
    CHECK(cout.text().empty());
  }
  SECTION("a ProgressBar added") {
    Trainer trainer(defaults_in(root).enable_checkpointing(false));
    std::ostringstream own;
    trainer.add_observer(
        std::make_shared<observers::ProgressBar>(observers::ProgressBarOptions().out(&own)));
    CapturedCout cout;
    trainer.fit(module, data);
    CHECK(observer_names(trainer).size() == 1);
    CHECK_THAT(own.str(), Contains("epoch 2/2"));
    CHECK(cout.text().empty());
  }
}

TEST_CASE("enable_progress_bar false with a progress bar added is refused, as Lightning",
          "[callbacks][default_callbacks]") {
  Trainer trainer(TrainerOptions().enable_progress_bar(false));
  CHECK_THROWS_WITH(trainer.add_observer(std::make_shared<observers::ProgressBar>()),
                    Contains("Trainer was configured with `enable_progress_bar=False` but found "
                             "`trainbus::observers::ProgressBar` among its observers"));
}

TEST_CASE("A second progress bar is refused, as Lightning", "[callbacks][default_callbacks]") {
  // Lightning's _CallbackConnector._configure_progress_bar: "You added multiple progress bar
  // callbacks to the Trainer, but currently only one progress bar is supported."
  std::ostringstream first_out;
  std::ostringstream second_out;
  Trainer trainer;
  trainer.add_observer(
      std::make_shared<observers::ProgressBar>(observers::ProgressBarOptions().out(&first_out)));
  CHECK_THROWS_WITH(trainer.add_observer(std::make_shared<observers::ProgressBar>(
                        observers::ProgressBarOptions().out(&second_out))),
                    Contains("would be a second; only one is supported") &&
                        Contains("trainbus::observers::ProgressBar"));
}
