// Saves that fail: a directory that cannot be created, a read-only directory, a full disk. Each
// fails fit with an error naming the path and the cause, through on_exception, and leaves the
// checkpoints already on disk intact and no temporary directory behind.
//
// The read-only and no-space cases run in a child process (tests/support/child_process.h): the
// child drops root (root ignores directory permissions), or mounts a small tmpfs in a private
// mount namespace (falling back to a file-size limit where mounting is not permitted).
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <set>

#include "checkpoint/format.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

/// Saves `good` (synchronously) after batch 1; after batch 2 runs `before_bad` and saves `bad`
/// (in the background if `async`). Keeps what on_exception was told.
class SaveGoodThenBad : public Callback {
 public:
  SaveGoodThenBad(std::string good, std::string bad, bool async,
                  std::function<void()> before_bad = {})
      : good_(std::move(good)),
        bad_(std::move(bad)),
        async_(async),
        before_bad_(std::move(before_bad)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (batch_idx == 1 && !good_.empty()) trainer.save_checkpoint(good_);
    if (batch_idx == 2) {
      if (before_bad_) before_bad_();
      trainer.save_checkpoint(bad_, SaveCheckpointOptions().async(async_));
    }
  }
  void on_exception(Trainer&, Module&, const std::exception& error) override {
    seen = error.what();
  }
  std::string seen;

 private:
  std::string good_, bad_;
  bool async_;
  std::function<void()> before_bad_;
};

TrainerOptions short_run() {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_val_batches(0);
  options.seed(3);
  return options;
}

/// Runs a fit with `saver`; requires it to fail with a CheckpointError and returns its message.
std::string failing_fit(const std::shared_ptr<SaveGoodThenBad>& saver) {
  Trainer trainer(short_run(), {saver});
  BoringModule module;
  RandomDataModule data(16, 4);
  std::string message;
  try {
    trainer.fit(module, data);
  } catch (const CheckpointError& error) {
    message = error.what();
  }
  CHECK(saver->seen == message);
  return message;
}

void save_good_checkpoint(const std::string& path) {
  class SaveOnly : public Callback {
   public:
    explicit SaveOnly(std::string path) : path_(std::move(path)) {}
    void on_train_end(Trainer& trainer, Module&) override { trainer.save_checkpoint(path_); }
    std::string path_;
  };
  Trainer trainer(short_run(), {std::make_shared<SaveOnly>(path)});
  BoringModule module;
  RandomDataModule data(16, 4);
  trainer.fit(module, data);
}

// --- a full disk --------------------------------------------------------------------------------

/// Where the child's saves run out of space: a 1 MiB tmpfs mounted in the child's own mount
/// namespace (a real ENOSPC), or, where mounting is not permitted, a 1 KiB file-size limit (EFBIG).
class SmallDisk {
 public:
  explicit SmallDisk(const std::string& dir) : dir_(dir) {
    tmpfs_ = ::unshare(CLONE_NEWNS) == 0 &&
             ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
             ::mount("trainbus-test", dir.c_str(), "tmpfs", 0, "size=1m") == 0;
    std::cout << "no-space child: " << (tmpfs_ ? "1 MiB tmpfs" : "RLIMIT_FSIZE of 1 KiB") << "\n";
  }
  /// The error the next write gets.
  const char* cause() const { return tmpfs_ ? "No space left on device" : "File too large"; }
  /// Uses up the space: fills the tmpfs, or lowers the file-size limit.
  void exhaust() {
    if (tmpfs_) {
      std::ofstream filler(dir_ + "/filler", std::ios::binary);
      const std::string block(4096, 'x');
      while (filler.write(block.data(), block.size())) {
      }
      return;
    }
    ::signal(SIGXFSZ, SIG_IGN);  // the write fails with EFBIG instead of killing the process
    ::getrlimit(RLIMIT_FSIZE, &saved_limit_);
    rlimit limit = saved_limit_;
    limit.rlim_cur = 1024;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  /// Gives the space back so the old checkpoint can be checked.
  void restore() {
    if (tmpfs_) {
      fs::remove(dir_ + "/filler");
    } else {
      ::setrlimit(RLIMIT_FSIZE, &saved_limit_);
    }
  }

 private:
  std::string dir_;
  bool tmpfs_ = false;
  rlimit saved_limit_{};
};

}  // namespace

