// The Recorder writes every event a bus publishes, in order, stamped when it was published; the
// recording ends cleanly when its pool lets it go, and a killed process leaves a recording that
// reads up to what was flushed.
#include "record/recorder.h"

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/errors.h"
#include "events/event_bus.h"
#include "events/observer_pool.h"
#include "record/event_codec.h"
#include "record/record_file.h"
#include "tests/record/read_back.h"
#include "tests/record/sample_events.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
namespace v1 = trainbus::record::v1;
using trainbus::testing::TempDir;

namespace {}  // namespace

TEST_CASE("The Recorder writes one envelope per event, in publish order, and ends cleanly",
          "[record][recorder]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  const auto before = std::chrono::system_clock::now();
  {
    events::EventBus bus;
    events::ObserverPool pool(2);
    pool.attach(bus,
                std::make_shared<record::Recorder>(record::RecorderOptions()
                                                       .path(path)
                                                       .rank(1)
                                                       .world_size(2)
                                                       .seed(7)
                                                       .command_line("trainbus fit --max-epochs 2")
                                                       .run_options({{"max_epochs", "2"}})
                                                       .hparams({{"lr", "0.001"}})));
    for (int round = 0; round < 3; ++round) {
      events::for_each_event_type([&](auto tag) {
        using E = typename decltype(tag)::type;
        bus.publish(testing::sample_event<E>(round));
      });
    }
    pool.drain();
  }  // the pool lets the recorder go: the terminal record is written

  record::RecordingReader reader(path);
  const v1::Header& header = reader.header();
  CHECK(header.rank() == 1);
  CHECK(header.world_size() == 2);
  CHECK(header.seed() == 7);
  CHECK(header.command_line() == "trainbus fit --max-epochs 2");
  CHECK(header.options().at("max_epochs") == "2");
  CHECK(header.hparams().at("lr") == "0.001");
  CHECK(header.pid() == ::getpid());
  CHECK_FALSE(header.framework_version().empty());

  const testing::ReadBack back = testing::read_recording(path);
  const std::vector<v1::Envelope>& recorded = back.events;
  const record::ReadSummary& summary = back.summary;
  REQUIRE(recorded.size() == 3 * events::AllEvents::size);
  CHECK(summary.clean_end);
  std::size_t i = 0;
  int64_t last_monotonic = -1;
  for (int round = 0; round < 3; ++round) {
    events::for_each_event_type([&](auto tag) {
      using E = typename decltype(tag)::type;
      const v1::Envelope& envelope = recorded[i];
      INFO("record " << i << ", " << E::kName);
      CHECK(envelope.sequence() == i);
      CHECK(envelope.rank() == 1);
      CHECK(record::event_name(envelope) == E::kName);
      E decoded;
      record::decode(envelope, decoded);
      CHECK(testing::same_recorded_fields(decoded, testing::sample_event<E>(round)));
      CHECK(envelope.monotonic_ns() >= last_monotonic);
      last_monotonic = envelope.monotonic_ns();
      CHECK(envelope.wall_unix_ns() == header.start_unix_ns() + envelope.monotonic_ns());
      ++i;
    });
  }
  const auto wall = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(recorded.front().wall_unix_ns())));
  CHECK(wall >= before - std::chrono::seconds(1));
  CHECK(wall <= std::chrono::system_clock::now());
}

TEST_CASE("The Recorder refuses to overwrite a recording, naming it", "[record][recorder]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  std::ofstream(path) << "an earlier run";
  // When it is attached: where it runs says which file it writes.
  events::EventBus bus;
  events::ObserverPool pool(1);
  CHECK_THROWS_WITH(
      pool.attach(bus, std::make_shared<record::Recorder>(record::RecorderOptions().path(path))),
      Catch::Contains(path) && Catch::Contains("already there"));
  CHECK(pool.size() == 0);
  std::ifstream in(path);
  std::string kept;
  std::getline(in, kept);
  CHECK(kept == "an earlier run");
}

