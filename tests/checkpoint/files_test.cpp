// The names a checkpoint lives under: atomic replacement of `last` whatever kinds it flips
// between, and the cleanup of what crashed writers left. No LibTorch; also under the sanitizers.
#include "checkpoint/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "checkpoint/durable_file.h"
#include "checkpoint/write_progress.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::checkpoint;
using namespace trainbus::testing;
namespace fs = std::filesystem;

namespace {

// A finished checkpoint directory under a temporary name next to `path`.
std::string directory_for(const std::string& path, const std::string& content) {
  const std::string temporary = checkpoint::temporary_checkpoint_name(path);
  fs::create_directory(temporary);
  std::ofstream(fs::path(temporary) / "MANIFEST") << content;
  return temporary;
}

}  // namespace

TEST_CASE("`last` exists at every instant while it flips between a link and a directory",
          "[checkpoint][files]") {
  TempDir dir;
  const std::string best = dir.file("epoch=1.ckpt");
  checkpoint::commit_checkpoint(directory_for(best, "best"), best);
  const std::string last = dir.file("last.ckpt");
  checkpoint::link_checkpoint(best, last);

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
      checkpoint::commit_checkpoint(directory_for(last, "copy " + std::to_string(i)),
                                    last);  // a directory replaces a link
    } else {
      checkpoint::link_checkpoint(best, last);  // a link replaces a directory
    }
  }
  stop = true;
  reader.join();
  CHECK(looks > 0);
  CHECK(misses == 0);
  CHECK(fs::is_symlink(last));
  CHECK(names_in(dir.path().string()) ==
        std::set<std::string>{"epoch=1.ckpt", "last.ckpt"});  // no leftovers
  // The checkpoint the link names is untouched by every replacement of the link.
  CHECK(fs::exists(fs::path(best) / "MANIFEST"));
}

// A filesystem without RENAME_EXCHANGE, for the scope.
class NoRenameExchange {
 public:
  NoRenameExchange() { checkpoint::detail::simulate_no_rename_exchange(true); }
  ~NoRenameExchange() { checkpoint::detail::simulate_no_rename_exchange(false); }
};

TEST_CASE("Without RENAME_EXCHANGE, `last` still ends up replaced whatever kinds it flips between",
          "[checkpoint][files]") {
  TempDir dir;
  NoRenameExchange no_exchange;
  const std::string best = dir.file("epoch=1.ckpt");
  checkpoint::commit_checkpoint(directory_for(best, "best"), best);
  const std::string last = dir.file("last.ckpt");
  for (int i = 0; i < 6; ++i) {
    if (i % 2 == 0) {
      checkpoint::link_checkpoint(best, last);
      CHECK(fs::is_symlink(last));
    } else {
      checkpoint::copy_checkpoint_as_links(best, last);
      CHECK(fs::is_directory(fs::symlink_status(last)));
    }
  }
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"epoch=1.ckpt", "last.ckpt"});
}

TEST_CASE("Only what dead writers of .ckpt checkpoints left is cleaned up", "[checkpoint][files]") {
  TempDir dir;
  const std::string torn = temporary_checkpoint_name(dir.file("epoch=3.ckpt"));
  fs::create_directory(torn);  // a torn save: nobody holds its lock
  std::ofstream(torn + "/model.pt") << "torn";
  const std::string deleting = temporary_checkpoint_name(dir.file("epoch=1.ckpt")) + ".del";
  fs::create_directory(deleting);  // an eviction cut short
  const std::string unlocked = temporary_checkpoint_name(dir.file("epoch=6.ckpt")) + ".new";
  fs::create_directory(unlocked);  // its writer died before it locked it
  const std::string exchanged_out = temporary_checkpoint_name(dir.file("last.ckpt"));
  fs::create_directory_symlink("epoch=2.ckpt", exchanged_out);  // an old `last` on its way out
  TemporaryDirectory live(dir.file("epoch=4.ckpt"));       // a live writer's: it holds the lock
  fs::create_directory(dir.file("epoch=5.ckpt.tmp-1-0"));  // an older version's name, dead writer
  std::ofstream(dir.file("notes.tmp-123-0")) << "a user's file";     // not a checkpoint name
  std::ofstream(dir.file("epoch=3.ckpt.tmp-x")) << "a user's file";  // not our pattern
  fs::create_directory(dir.file("epoch=2.ckpt"));                    // a checkpoint

  CHECK(remove_stale_temporaries(dir.path().string()) == 5);
  CHECK(names_in(dir.path().string()) ==
        std::set<std::string>{"epoch=2.ckpt", "epoch=3.ckpt.tmp-x",
                              fs::path(live.path()).filename().string(), "notes.tmp-123-0"});
  CHECK(remove_stale_temporaries(dir.file("missing")) == 0);  // no directory: nothing to do
}

