// checkpoint::CheckpointWriter with fake payloads (no LibTorch): which pending save a newer one
// replaces, which it waits for, and how every failure comes out. Runs under ThreadSanitizer and
// ASan too. Waits are on promises and the writer's own wait(), never on sleeps.
#include "checkpoint/writer.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/errors.h"
#include "base/post_task.h"
#include "checkpoint/durable_file.h"
#include "checkpoint/files.h"
#include "checkpoint/write_progress.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

/// Writes a file at the path (or throws), after an optional gate; counts live payloads.
class FakePayload : public checkpoint::CheckpointPayload {
 public:
  FakePayload(std::size_t bytes, std::shared_ptr<std::atomic<int>> live,
              std::shared_future<void> gate = {}, bool fail = false)
      : bytes_(bytes), live_(std::move(live)), gate_(std::move(gate)), fail_(fail) {
    ++*live_;
  }
  ~FakePayload() override { --*live_; }
  void write(const std::string& path) override {
    if (gate_.valid()) gate_.wait();
    if (fail_)
      throw CheckpointError("cannot write checkpoint " + path + ": No space left on device");
    std::ofstream(path) << "checkpoint";
  }
  std::size_t bytes() const override { return bytes_; }

 private:
  std::size_t bytes_;
  std::shared_ptr<std::atomic<int>> live_;
  std::shared_future<void> gate_;
  bool fail_;
};

struct Jobs {
  std::shared_ptr<std::atomic<int>> live = std::make_shared<std::atomic<int>>(0);
  checkpoint::CheckpointJob make(const std::string& path, const std::string& group = "",
                                 std::shared_future<void> gate = {}, bool fail = false) {
    checkpoint::CheckpointJob job;
    job.path = path;
    job.payload = std::make_unique<FakePayload>(100, live, std::move(gate), fail);
    job.replace_group = group;
    return job;
  }
};

}  // namespace

TEST_CASE(
    "A pending save is replaced only by a newer save of its group, others wait for it to start",
    "[checkpoint][async]") {
  TempDir dir;
  Jobs jobs;
  checkpoint::CheckpointWriter writer;
  // The first save stays in flight until released, so the next ones queue behind it.
  std::promise<void> release;
  CHECK_FALSE(
      writer.submit(jobs.make(dir.file("first"), "", release.get_future().share())).has_value());
  CHECK_FALSE(writer.submit(jobs.make(dir.file("latest-1"), "latest")).has_value());
  // Same group: replaces the pending one at once, and frees it.
  CHECK(writer.submit(jobs.make(dir.file("latest-2"), "latest")) == dir.file("latest-1"));
  CHECK(*jobs.live == 2);
  // Another group: waits until latest-2 has started, and replaces nothing.
  auto other =
      std::async(std::launch::async, [&] { return writer.submit(jobs.make(dir.file("top-k"))); });
  while (writer.stats().waited == 0) std::this_thread::yield();  // it is waiting now
  release.set_value();
  CHECK_FALSE(other.get().has_value());
  writer.wait();

  const checkpoint::CheckpointWriterStats stats = writer.stats();
  CHECK(stats.submitted == 4);
  CHECK(stats.replaced == 1);
  CHECK(stats.waited == 1);
  CHECK(stats.written == 3);
  CHECK(stats.failed == 0);
  CHECK(stats.bytes_held == 0);
  CHECK(stats.peak_bytes_held == 200);  // never more than two payloads
  CHECK(*jobs.live == 0);               // every payload freed once written
  CHECK_FALSE(fs::exists(dir.file("latest-1")));
  for (const char* name : {"first", "latest-2", "top-k"}) CHECK(fs::exists(dir.file(name)));
}

TEST_CASE("wait_for_idle and wait_for_room say, within a limit, whether wait and submit would wait",
          "[checkpoint][async]") {
  TempDir dir;
  Jobs jobs;
  checkpoint::CheckpointWriter writer;
  CHECK(writer.wait_for_idle(std::chrono::milliseconds(0)));
  std::promise<void> release;
  writer.submit(jobs.make(dir.file("first"), "", release.get_future().share()));
  // In flight, nothing pending: a submit would queue at once; a wait would not return.
  CHECK(writer.wait_for_room("", std::chrono::milliseconds(0)));
  CHECK_FALSE(writer.wait_for_idle(std::chrono::milliseconds(1)));
  writer.submit(jobs.make(dir.file("latest-1"), "latest"));
  // Pending: a save of its group would replace it; any other would wait for it to start.
  CHECK(writer.wait_for_room("latest", std::chrono::milliseconds(0)));
  CHECK_FALSE(writer.wait_for_room("top-k", std::chrono::milliseconds(1)));
  CHECK_FALSE(writer.wait_for_room("", std::chrono::milliseconds(1)));
  release.set_value();
  REQUIRE(writer.wait_for_room("", std::chrono::seconds(10)));
  REQUIRE(writer.wait_for_idle(std::chrono::seconds(10)));
  CHECK(fs::exists(dir.file("latest-1")));
  CHECK(writer.stats().waited == 0);
}