TEST_CASE("A save where its directory cannot be created fails fit with the path and the cause",
          "[checkpoint][faults]") {
  TempDir dir;
  const std::string good = dir.file("ckpts/good.ckpt");
  const std::string blocked_dir = dir.file("ckpts/blocked");
  fs::create_directories(dir.file("ckpts"));
  std::ofstream(blocked_dir) << "a file where a directory should be";
  for (bool async : {false, true}) {
    DYNAMIC_SECTION((async ? "async" : "sync")) {
      const std::string bad = blocked_dir + "/bad.ckpt";
      const std::string message = failing_fit(std::make_shared<SaveGoodThenBad>(good, bad, async));
      CHECK_THAT(message,
                 Contains("cannot create directory " + blocked_dir + " for checkpoint " + bad));
      CHECK_NOTHROW(checkpoint::read_checkpoint(good));
    }
  }
}

// Run only as the child of the test below (hidden tag): drops root, then saves into a read-only
// directory.
TEST_CASE("read-only child: saves into a directory it may not write", "[.read-only-child]") {
  const std::string dir = test_child_dir();
  if (dir.empty()) return;
  if (::geteuid() == 0) {
    REQUIRE(::setgroups(0, nullptr) == 0);
    REQUIRE(::setgid(65534) == 0);
    REQUIRE(::setuid(65534) == 0);  // nobody
  }
  REQUIRE(::access(dir.c_str(), W_OK) != 0);
  for (bool async : {false, true}) {
    DYNAMIC_SECTION((async ? "async" : "sync")) {
      const std::string bad = dir + "/bad.ckpt";
      const std::string message = failing_fit(std::make_shared<SaveGoodThenBad>("", bad, async));
      CHECK_THAT(message, Contains("cannot write checkpoint " + bad));
      CHECK_THAT(message, Contains("Permission denied"));
    }
  }
}

TEST_CASE(
    "A save into a read-only directory fails fit with the path and the cause, keeping older "
    "checkpoints",
    "[checkpoint][faults]") {
  TempDir dir;
  fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                  fs::perms::others_read | fs::perms::others_exec);
  const std::string checkpoints = dir.file("ckpts");
  save_good_checkpoint(checkpoints + "/good.ckpt");
  fs::permissions(checkpoints, fs::perms::owner_write, fs::perm_options::remove);
  REQUIRE(run_test_child("[.read-only-child]", checkpoints));
  fs::permissions(checkpoints, fs::perms::owner_write, fs::perm_options::add);
  CHECK(names_in(checkpoints) == std::set<std::string>{"good.ckpt"});
  CHECK_NOTHROW(checkpoint::read_checkpoint(checkpoints + "/good.ckpt"));
}

// Run only as the child of the test below (hidden tag): saves until the disk is full.
TEST_CASE("no-space child: saves onto a full disk", "[.no-space-child]") {
  const std::string dir = test_child_dir();
  if (dir.empty()) return;
  SmallDisk disk(dir);
  for (bool async : {false, true}) {
    DYNAMIC_SECTION((async ? "async" : "sync")) {
      const std::string checkpoints = dir + (async ? "/async" : "/sync");
      const std::string good = checkpoints + "/good.ckpt";
      const std::string bad = checkpoints + "/bad.ckpt";
      const std::string message = failing_fit(
          std::make_shared<SaveGoodThenBad>(good, bad, async, [&disk] { disk.exhaust(); }));
      disk.restore();
      CHECK_THAT(message, Contains("cannot write checkpoint " + bad));
      CHECK_THAT(message, Contains(disk.cause()));
      CHECK(names_in(checkpoints) == std::set<std::string>{"good.ckpt"});
      CHECK_NOTHROW(checkpoint::read_checkpoint(good));
    }
  }
}

TEST_CASE(
    "A save onto a full disk fails fit with the path and the cause, keeping older checkpoints",
    "[checkpoint][faults]") {
  TempDir dir;
  REQUIRE(run_test_child("[.no-space-child]", dir.path().string()));
}