namespace {

// Complete: a directory (or a link to one) with a MANIFEST; created: the number written in it.
std::optional<int64_t> manifest_number(const std::string& path) {
  std::ifstream in(path + "/MANIFEST");
  int64_t number = 0;
  if (!(in >> number)) return std::nullopt;
  return number;
}

std::string read_manifest_of(const std::string& path) {
  std::ifstream in(path + "/MANIFEST");
  std::string content;
  in >> content;
  return content;
}

}  // namespace

TEST_CASE("A commit cut between its two renames is completed by the next cleanup, either way",
          "[checkpoint][files]") {
  // What a crash leaves without RENAME_EXCHANGE: the old `last` moved aside into a temporary
  // directory (as `old`), the new one complete under a temporary name (a directory, or a `link`
  // inside a temporary directory), and no `last.ckpt`.
  TempDir dir;
  const std::string last = dir.file("last.ckpt");
  fs::create_directory(dir.file("epoch=1.ckpt"));
  std::ofstream(dir.file("epoch=1.ckpt/MANIFEST")) << 5;
  SECTION("a copy replacing a link") {
    const std::string aside = checkpoint::temporary_checkpoint_name(last);
    fs::create_directory(aside);
    fs::create_directory_symlink("epoch=1.ckpt", aside + "/old");
    const std::string copy = checkpoint::temporary_checkpoint_name(last);
    fs::create_directory(copy);
    std::ofstream(copy + "/MANIFEST") << 9;
    const std::string torn = checkpoint::temporary_checkpoint_name(last);
    fs::create_directory(torn);  // a later write that never finished: not complete
    CHECK(checkpoint::remove_stale_temporaries(dir.path().string(), manifest_number) ==
          3);  // one moved, two removed
    CHECK(fs::is_directory(fs::symlink_status(last)));
    CHECK(read_manifest_of(last) == "9");
  }
  SECTION("a link replacing a copy") {
    const std::string aside = checkpoint::temporary_checkpoint_name(last);
    fs::create_directory(aside);
    fs::create_directory(aside + "/old");
    std::ofstream(aside + "/old/MANIFEST")
        << 3;  // the old copy, older than what the link points at
    const std::string holder = checkpoint::temporary_checkpoint_name(last);
    fs::create_directory(holder);
    fs::create_directory_symlink("epoch=1.ckpt", holder + "/link");
    CHECK(checkpoint::remove_stale_temporaries(dir.path().string(), manifest_number) ==
          3);  // one moved, two removed
    CHECK(fs::is_symlink(last));
    CHECK(read_manifest_of(last) == "5");
  }
  SECTION("only the old entry is complete: it is put back") {
    const std::string aside = checkpoint::temporary_checkpoint_name(last);
    fs::create_directory(aside);
    fs::create_directory(aside + "/old");
    std::ofstream(aside + "/old/MANIFEST") << 3;
    CHECK(checkpoint::remove_stale_temporaries(dir.path().string(), manifest_number) == 2);
    CHECK(read_manifest_of(last) == "3");
  }
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"epoch=1.ckpt", "last.ckpt"});
}

namespace {
// For the scope: hard links fail with `error` (EPERM: the filesystem refuses them).
struct HardLinksFail {
  explicit HardLinksFail(int error, int links_that_succeed = 0) {
    detail::simulate_hard_link_error(error, links_that_succeed);
  }
  ~HardLinksFail() { detail::simulate_hard_link_error(0); }
};
}  // namespace

TEST_CASE("Where hard links are refused, a copy of a checkpoint copies its files durably in steps",
          "[checkpoint][files]") {
  TempDir dir;
  std::filesystem::create_directory(dir.file("from"));
  // 9 MiB and a bit: three chunks of at most 4 MiB.
  std::vector<char> big((9 << 20) + 123);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 4096);
  std::ofstream(dir.file("from/big"), std::ios::binary)
      .write(big.data(), static_cast<std::streamsize>(big.size()));
  std::ofstream(dir.file("from/small")) << "small";
  WriteProgress progress;
  {
    const HardLinksFail no_hard_links(EPERM);
    const ReportWriteProgress report(progress);
    copy_checkpoint_as_links(dir.file("from"), dir.file("to"));
  }
  // Three chunks and an fsync for big, a chunk and an fsync for small, then the commit's syncs.
  CHECK(progress.steps() >= 3 + 1 + 1 + 1);
  std::ifstream copied(dir.file("to/big"), std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(copied)),
                                std::istreambuf_iterator<char>());
  CHECK(bytes == big);
  std::ifstream small(dir.file("to/small"));
  std::string text;
  small >> text;
  CHECK(text == "small");
  // Copies, not links: the originals have one name each.
  struct stat info {};
  REQUIRE(::stat(dir.file("from/big").c_str(), &info) == 0);
  CHECK(info.st_nlink == 1);
  // With hard links (the usual case) one step a file.
  WriteProgress linked;
  {
    const ReportWriteProgress report(linked);
    copy_checkpoint_as_links(dir.file("from"), dir.file("linked"));
  }
  REQUIRE(::stat(dir.file("from/big").c_str(), &info) == 0);
  CHECK(info.st_nlink == 2);
}