namespace {

/// Writes its file through a DurableFile in `chunks` writes, each after the gate: the file steps
/// a real checkpoint takes.
class DurablePayload : public checkpoint::CheckpointPayload {
 public:
  DurablePayload(int chunks, std::shared_future<void> gate) : chunks_(chunks), gate_(gate) {}
  void write(const std::string& path) override {
    gate_.wait();
    checkpoint::DurableFile file(path);
    for (int i = 0; i < chunks_; ++i) file.write("chunk", 5);
    file.close_durably();
  }
  std::size_t bytes() const override { return 5; }

 private:
  int chunks_;
  std::shared_future<void> gate_;
};

}  // namespace

TEST_CASE("progress grows with every file step and every phase, path_in_flight names the save",
          "[checkpoint][async]") {
  TempDir dir;
  checkpoint::CheckpointWriter writer;
  CHECK(writer.path_in_flight().empty());
  CHECK(writer.activity().phase == checkpoint::WriterPhase::kIdle);
  const uint64_t before = writer.progress();
  std::promise<void> release;
  std::promise<void> upload_started;
  std::promise<void> upload_done;
  checkpoint::CheckpointJob job;
  job.path = dir.file("a");
  job.payload = std::make_unique<DurablePayload>(3, release.get_future().share());
  job.after_commit = [&, done = upload_done.get_future().share()](const std::string&) {
    upload_started.set_value();
    done.wait();  // an upload: no file steps of its own
  };
  writer.submit(std::move(job));
  // Held before its first step: in flight, writing, and no progress while it is.
  while (writer.path_in_flight().empty()) std::this_thread::yield();
  CHECK(writer.path_in_flight() == dir.file("a"));
  CHECK_FALSE(writer.wait_for_idle(std::chrono::milliseconds(1)));
  const checkpoint::WriteActivity writing = writer.activity();
  CHECK(writing.phase == checkpoint::WriterPhase::kWrite);
  CHECK(writing.count == before + 1);  // the phase entered
  release.set_value();
  upload_started.get_future().wait();
  // Three writes and an fsync, then after_commit's phase.
  const checkpoint::WriteActivity uploading = writer.activity();
  CHECK(uploading.phase == checkpoint::WriterPhase::kAfterCommit);
  CHECK(uploading.count == writing.count + 4 + 1);
  CHECK(writer.path_in_flight() == dir.file("a"));
  upload_done.set_value();
  writer.wait();
  // The evictions' phase, on_committed's, then the end of the save.
  CHECK(writer.activity() ==
        checkpoint::WriteActivity{uploading.count + 3, checkpoint::WriterPhase::kIdle});
  CHECK(writer.path_in_flight().empty());
}

