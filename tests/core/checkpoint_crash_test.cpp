// What is on disk after a crash mid-save: a child process saves a checkpoint every step (latest
// kept, `last` as a copy, in the background) and is killed with SIGKILL at many points. Every
// time, each checkpoint with a final name loads, and "last" resolves to a complete one.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "core/checkpoint_io.h"
#include "core/trainer.h"
#include "observers/model_checkpoint.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"

extern char** environ;

using namespace trainbus;
using namespace trainbus::observers;
namespace fs = std::filesystem;

namespace {

constexpr const char* kChildDirVariable = "TRAINBUS_CRASH_CHILD_DIR";

ModelCheckpointOptions every_step(const std::string& dir) {
  ModelCheckpointOptions options;
  options.dirpath = dir;
  options.every_n_train_steps = 1;
  options.save_top_k = 1;
  options.save_last = ModelCheckpointOptions::SaveLast::kCopy;
  return options;
}

pid_t spawn_child(const std::string& dir) {
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  std::string variable = std::string(kChildDirVariable) + "=" + dir;
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  env.push_back(variable.data());
  env.push_back(nullptr);
  std::string tag = "[.crash-child]";
  char* argv[] = {const_cast<char*>(self.c_str()), tag.data(), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, env.data()) == 0);
  return pid;
}

}  // namespace

// Run only as the child of the test below (hidden tag).
TEST_CASE("crash child: trains and saves every step until it is killed", "[.crash-child]") {
  const char* dir = std::getenv(kChildDirVariable);
  if (dir == nullptr) return;
  TrainerOptions options;
  options.max_epochs = 100000;
  options.limit_val_batches = 0;
  Trainer trainer(options, {std::make_shared<ModelCheckpoint>(every_step(dir))});
  testing::BoringModule module;
  testing::RandomDataModule data(64, 4);
  trainer.fit(module, data);
}

TEST_CASE("After SIGKILL at any point of a save, every checkpoint with a final name loads and `last` is complete",
          "[core][checkpoint][faults]") {
  std::mt19937 random(7);
  std::uniform_int_distribution<int> delay_us(0, 40000);
  for (int kill_point = 0; kill_point < 12; ++kill_point) {
    testing::TempDir dir;
    const std::string checkpoints = dir.file("ckpts");
    const pid_t child = spawn_child(checkpoints);
    // Kill points are spread over the child's saves: wait for its first complete checkpoint, then a
    // random time inside the stream of saves that follows.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (list_complete_checkpoints(checkpoints).empty() && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us(random)));
    REQUIRE(::kill(child, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFSIGNALED(status));

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