TEST_CASE("Rank R's recording is rank 0's path with .rankR before the extension",
          "[record][recorder]") {
  CHECK(record::recording_path_of_rank("/runs/version_0/events.tbrec", 0) ==
        "/runs/version_0/events.tbrec");
  CHECK(record::recording_path_of_rank("/runs/version_0/events.tbrec", 1) ==
        "/runs/version_0/events.rank1.tbrec");
  CHECK(record::recording_path_of_rank("mine.tbrec", 12) == "mine.rank12.tbrec");
  CHECK(record::recording_path_of_rank("/runs/recording", 3) == "/runs/recording.rank3");
  // Always marked, a path marked already too: the same options on two ranks name two files.
  CHECK(record::recording_path_of_rank("/runs/events.rank1.tbrec", 1) ==
        "/runs/events.rank1.rank1.tbrec");
  CHECK(record::recording_path_of_rank("/runs/events.rank1.tbrec", 11) ==
        "/runs/events.rank1.rank11.tbrec");
  CHECK(record::recording_path_of_rank("/runs/recording.rank3", 3) ==
        "/runs/recording.rank3.rank3");
}

TEST_CASE("rank_marked_in reads the .rankN before the extension, or ending a name without one",
          "[record][recorder]") {
  CHECK(record::rank_marked_in("/runs/events.rank1.tbrec") == std::optional<int64_t>(1));
  CHECK(record::rank_marked_in("/runs/recording.rank3") == std::optional<int64_t>(3));
  CHECK(record::rank_marked_in("events.rank12.rank0.tbrec") == std::optional<int64_t>(0));
  CHECK_FALSE(record::rank_marked_in("/runs/events.tbrec"));
  CHECK_FALSE(record::rank_marked_in("/runs/events.rank.tbrec"));
  CHECK_FALSE(record::rank_marked_in("/runs/events.rankx.tbrec"));
  CHECK_FALSE(record::rank_marked_in("/runs/myrank1.tbrec"));
  CHECK_FALSE(record::rank_marked_in("/runs.rank1/events.tbrec"));
}

TEST_CASE("One Recorder's options on rank 0 and rank 1 of a job never name one file",
          "[record][recorder]") {
  TempDir dir;
  const auto path_on = [&](const std::string& path, events::Placement placement,
                           bool explicit_rank) {
    record::RecorderOptions options;
    options.path(dir.file(path)).overwrite(true);
    if (explicit_rank) options.rank(placement.global_rank);
    auto recorder = std::make_shared<record::Recorder>(options);
    events::EventBus bus;
    events::ObserverPool pool(1);
    pool.attach(bus, recorder, {}, placement);
    return recorder->path();
  };
  const events::Placement rank_zero{0, 0, 2};
  const events::Placement rank_one{1, 1, 2};
  SECTION("a plain path: rank 0's, and rank 1's marked") {
    CHECK(path_on("events.tbrec", rank_zero, false) == dir.file("events.tbrec"));
    CHECK(path_on("events.tbrec", rank_one, false) == dir.file("events.rank1.tbrec"));
  }
  SECTION("a path marked .rank1: refused on rank 0, marked again on rank 1") {
    CHECK_THROWS_MATCHES(
        path_on("events.rank1.tbrec", rank_zero, false), MisconfigurationError,
        Catch::Matchers::Message(
            "Recorder(" + dir.file("events.rank1.tbrec") +
            "): the path is marked as rank 1's recording (.rank1) but the Recorder is added on "
            "rank 0 of 2; name rank 0's recording (without .rank1): on a rank R > 0 the "
            "Recorder marks it .rankR itself"));
    CHECK_FALSE(std::filesystem::exists(dir.file("events.rank1.tbrec")));
    CHECK(path_on("events.rank1.tbrec", rank_one, false) == dir.file("events.rank1.rank1.tbrec"));
  }
  SECTION("a name without an extension is marked at its end, also when marked already") {
    CHECK(path_on("recording", rank_one, false) == dir.file("recording.rank1"));
    CHECK(path_on("recording.rank1", rank_one, false) == dir.file("recording.rank1.rank1"));
    CHECK_THROWS_AS(path_on("recording.rank1", rank_zero, false), MisconfigurationError);
  }
  SECTION("RecorderOptions::rank set (one config per rank): a path marked for it is kept") {
    CHECK(path_on("events.rank1.tbrec", rank_one, true) == dir.file("events.rank1.tbrec"));
    CHECK(path_on("recording.rank1", rank_one, true) == dir.file("recording.rank1"));
    CHECK(path_on("events.rank2.tbrec", rank_one, true) == dir.file("events.rank2.rank1.tbrec"));
    CHECK(path_on("events.tbrec", rank_zero, true) == dir.file("events.tbrec"));
  }
  SECTION("one process keeps any path") {
    CHECK(path_on("events.rank1.tbrec", events::Placement{}, false) ==
          dir.file("events.rank1.tbrec"));
  }
}

