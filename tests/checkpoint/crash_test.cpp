// What is on disk after a crash mid-save: a child process saves a checkpoint every step (latest
// kept, `last` as a copy; or top-1 by a score that alternates, so that `last` flips between a link
// to the best and a copy of its own) in the background, and is killed with SIGKILL at many points.
// Every time, each checkpoint with a final name loads, `last.ckpt` itself exists and loads, and the
// next run removes the temporary entries the killed one left.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "callbacks/model_checkpoint.h"
#include "checkpoint/format.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
namespace fs = std::filesystem;

namespace {

ModelCheckpointOptions every_step(const std::string& dir) {
  ModelCheckpointOptions options;
  options.dirpath(dir);
  options.every_n_train_steps(1);
  options.save_top_k(1);
  options.save_last(ModelCheckpointOptions::SaveLast::kCopy);
  return options;
}

// Top-1 by `score`, which is better on even steps: `last` is a link to the new best after those,
// and a copy of its own after the others.
ModelCheckpointOptions alternating_last(const std::string& dir) {
  ModelCheckpointOptions options = every_step(dir);
  options.monitor("score");
  options.mode("max");
  options.save_last(ModelCheckpointOptions::SaveLast::kLink);
  return options;
}

/// Logs `score`: the step on even steps, minus the step on odd ones.
class AlternatingScore : public BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    const double step = static_cast<double>(trainer().global_step() + 1);
    log("score", static_cast<int64_t>(step) % 2 == 0 ? step : -step);
    return BoringModule::training_step(batch, batch_idx);
  }
};

TrainerOptions endless() {
  TrainerOptions options = testing::trainer_options().enable_checkpointing(true);  // given one
  options.max_epochs(100000);
  options.limit_val_batches(0);
  return options;
}

std::vector<std::string> temporaries_in(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (checkpoint::is_temporary_checkpoint(entry.path().string()))
      found.push_back(entry.path().filename().string());
  }
  return found;
}

// Kills a child that saves every step at `kill_point` points spread over its saves, and checks
// what it left each time; `options` are the child's ModelCheckpoint options.
void kill_while_saving(const std::string& child_tag,
                       ModelCheckpointOptions (*options)(const std::string&), int kill_points,
                       bool with_alternating_module) {
  std::mt19937 random(7);
  std::uniform_int_distribution<int> delay_us(0, 40000);
  int links = 0, copies = 0, cleaned = 0;
  // With the alternating module, more kill points while one kind of `last` was never seen: when
  // the machine is loaded, the random kills can all land while `last` is one kind; the extra ones
  // wait for the missing kind.
  auto more_needed = [&](int kill_point) {
    if (kill_point < kill_points) return true;
    return with_alternating_module && (links == 0 || copies == 0) && kill_point < 4 * kill_points;
  };
  for (int kill_point = 0; more_needed(kill_point); ++kill_point) {
    testing::TempDir dir;
    const std::string checkpoints = dir.file("ckpts");
    const pid_t child = spawn_test_child(child_tag, checkpoints);
    // Kill points are spread over the child's saves: wait for its first complete checkpoint and
    // `last`, then a random time inside the stream of saves that follows.
    const std::string last = checkpoints + "/last.ckpt";
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while ((checkpoint::list_complete_checkpoints(checkpoints).empty() ||
            !fs::exists(fs::symlink_status(last))) &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (kill_point < kill_points) {
      std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
    } else {
      // A kind of `last` still unseen after the random kill points (a loaded machine): kill as
      // soon as `last` is of that kind, so that both kinds are checked.
      const bool want_link = links == 0;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (fs::is_symlink(fs::symlink_status(last)) != want_link &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    }
    REQUIRE(::kill(child, SIGKILL) == 0);
    CHECK(WIFSIGNALED(wait_for_child(child)));

    INFO("kill point " << kill_point);
    int final_names = 0;
    for (const auto& entry : fs::directory_iterator(checkpoints)) {
      const std::string path = entry.path().string();
      if (checkpoint::is_temporary_checkpoint(path))
        continue;  // an unfinished write: never loaded, never "last"
      ++final_names;
      INFO(path);
      CHECK_NOTHROW(checkpoint::read_checkpoint(path));
    }
    CHECK(final_names >= 1);
    // `last.ckpt` itself, not only the newest complete checkpoint, exists at every instant.
    REQUIRE(fs::exists(fs::symlink_status(last)));
    (fs::is_symlink(fs::symlink_status(last)) ? links : copies) += 1;
    CHECK_NOTHROW(checkpoint::read_checkpoint(last));
    ModelCheckpoint finder(options(checkpoints));
    const std::string newest = finder.find_last_checkpoint();
    REQUIRE_FALSE(newest.empty());
    CHECK_NOTHROW(checkpoint::read_checkpoint(newest));

    // The next run in the same directory removes what the killed one left unfinished, whatever
    // the kill left: here also a planted torn write of a dead writer (nobody holds its lock).
    const bool leftovers = !temporaries_in(checkpoints).empty();
    const std::string planted =
        checkpoint::temporary_checkpoint_name(checkpoints + "/epoch=0-step=9999.ckpt");
    fs::create_directory(planted);
    TrainerOptions short_run = testing::trainer_options().enable_checkpointing(true);
    short_run.max_epochs(1);
    short_run.limit_train_batches(1);
    short_run.limit_val_batches(0);
    Trainer next(short_run, {std::make_shared<ModelCheckpoint>(options(checkpoints))});
    AlternatingScore alternating;
    BoringModule boring;
    RandomDataModule data(64, 4);
    next.fit(with_alternating_module ? static_cast<Module&>(alternating) : boring, data);
    for (const std::string& left : temporaries_in(checkpoints)) FAIL_CHECK("left behind: " << left);
    CHECK_FALSE(fs::exists(planted));
    cleaned += leftovers;
  }
  if (with_alternating_module) {
    // Both kinds of `last` were seen at a kill (not a guarantee of the timing, but of the setup).
    CHECK(links > 0);
    CHECK(copies > 0);
  }
  UNSCOPED_INFO("temporary entries found and cleaned after " << cleaned << " of " << kill_points
                                                             << " kills");
}

}  // namespace

// Run only as the children of the tests below (hidden tags).
TEST_CASE("crash child: trains and saves every step until it is killed", "[.crash-child]") {
  const std::string dir = test_child_dir();
  if (dir.empty()) return;
  Trainer trainer(endless(), {std::make_shared<ModelCheckpoint>(every_step(dir))});
  BoringModule module;
  RandomDataModule data(64, 4);
  trainer.fit(module, data);
}

TEST_CASE("crash child: saves every step, `last` alternating between a link and a copy",
          "[.crash-child-alternating]") {
  const std::string dir = test_child_dir();
  if (dir.empty()) return;
  Trainer trainer(endless(), {std::make_shared<ModelCheckpoint>(alternating_last(dir))});
  AlternatingScore module;
  RandomDataModule data(64, 4);
  trainer.fit(module, data);
}

TEST_CASE(
    "After SIGKILL at any point of a save, every checkpoint with a final name loads and `last` is "
    "complete",
    "[checkpoint][faults]") {
  kill_while_saving("[.crash-child]", every_step, 12, false);
}

TEST_CASE(
    "After SIGKILL while `last` flips between a link and a copy, `last.ckpt` exists and loads",
    "[checkpoint][faults]") {
  kill_while_saving("[.crash-child-alternating]", alternating_last, 16, true);
}