TEST_CASE(
    "trainbus's own work after the rename (a last link or copy, an eviction) advances progress "
    "step by step in phases of file steps",
    "[checkpoint][async]") {
  // A checkpoint directory of three files, as write_checkpoint leaves one.
  TempDir dir;
  const auto make_checkpoint = [&](const std::string& name) {
    std::filesystem::create_directory(dir.file(name));
    for (const char* part : {"a", "b", "c"}) std::ofstream(dir.file(name) + "/" + part) << part;
  };
  make_checkpoint("old");
  std::vector<std::string> stepped;  // the simulated disk's calls
  checkpoint::detail::simulate_slow_disk([&](const std::string& path) { stepped.push_back(path); });
  checkpoint::WriteProgress progress;
  {
    const checkpoint::ReportWriteProgress report(progress);
    uint64_t before = progress.steps();
    checkpoint::copy_checkpoint_as_links(dir.file("old"), dir.file("copy"));
    CHECK(progress.steps() >= before + 3);  // a step a file (and the commit's syncs)
    before = progress.steps();
    checkpoint::link_checkpoint(dir.file("old"), dir.file("link"));
    CHECK(progress.steps() >= before + 2);  // the link, the commit's sync
    before = progress.steps();
    checkpoint::remove_checkpoint(dir.file("copy"));
    CHECK(progress.steps() == before + 5);  // the rename aside, each file, the directory
  }
  checkpoint::detail::simulate_slow_disk({});
  CHECK_FALSE(std::filesystem::exists(dir.file("copy")));
  CHECK(std::count(stepped.begin(), stepped.end(), dir.file("link")) == 1);
  CHECK(std::count(stepped.begin(), stepped.end(), dir.file("copy")) == 1);  // the removal
  CHECK(stepped.size() == 3 + 1 + 1);  // the copied files, the link, the removal

  // In the writer: an after_commit said to be made of file steps runs in a phase that is watched
  // for a stuck disk (checkpoint::makes_file_steps), as the evictions do.
  checkpoint::CheckpointWriter writer;
  std::promise<void> release;
  release.set_value();
  std::optional<checkpoint::WriteActivity> during_after_commit;
  checkpoint::CheckpointJob job;
  job.path = dir.file("new");
  job.payload = std::make_unique<DurablePayload>(1, release.get_future().share());
  job.after_commit_makes_file_steps = true;
  job.after_commit = [&](const std::string&) { during_after_commit = writer.activity(); };
  writer.submit(std::move(job));
  writer.wait();
  REQUIRE(during_after_commit);
  CHECK(during_after_commit->phase == checkpoint::WriterPhase::kAfterCommitFileSteps);
  CHECK(checkpoint::makes_file_steps(checkpoint::WriterPhase::kAfterCommitFileSteps));
  CHECK(checkpoint::makes_file_steps(checkpoint::WriterPhase::kRemove));
  CHECK(checkpoint::makes_file_steps(checkpoint::WriterPhase::kCommitted));
  CHECK_FALSE(checkpoint::makes_file_steps(checkpoint::WriterPhase::kAfterCommit));
  CHECK_FALSE(checkpoint::makes_file_steps(checkpoint::WriterPhase::kIdle));
}

TEST_CASE("A simulated slow disk runs before every file step, and its failure fails the save",
          "[checkpoint][async]") {
  TempDir dir;
  std::atomic<int> steps{0};
  checkpoint::detail::simulate_slow_disk([&](const std::string& path) {
    ++steps;
    if (path == dir.file("bad")) throw CheckpointError("cannot write " + path + ": stuck disk");
  });
  checkpoint::CheckpointWriter writer;
  std::promise<void> open;
  open.set_value();
  const std::shared_future<void> opened = open.get_future().share();
  for (const char* name : {"good", "bad"}) {
    checkpoint::CheckpointJob job;
    job.path = dir.file(name);
    job.payload = std::make_unique<DurablePayload>(2, opened);
    writer.submit(std::move(job));
    std::exception_ptr failed = writer.wait_quietly();
    CHECK((failed != nullptr) == (std::string(name) == "bad"));
  }
  checkpoint::detail::simulate_slow_disk({});
  CHECK(steps == 2 + 1 + 1);  // good: two writes and an fsync; bad: fails at its first step
  CHECK(fs::exists(dir.file("good")));
}

TEST_CASE("A failed after_commit is raised like a failed write, and its evictions are kept",
          "[checkpoint][async]") {
  TempDir dir;
  Jobs jobs;
  checkpoint::CheckpointWriter writer;
  std::ofstream(dir.file("old")) << "an older checkpoint";
  checkpoint::CheckpointJob job = jobs.make(dir.file("new"));
  job.remove_after_commit = {dir.file("old")};
  job.after_commit = [](const std::string& path) {
    throw CheckpointError("cannot create the symlink " + path + "/../last.ckpt: Permission denied");
  };
  writer.submit(std::move(job));
  CHECK_THROWS_AS(writer.wait(), CheckpointError);
  const checkpoint::CheckpointWriterStats stats = writer.stats();
  CHECK(stats.written == 1);  // the checkpoint itself is durable...
  CHECK(stats.failed == 1);   // ... and what follows it failed
  CHECK(fs::exists(dir.file("new")));
  CHECK(fs::exists(dir.file("old")));  // not evicted: `last` may still point at it
  CHECK_NOTHROW(writer.wait());        // raised once

  checkpoint::CheckpointJob again = jobs.make(dir.file("newer"));
  again.after_commit = [](const std::string&) { throw std::runtime_error("disk quota exceeded"); };
  writer.submit(std::move(again));
  CHECK_THROWS_WITH(writer.wait(), Contains("checkpoint " + dir.file("newer") +
                                            " was written, but what follows it "
                                            "failed: disk quota exceeded"));
}