TEST_CASE("A hard link refused by a full disk is an error naming it, and keeps the old copy",
          "[checkpoint][files]") {
  TempDir dir;
  const std::string best = dir.file("epoch=1.ckpt");
  const std::string best_directory = directory_for(best, "best");
  std::ofstream(fs::path(best_directory) / "part-0") << "weights";
  checkpoint::commit_checkpoint(best_directory, best);
  const std::string last = dir.file("last.ckpt");
  checkpoint::commit_checkpoint(directory_for(last, "older"), last);
  const auto links_of = [](const fs::path& file) {
    struct stat info {};
    REQUIRE(::stat(file.c_str(), &info) == 0);
    return info.st_nlink;
  };
  {
    // The disk fills up after the first file is linked. Not copied instead: a copy on a full
    // disk fails too, and would say only the copy's error.
    const HardLinksFail full(ENOSPC, 1);
    CHECK_THROWS_WITH(copy_checkpoint_as_links(best, last),
                      Catch::Contains("cannot hard-link " + best + "/") &&
                          Catch::Contains(std::strerror(ENOSPC)) &&
                          Catch::Contains(last + " is not written; what was there is kept"));
  }
  CHECK(read_manifest_of(last) == "older");
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"epoch=1.ckpt", "last.ckpt"});
  CHECK(links_of(fs::path(best) / "MANIFEST") == 1);  // the link made before is gone with it
  CHECK(links_of(fs::path(best) / "part-0") == 1);
  // The ways filesystems say "no hard links here": the file has all the links it may have,
  // SMB's and sshfs's EACCES, the NFS client's ENOTSUPP (524, "Unknown error 524").
  const int refusal = GENERATE(EMLINK, EACCES, 524);
  CAPTURE(refusal);
  {
    const HardLinksFail refused(refusal);
    copy_checkpoint_as_links(best, last);
  }
  CHECK(read_manifest_of(last) == "best");
  CHECK(links_of(fs::path(best) / "MANIFEST") == 1);  // copies
  CHECK(links_of(fs::path(best) / "part-0") == 1);
}

TEST_CASE("A copy that fails where a hard link was refused says both, and keeps the old copy",
          "[checkpoint][files]") {
  TempDir dir;
  const std::string best = dir.file("epoch=1.ckpt");
  const std::string best_directory = directory_for(best, "best");
  // A directory cannot be hard-linked (EPERM, a real refusal), nor read as a file to copy it.
  fs::create_directory(fs::path(best_directory) / "nested");
  checkpoint::commit_checkpoint(best_directory, best);
  const std::string last = dir.file("last.ckpt");
  checkpoint::commit_checkpoint(directory_for(last, "older"), last);
  CHECK_THROWS_WITH(copy_checkpoint_as_links(best, last),
                    Catch::Contains("cannot read " + best + "/nested") &&
                        Catch::Contains(", copied because cannot hard-link " + best + "/nested") &&
                        Catch::Contains(std::strerror(EPERM)) &&
                        Catch::Contains(last + " is not written; what was there is kept"));
  CHECK(read_manifest_of(last) == "older");
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"epoch=1.ckpt", "last.ckpt"});
}

TEST_CASE("A directory over a `last` link, or a link removed, leaves the linked checkpoint intact",
          "[checkpoint][files]") {
  const bool exchange = GENERATE(true, false);
  CAPTURE(exchange);
  std::optional<NoRenameExchange> no_exchange;
  if (!exchange) no_exchange.emplace();
  TempDir dir;
  const std::string best = dir.file("epoch=1.ckpt");
  checkpoint::commit_checkpoint(directory_for(best, "best"), best);
  const std::string last = dir.file("last.ckpt");
  checkpoint::link_checkpoint(best, last);
  checkpoint::commit_checkpoint(directory_for(last, "full"), last);  // a full `last` over the link
  CHECK(fs::exists(fs::path(best) / "MANIFEST"));
  CHECK_FALSE(fs::is_symlink(last));
  checkpoint::link_checkpoint(best, last);
  checkpoint::remove_checkpoint(last);  // the link goes, not what it names
  CHECK(fs::exists(fs::path(best) / "MANIFEST"));
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"epoch=1.ckpt"});
}