TEST_CASE(
    "A Recorder attached on rank 1 of 2 records its file as rank 1, and rank 0's is not touched",
    "[record][recorder]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  std::ofstream(path) << "rank 0's recording";
  auto recorder = std::make_shared<record::Recorder>(record::RecorderOptions().path(path));
  {
    events::EventBus bus;
    events::ObserverPool pool(1);
    pool.attach(bus, recorder, {}, events::Placement{1, 1, 2});
    CHECK(recorder->path() == dir.file("events.rank1.tbrec"));
    CHECK(recorder->name() == "Recorder(" + dir.file("events.rank1.tbrec") + ")");
    // One Recorder is one rank's recording.
    CHECK_THROWS_WITH(pool.attach(bus, recorder, {}, events::Placement{0, 0, 2}),
                      "Recorder(" + dir.file("events.rank1.tbrec") +
                          ") records rank 1 of 2's events already; it cannot also be added on "
                          "rank 0 of 2: make a Recorder for each");
    // Nor on rank 1 of another job: its header says 2 processes.
    CHECK_THROWS_WITH(pool.attach(bus, recorder, {}, events::Placement{1, 1, 3}),
                      "Recorder(" + dir.file("events.rank1.tbrec") +
                          ") records rank 1 of 2's events already; it cannot also be added on "
                          "rank 1 of 3: make a Recorder for each");
    bus.publish(testing::sample_event<events::TrainBatchEnd>(0));
    pool.drain();
  }
  recorder.reset();
  const testing::ReadBack back = testing::read_recording(dir.file("events.rank1.tbrec"));
  REQUIRE(back.events.size() == 1);
  CHECK(back.events[0].rank() == 1);
  CHECK(back.summary.clean_end);
  const record::RecordingReader reader(dir.file("events.rank1.tbrec"));
  CHECK(reader.header().rank() == 1);
  CHECK(reader.header().world_size() == 2);
  std::ifstream in(path);
  std::string kept;
  std::getline(in, kept);
  CHECK(kept == "rank 0's recording");
}

TEST_CASE("A Recorder never attached and given no event writes no file", "[record][recorder]") {
  TempDir dir;
  { record::Recorder recorder(record::RecorderOptions().path(dir.file("events.tbrec"))); }
  CHECK_FALSE(std::filesystem::exists(dir.file("events.tbrec")));
  // Fed an event directly: one process's recording, at its path.
  {
    record::Recorder recorder(record::RecorderOptions().path(dir.file("events.tbrec")));
    recorder.on_train_start(events::TrainStart{});
  }
  const record::RecordingReader reader(dir.file("events.tbrec"));
  CHECK(reader.header().rank() == 0);
  CHECK(reader.header().world_size() == 1);
}

namespace {
constexpr int kKilledEvents = 200;
}  // namespace

TEST_CASE("Recorder child: publishes, then waits to be killed", "[.record-kill-child]") {
  const std::string dir = trainbus::testing::test_child_dir();
  if (dir.empty()) return;
  events::EventBus bus;
  events::ObserverPool pool(1);
  pool.attach(bus, std::make_shared<record::Recorder>(
                       record::RecorderOptions().path(dir + "/events.tbrec")));
  for (int i = 0; i < kKilledEvents; ++i) {
    auto event = testing::sample_event<events::TrainBatchEnd>(i);
    event.progress.global_step = i;
    bus.publish(event);
  }
  std::ofstream(dir + "/published") << "done";
  for (;;) ::pause();  // no exit: only the pool's flush interval writes the records out
}

