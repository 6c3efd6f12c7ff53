// The names a checkpoint lives under: atomic replacement of `last` whatever kinds it flips
// between, and the cleanup of what crashed writers left. No LibTorch; also under the sanitizers.
#include "core/checkpoint_files.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::testing;
namespace fs = std::filesystem;

namespace {

// A finished checkpoint directory under a temporary name next to `path`.
std::string directory_for(const std::string& path, const std::string& content) {
  const std::string temporary = temporary_checkpoint_name(path);
  fs::create_directory(temporary);
  std::ofstream(fs::path(temporary) / "MANIFEST") << content;
  return temporary;
}

// A relative symlink to `target` under a temporary name next to `link`.
std::string symlink_for(const std::string& link, const std::string& target) {
  const std::string temporary = temporary_checkpoint_name(link);
  fs::create_directory_symlink(fs::path(target).filename(), temporary);
  return temporary;
}

// The pid of a process that has exited.
pid_t dead_pid() {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  return child;
}

}  // namespace

TEST_CASE("`last` exists at every instant while it flips between a link and a directory", "[checkpoint][files]") {
  TempDir dir;
  const std::string best = dir.file("epoch=1.ckpt");
  commit_checkpoint(directory_for(best, "best"), best);
  const std::string last = dir.file("last.ckpt");
  commit_checkpoint(symlink_for(last, best), last);

  // A reader that looks for `last` as fast as it can while it is replaced, kind for kind.
  std::atomic<bool> stop{false};
  std::atomic<int> looks{0}, misses{0};
  std::thread reader([&] {
    while (!stop) {
      struct stat info {};
      if (::lstat(last.c_str(), &info) != 0) ++misses;
      ++looks;
    }
  });
  for (int i = 0; i < 300; ++i) {
    if (i % 2 == 0) {
      commit_checkpoint(directory_for(last, "copy " + std::to_string(i)), last);  // a directory replaces a link
    } else {
      commit_checkpoint(symlink_for(last, best), last);  // a link replaces a directory
    }
  }
  stop = true;
  reader.join();
  CHECK(looks > 0);
  CHECK(misses == 0);
  CHECK(fs::is_symlink(last));
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"epoch=1.ckpt", "last.ckpt"});  // no leftovers
}

TEST_CASE("Only temporary entries of dead writers of .ckpt checkpoints are cleaned up", "[checkpoint][files]") {
  TempDir dir;
  const std::string dead = std::to_string(dead_pid());
  const std::string alive = std::to_string(::getpid());
  fs::create_directory(dir.file("epoch=3.ckpt.tmp-" + dead + "-0"));             // a torn save
  std::ofstream(dir.file("epoch=3.ckpt.tmp-" + dead + "-0/model.pt")) << "torn";
  fs::create_directory_symlink("epoch=3.ckpt", dir.file("last.ckpt.tmp-" + dead + "-7"));  // a link never renamed
  fs::create_directory(dir.file("epoch=4.ckpt.tmp-" + alive + "-1"));            // this process is writing it
  fs::create_directory(dir.file("epoch=5.ckpt.tmp-1-0"));                       // pid 1 is alive: another run's
  std::ofstream(dir.file("notes.tmp-" + dead + "-0")) << "a user's file";        // not a checkpoint name
  std::ofstream(dir.file("epoch=3.ckpt.tmp-x")) << "a user's file";              // not our pattern
  fs::create_directory(dir.file("epoch=2.ckpt"));                               // a checkpoint

  CHECK(remove_stale_temporaries(dir.path().string()) == 2);
  CHECK(names_in(dir.path().string()) ==
        std::set<std::string>{"epoch=2.ckpt", "epoch=3.ckpt.tmp-x", "epoch=4.ckpt.tmp-" + alive + "-1",
                              "epoch=5.ckpt.tmp-1-0", "notes.tmp-" + dead + "-0"});
  CHECK(remove_stale_temporaries(dir.file("missing")) == 0);  // no directory: nothing to do
}