TEST_CASE(
    "A failed write is raised by the next submit, and the save queued behind it is still attempted",
    "[checkpoint][async]") {
  TempDir dir;
  Jobs jobs;
  checkpoint::CheckpointWriter writer;
  std::promise<void> release;
  writer.submit(jobs.make(dir.file("fails"), "", release.get_future().share(), /*fail=*/true));
  writer.submit(jobs.make(dir.file("behind")));  // pending behind the failing one
  release.set_value();
  while (!writer.has_error()) std::this_thread::yield();
  CHECK_THROWS_WITH(
      writer.submit(jobs.make(dir.file("refused"))),
      Contains("cannot write checkpoint " + dir.file("fails") + ": No space left on device"));
  writer.wait();
  CHECK(fs::exists(dir.file("behind")));
  CHECK_FALSE(fs::exists(dir.file("refused")));
  CHECK(writer.stats().failed == 1);
  CHECK(*jobs.live == 0);
}

TEST_CASE("A submit that cannot start the writer leaves nothing waiting and says why",
          "[checkpoint][async]") {
  TempDir dir;
  Jobs jobs;
  checkpoint::CheckpointWriter writer;
  trainbus::detail::inject_post_failures(1);
  CHECK_THROWS_WITH(
      writer.submit(jobs.make(dir.file("a"))),
      Contains("cannot start writing checkpoint " + dir.file("a") + " in the background"));
  trainbus::detail::inject_post_failures(0);
  CHECK_NOTHROW(writer.wait());  // returns: nothing is in flight
  CHECK(*jobs.live == 0);
  CHECK(writer.stats().bytes_held == 0);
  writer.submit(jobs.make(dir.file("b")));  // the writer still works
  writer.wait();
  CHECK(fs::exists(dir.file("b")));
}

TEST_CASE("Many saves from two threads: each is written or replaced, never lost, at most two held",
          "[checkpoint][async][threads]") {
  TempDir dir;
  Jobs jobs;
  checkpoint::CheckpointWriter writer;
  std::atomic<int> replaced{0};
  auto submit_many = [&](const std::string& prefix, const std::string& group) {
    for (int i = 0; i < 200; ++i) {
      if (writer.submit(jobs.make(dir.file(prefix + std::to_string(i)), group))) ++replaced;
    }
  };
  std::thread latest([&] { submit_many("latest-", "latest"); });
  submit_many("topk-", "");
  latest.join();
  writer.wait();
  const checkpoint::CheckpointWriterStats stats = writer.stats();
  CHECK(stats.submitted == 400);
  CHECK(stats.written + stats.replaced == 400);
  CHECK(stats.replaced == static_cast<uint64_t>(replaced.load()));
  CHECK(stats.peak_bytes_held <= 200);
  CHECK(stats.bytes_held == 0);
  CHECK(*jobs.live == 0);
  for (int i = 0; i < 200; ++i)
    CHECK(fs::exists(dir.file("topk-" + std::to_string(i))));  // never replaced
  CHECK(fs::exists(dir.file("latest-199")));                   // the last of a group always lands
}

TEST_CASE("Submits from two threads while a post fails: every accepted save is written",
          "[checkpoint][async][threads]") {
  TempDir dir;
  Jobs jobs;
  checkpoint::CheckpointWriter writer;
  for (int round = 0; round < 50; ++round) {
    trainbus::detail::inject_post_failures(
        1);  // one of the two submits below (or a later one) cannot post
    std::atomic<int> accepted_a{0};
    std::string a_path = dir.file("a-" + std::to_string(round)),
                b_path = dir.file("b-" + std::to_string(round));
    std::thread other([&] {
      try {
        writer.submit(jobs.make(a_path));
        accepted_a = 1;
      } catch (const CheckpointError&) {
      }
    });
    bool accepted_b = false;
    try {
      writer.submit(jobs.make(b_path));
      accepted_b = true;
    } catch (const CheckpointError&) {
    }
    other.join();
    writer.wait();  // returns: nothing is left queued behind a post that failed
    trainbus::detail::inject_post_failures(0);
    CHECK(fs::exists(a_path) == (accepted_a == 1));
    CHECK(fs::exists(b_path) == accepted_b);
  }
  CHECK(writer.stats().bytes_held == 0);
  CHECK(*jobs.live == 0);
}
