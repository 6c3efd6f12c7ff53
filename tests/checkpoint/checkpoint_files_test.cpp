// The names a checkpoint lives under: atomic replacement of `last` whatever kinds it flips
// between, and the cleanup of what crashed writers left. No LibTorch; also under the sanitizers.
#include "core/checkpoint_files.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <optional>
#include <fstream>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "core/durable_file.h"
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

// Sets an entry's modification time `age` into the past (not following a symlink).
void age_by(const std::string& path, std::chrono::seconds age) {
  struct timespec times[2];
  ::clock_gettime(CLOCK_REALTIME, &times[0]);
  times[0].tv_sec -= static_cast<time_t>(age.count());
  times[1] = times[0];
  ::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW);
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

TEST_CASE("Without RENAME_EXCHANGE, `last` still ends up replaced whatever kinds it flips between",
          "[checkpoint][files]") {
  TempDir dir;
  detail::simulate_no_rename_exchange(true);
  const std::string best = dir.file("epoch=1.ckpt");
  commit_checkpoint(directory_for(best, "best"), best);
  const std::string last = dir.file("last.ckpt");
  for (int i = 0; i < 6; ++i) {
    if (i % 2 == 0) {
      commit_checkpoint(symlink_for(last, best), last);
      CHECK(fs::is_symlink(last));
    } else {
      commit_checkpoint(directory_for(last, "copy " + std::to_string(i)), last);
      CHECK(fs::is_directory(fs::symlink_status(last)));
    }
  }
  detail::simulate_no_rename_exchange(false);
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"epoch=1.ckpt", "last.ckpt"});
}

TEST_CASE("Only what dead writers of .ckpt checkpoints left is cleaned up", "[checkpoint][files]") {
  TempDir dir;
  const std::string stale_write = temporary_checkpoint_name(dir.file("epoch=3.ckpt"));
  fs::create_directory(stale_write);  // a torn save: nobody holds its lock
  std::ofstream(stale_write + "/model.pt") << "torn";
  const std::string stale_old = temporary_checkpoint_name(dir.file("epoch=1.ckpt")) + ".old";
  fs::create_directory(stale_old);  // an eviction cut short
  const std::string stale_link = temporary_checkpoint_name(dir.file("last.ckpt"));
  fs::create_directory_symlink("epoch=2.ckpt", stale_link);  // a link never renamed, long ago
  age_by(stale_link, std::chrono::seconds(3600));
  const std::string fresh_link = temporary_checkpoint_name(dir.file("last.ckpt"));
  fs::create_directory_symlink("epoch=2.ckpt", fresh_link);  // a live writer's, about to be renamed
  TemporaryDirectory live(dir.file("epoch=4.ckpt"));       // a live writer's: it holds the lock
  fs::create_directory(dir.file("epoch=5.ckpt.tmp-1-0"));   // an older trainbus's name, dead writer
  std::ofstream(dir.file("notes.tmp-123-0")) << "a user's file";  // not a checkpoint name
  std::ofstream(dir.file("epoch=3.ckpt.tmp-x")) << "a user's file";  // not our pattern
  fs::create_directory(dir.file("epoch=2.ckpt"));  // a checkpoint

  CHECK(remove_stale_temporaries(dir.path().string()) == 4);
  CHECK(names_in(dir.path().string()) ==
        std::set<std::string>{"epoch=2.ckpt", "epoch=3.ckpt.tmp-x", fs::path(live.path()).filename().string(),
                              fs::path(fresh_link).filename().string(), "notes.tmp-123-0"});
  CHECK(remove_stale_temporaries(dir.file("missing")) == 0);  // no directory: nothing to do
}

TEST_CASE("A commit cut between its two renames is completed by the next cleanup", "[checkpoint][files]") {
  // What a crash leaves on a filesystem without RENAME_EXCHANGE: the old `last` moved aside, the
  // new one complete under its temporary name, and no `last.ckpt`.
  TempDir dir;
  const std::string last = dir.file("last.ckpt");
  const std::string old_one = temporary_checkpoint_name(last) + ".old";
  fs::create_directory(old_one);
  std::ofstream(old_one + "/MANIFEST") << "old";
  const std::string new_one = temporary_checkpoint_name(last);
  fs::create_directory(new_one);
  std::ofstream(new_one + "/MANIFEST") << "new";
  const std::string torn = temporary_checkpoint_name(last);
  fs::create_directory(torn);  // a later write that never finished: not complete
  // Complete: has a MANIFEST; created: the order of the names' counters (later is newer).
  auto complete = [&](const std::string& path) -> std::optional<int64_t> {
    if (!fs::exists(path + "/MANIFEST")) return std::nullopt;
    return path == new_one ? 2 : 1;
  };
  CHECK(remove_stale_temporaries(dir.path().string(), complete) == 3);  // one moved, two removed
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"last.ckpt"});
  std::ifstream in(last + "/MANIFEST");
  std::string content;
  in >> content;
  CHECK(content == "new");
}