TEST_CASE("After SIGKILL, a recording reads up to what was flushed, and says it was cut",
          "[record][recorder][faults]") {
  TempDir dir;
  const pid_t child =
      trainbus::testing::spawn_test_child("[.record-kill-child]", dir.path().string());
  // The events reach the file within the pool's flush interval (1 s) of being published; allow as
  // much again for a loaded machine, and no more.
  const auto started = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> published;
  std::size_t on_disk = 0;
  const std::string path = dir.file("events.tbrec");
  while (std::chrono::steady_clock::now() - started < std::chrono::seconds(60)) {
    if (!published && std::filesystem::exists(dir.file("published")))
      published = std::chrono::steady_clock::now();
    if (published) {
      on_disk = testing::read_recording(path).events.size();
      if (on_disk == kKilledEvents) break;
      if (std::chrono::steady_clock::now() - *published > std::chrono::seconds(2)) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polls another process's file
  }
  REQUIRE(::kill(child, SIGKILL) == 0);
  trainbus::testing::wait_for_child(child);
  const testing::ReadBack back = testing::read_recording(path);
  const record::ReadSummary& summary = back.summary;
  CHECK(back.events.size() == kKilledEvents);
  CHECK_FALSE(summary.clean_end);
  CHECK_THAT(summary.ending, Catch::StartsWith("ended without a terminal record after record 200 "
                                               "(step 199)"));
}

TEST_CASE("A recording whose writes failed gets no terminal record: it reads as cut, not clean",
          "[record][recorder][faults]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  constexpr int kPublished = 40000;  // several MiB: the Recorder writes every MiB
  ::signal(SIGXFSZ, SIG_IGN);        // a write past the limit fails with EFBIG instead
  rlimit saved{};
  ::getrlimit(RLIMIT_FSIZE, &saved);
  auto recorder = std::make_shared<record::Recorder>(record::RecorderOptions().path(path));
  {
    events::EventBus bus;
    events::ObserverPool pool(1);
    pool.attach(bus, recorder);
    rlimit limit = saved;
    limit.rlim_cur = static_cast<rlim_t>(std::filesystem::file_size(path) + 100);
    ::setrlimit(RLIMIT_FSIZE, &limit);
    for (int i = 0; i < kPublished; ++i) {
      auto event = testing::sample_event<events::TrainBatchEnd>(i);
      bus.publish(event);
    }
    pool.drain();
    CHECK_THROWS_WITH(pool.check(), Catch::Contains("Recorder(" + path + ")") &&
                                        Catch::Contains("File too large"));
    ::setrlimit(RLIMIT_FSIZE, &saved);  // space again: a terminal record could be written now
  }
  recorder.reset();
  ::signal(SIGXFSZ, SIG_DFL);

  const testing::ReadBack back = testing::read_recording(path);
  const record::ReadSummary& summary = back.summary;
  const std::size_t read = back.events.size();
  CHECK(read < static_cast<std::size_t>(kPublished));
  CHECK_FALSE(summary.clean_end);
  CHECK_THAT(summary.ending, Catch::StartsWith("ended without a terminal record"));
}

namespace {
// Holds the pool's only thread in its hook until released.
class Blocker : public events::Observer {
 public:
  std::promise<void> entered;
  std::shared_future<void> release;
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::FitStart>();
  }
  void on_fit_start(const events::FitStart&) override {
    entered.set_value();
    release.wait();
  }
};
}  // namespace

TEST_CASE("Events the Recorder never got are counted in its terminal record and reported",
          "[record][recorder]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  std::promise<void> release;
  {
    events::EventBus bus;
    events::ObserverPool pool(1);
    auto blocker = std::make_shared<Blocker>();
    blocker->release = release.get_future().share();
    std::future<void> entered = blocker->entered.get_future();
    pool.attach(bus, blocker);
    pool.attach(
        bus, std::make_shared<record::Recorder>(record::RecorderOptions().path(path)),
        events::ObserverOptions().capacity(1).when_full(events::ObserverOptions::WhenFull::kDrop));
    bus.publish(events::FitStart{});  // the blocker takes the pool's thread
    pool.kick();
    entered.wait();
    // The Recorder's queue (capacity 1) holds an event: most of these find it full.
    for (int i = 0; i < 5; ++i) bus.publish(testing::sample_event<events::TrainBatchEnd>(i));
    release.set_value();
    pool.drain();
  }
  record::RecordingReader reader(path);
  record::v1::Envelope envelope;
  int events_read = 0;
  while (reader.next(envelope)) ++events_read;
  // Its queue held one event when the others came (the FitStart, or the first batch end if it
  // had handled the FitStart before the blocker took the thread); the rest were dropped.
  const uint64_t lost = reader.summary().end.dropped();
  CHECK(lost >= 4);
  CHECK(static_cast<uint64_t>(events_read) + lost == 6);
  CHECK(reader.summary().clean_end);
  CHECK(reader.summary().ending.find("with " + std::to_string(lost) + " events lost") !=
        std::string::npos);
  REQUIRE(reader.summary().problems.size() == 1);
  CHECK(reader.summary().problems[0].find("the recorder lost " + std::to_string(lost) +
                                          " events") != std::string::npos);
}
