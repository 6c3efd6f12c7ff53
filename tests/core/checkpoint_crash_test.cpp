// What is on disk after a crash mid-save: a child process saves a checkpoint every step (latest
// kept, `last` as a copy, in the background) and is killed with SIGKILL at many points. Every
// time, each checkpoint with a final name loads, and "last" resolves to a complete one.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "core/checkpoint_io.h"
#include "core/trainer.h"
#include "observers/model_checkpoint.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::observers;
using namespace trainbus::testing;
namespace fs = std::filesystem;

namespace {

ModelCheckpointOptions every_step(const std::string& dir) {
  ModelCheckpointOptions options;
  options.dirpath = dir;
  options.every_n_train_steps = 1;
  options.save_top_k = 1;
  options.save_last = ModelCheckpointOptions::SaveLast::kCopy;
  return options;
}

}  // namespace

// Run only as the child of the test below (hidden tag).
TEST_CASE("crash child: trains and saves every step until it is killed", "[.crash-child]") {
  const std::string dir = test_child_dir();
  if (dir.empty()) return;
  TrainerOptions options;
  options.max_epochs = 100000;
  options.limit_val_batches = 0;
  Trainer trainer(options, {std::make_shared<ModelCheckpoint>(every_step(dir))});
  BoringModule module;
  RandomDataModule data(64, 4);
  trainer.fit(module, data);
}

TEST_CASE("After SIGKILL at any point of a save, every checkpoint with a final name loads and `last` is complete",
          "[core][checkpoint][faults]") {
  std::mt19937 random(7);
  std::uniform_int_distribution<int> delay_us(0, 40000);
  for (int kill_point = 0; kill_point < 12; ++kill_point) {
    testing::TempDir dir;
    const std::string checkpoints = dir.file("ckpts");
    const pid_t child = spawn_test_child("[.crash-child]", checkpoints);
    // Kill points are spread over the child's saves: wait for its first complete checkpoint, then a
    // random time inside the stream of saves that follows.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (list_complete_checkpoints(checkpoints).empty() && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
    REQUIRE(::kill(child, SIGKILL) == 0);
    CHECK(WIFSIGNALED(wait_for_child(child)));

    INFO("kill point " << kill_point);
    int final_names = 0;
    for (const auto& entry : fs::directory_iterator(checkpoints)) {
      const std::string path = entry.path().string();
      if (is_temporary_checkpoint(path)) continue;  // an unfinished write: never loaded, never "last"
      ++final_names;
      INFO(path);
      CHECK_NOTHROW(read_checkpoint(path));
    }
    CHECK(final_names >= 1);
    ModelCheckpoint finder(every_step(checkpoints));
    const std::string last = finder.find_last_checkpoint();
    REQUIRE_FALSE(last.empty());
    CHECK_NOTHROW(read_checkpoint(last));
  }
}
