// What a reader of a recording sees: the events in order and a clean end; a file cut at any byte
// reads up to its last whole record; a flipped bit anywhere is named with its record and offset
// (and skipped with salvage); a zero-filled tail is not records; other files are refused clearly.
#include "record/record_file.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "base/tfrecord.h"
#include "record/event_codec.h"
#include "tests/record/read_back.h"
#include "tests/record/sample_events.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
namespace v1 = trainbus::record::v1;
using trainbus::testing::read_recording;
using trainbus::testing::TempDir;

namespace {

constexpr int kEvents = 12;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

// A recording of kEvents batch ends (steps 0..11) and a clean end; returns the byte offset at
// which each record starts (the header first, the terminal record last) and, past the end, the
// file size.
std::vector<std::size_t> write_recording(const std::string& path) {
  v1::Header header;
  header.set_seed(42);
  (*header.mutable_options())["max_epochs"] = "3";
  record::RecordFileWriter writer(path, header);
  for (int i = 0; i < kEvents; ++i) {
    auto event = testing::sample_event<events::TrainBatchEnd>(i);
    event.progress.global_step = i;
    v1::Envelope envelope;
    envelope.set_sequence(static_cast<uint64_t>(i));
    record::encode(event, envelope);
    writer.append(envelope);
  }
  writer.close();
  // Walk the frames to find where each starts.
  const std::string bytes = read_bytes(path);
  std::vector<std::size_t> starts;
  std::size_t offset = record::kMagic.size();
  while (offset < bytes.size()) {
    starts.push_back(offset);
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i) {
      length |= uint64_t{static_cast<unsigned char>(bytes[offset + i])} << (8 * i);
    }
    offset += tfrecord_size(length);
  }
  REQUIRE(offset == bytes.size());
  starts.push_back(bytes.size());
  return starts;
}

}  // namespace

TEST_CASE("next() without an envelope reads every record, across its arena's resets",
          "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  constexpr int kMany = 2500;  // the reader empties its arena every 1024 records
  {
    record::RecordFileWriter writer(path, v1::Header());
    v1::Envelope envelope;
    for (int i = 0; i < kMany; ++i) {
      auto event = testing::sample_event<events::TrainBatchEnd>(i);
      event.progress.global_step = i;
      event.metrics["step_" + std::to_string(i % 7)] = i;
      envelope.set_sequence(static_cast<uint64_t>(i));
      record::encode(event, envelope);
      writer.append(envelope);
    }
    writer.close();
  }
  record::RecordingReader reader(path);
  int read = 0;
  while (const v1::Envelope* envelope = reader.next()) {
    CHECK(envelope->sequence() == static_cast<uint64_t>(read));
    CHECK(envelope->train_batch_end().progress().global_step() == read);
    events::TrainBatchEnd event;
    record::decode(*envelope, event);
    CHECK(event.metrics.at("step_" + std::to_string(read % 7)) == read);
    ++read;
  }
  CHECK(read == kMany);
  CHECK(reader.next() == nullptr);  // stays at the end
  CHECK(reader.summary().clean_end);
}

TEST_CASE("A recording reads back with its header, every event in order and a clean end",
          "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  write_recording(path);
  record::RecordingReader reader(path);
  CHECK(reader.header().magic() == record::kHeaderMagic);
  CHECK(reader.header().format_version() == record::kFormatVersion);
  CHECK(reader.header().seed() == 42);
  CHECK(reader.header().options().at("max_epochs") == "3");
  CHECK(reader.header().start_unix_ns() > 0);
  v1::Envelope envelope;
  for (int i = 0; i < kEvents; ++i) {
    REQUIRE(reader.next(envelope));
    CHECK(envelope.sequence() == static_cast<uint64_t>(i));
    events::TrainBatchEnd event;
    record::decode(envelope, event);
    auto expected = testing::sample_event<events::TrainBatchEnd>(i);
    expected.progress.global_step = i;
    CHECK(testing::same_recorded_fields(event, expected));
  }
  CHECK_FALSE(reader.next(envelope));
  CHECK_FALSE(reader.next(envelope));  // stays at the end
  CHECK(reader.summary().clean_end);
  CHECK(reader.summary().end.events() == kEvents);
  CHECK(reader.summary().events == kEvents);
  CHECK(reader.summary().ending == "ended cleanly after 12 events");
  CHECK(reader.summary().problems.empty());
}

TEST_CASE("The writer refuses to replace a recording unless told to", "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  write_recording(path);
  const std::string before = read_bytes(path);
  CHECK_THROWS_WITH(record::RecordFileWriter(path, v1::Header()),
                    Catch::Contains(path) && Catch::Contains("a recording is already there"));
  CHECK(read_bytes(path) == before);  // nothing lost
  { record::RecordFileWriter replace(path, v1::Header(), /*overwrite=*/true); }
  CHECK(read_recording(path).summary.clean_end);
  CHECK(read_recording(path).events.empty());
  CHECK_THROWS_WITH(record::RecordFileWriter(dir.file("missing/events.tbrec"), v1::Header()),
                    Catch::Contains("missing/events.tbrec: cannot create the recording"));
}

TEST_CASE("A recording cut at any byte reads up to its last whole record", "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  const std::vector<std::size_t> starts = write_recording(path);
  const std::string bytes = read_bytes(path);
  const std::string cut_path = dir.file("cut.tbrec");
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    INFO("cut at byte " << cut);
    write_bytes(cut_path, bytes.substr(0, cut));
    if (cut < starts[1]) {  // the magic or the header is incomplete: not readable at all
      CHECK_THROWS_AS(record::RecordingReader(cut_path), record::RecordingError);
      continue;
    }
    const testing::ReadBack back = read_recording(cut_path);
    // Whole event records before the cut: those whose end (the next start) is at or before it.
    std::size_t whole = 0;
    while (whole + 2 < starts.size() - 1 && starts[whole + 2] <= cut) ++whole;
    CHECK(back.events.size() == whole);
    CHECK_FALSE(back.summary.clean_end);
    CHECK_THAT(
        back.summary.ending,
        Catch::StartsWith("ended without a terminal record after record " + std::to_string(whole)));
    if (whole > 0) {
      CHECK_THAT(back.summary.ending, Catch::Contains("(step " + std::to_string(whole - 1) + ")"));
    }
  }
}

TEST_CASE("A flipped bit in any record is reported with the record and its offset",
          "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  const std::vector<std::size_t> starts = write_recording(path);
  const std::string bytes = read_bytes(path);
  const std::string bad_path = dir.file("flipped.tbrec");
  // starts: [header, event 1..kEvents, terminal, size]; record index r starts at starts[r].
  for (std::size_t record = 1; record + 1 < starts.size(); ++record) {
    for (std::size_t at = starts[record]; at < starts[record + 1]; ++at) {
      INFO("record " << record << ", byte " << at);
      std::string flipped = bytes;
      flipped[at] = static_cast<char>(flipped[at] ^ (1 << (at % 8)));
      write_bytes(bad_path, flipped);
      try {
        read_recording(bad_path);
        FAIL("read a damaged recording without an error");
      } catch (const record::RecordingError& error) {
        CHECK(error.offset() == starts[record]);
        CHECK_THAT(error.what(), Catch::Contains("record " + std::to_string(record) +
                                                 " at offset " + std::to_string(starts[record])) &&
                                     Catch::Contains("--salvage"));
      }
      const testing::ReadBack salvaged =
          read_recording(bad_path, record::ReadOptions().salvage(true));
      const bool terminal = record + 2 == starts.size();
      CHECK(salvaged.events.size() == (terminal ? kEvents : kEvents - 1));
      CHECK(salvaged.summary.clean_end == !terminal);
      if (!terminal) CHECK_THAT(salvaged.summary.ending, Catch::Contains("lost to damage"));
      CHECK(salvaged.summary.skipped_bytes == starts[record + 1] - starts[record]);
      REQUIRE(salvaged.summary.problems.size() == 1);
      CHECK_THAT(salvaged.summary.problems[0],
                 Catch::Contains("at offset " + std::to_string(starts[record])));
    }
  }
}

TEST_CASE("After salvage skips several damaged records at once, later records keep their index",
          "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  const std::vector<std::size_t> starts = write_recording(path);
  std::string bytes = read_bytes(path);
  // Records 3 and 4 damaged (one region: the resync passes both), and record 8.
  for (const std::size_t record : {3, 4, 8}) bytes[starts[record] + 20] ^= 0x10;
  const std::string bad_path = dir.file("damaged.tbrec");
  write_bytes(bad_path, bytes);
  const testing::ReadBack salvaged = read_recording(bad_path, record::ReadOptions().salvage(true));
  CHECK(salvaged.events.size() == kEvents - 3);
  REQUIRE(salvaged.summary.problems.size() == 2);
  CHECK_THAT(salvaged.summary.problems[0],
             Catch::StartsWith("record 3 at offset " + std::to_string(starts[3])) &&
                 Catch::Contains("skipped " + std::to_string(starts[5] - starts[3]) + " bytes"));
  // The sequence numbers after the region tell how many records it held.
  CHECK_THAT(salvaged.summary.problems[1],
             Catch::StartsWith("record 8 at offset " + std::to_string(starts[8])));
}

TEST_CASE("A zero-filled tail after a crash is not records, wherever it starts", "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  const std::vector<std::size_t> starts = write_recording(path);
  const std::string bytes = read_bytes(path);
  const std::string zero_path = dir.file("zeros.tbrec");
  // The file system kept the length but not the data of the last 4 KiB page: everything from
  // some byte on is zeros (here from the middle of event 5, and from the start of event 7).
  for (const std::size_t from : {starts[5] + 20, starts[7]}) {
    std::string zeroed = bytes.substr(0, from) + std::string(4096, '\0');
    write_bytes(zero_path, zeroed);
    const testing::ReadBack back = read_recording(zero_path);
    CHECK_FALSE(back.summary.clean_end);
    CHECK(back.events.size() == (from == starts[7] ? 6u : 4u));
    CHECK_THAT(back.summary.ending, Catch::Contains("zero-filled tail"));
  }
}

TEST_CASE("Files that are not recordings get a clear error naming the file", "[record][file]") {
  TempDir dir;
  const std::string path = dir.file("events.tbrec");
  write_recording(path);
  const std::string bytes = read_bytes(path);

  const std::string text = dir.file("notes.txt");
  write_bytes(text, "hello, this is not a recording\n");
  CHECK_THROWS_WITH(record::RecordingReader(text),
                    Catch::Contains(text) && Catch::Contains("not a trainbus recording"));

  std::string mangled = bytes;
  mangled.replace(5, 2, "\n");  // a text-mode copy turned \r\n into \n
  write_bytes(text, mangled);
  CHECK_THROWS_WITH(record::RecordingReader(text), Catch::Contains("line endings"));

  CHECK_THROWS_WITH(record::RecordingReader(dir.path().string()),
                    Catch::Contains("is a directory; a recording is a file such as"));
  write_bytes(text, "");
  CHECK_THROWS_WITH(record::RecordingReader(text), Catch::Contains("is empty: the run was cut"));
  write_bytes(text, std::string(100, '\0'));
  CHECK_THROWS_WITH(record::RecordingReader(text), Catch::Contains("holds only zero bytes"));

  CHECK_THROWS_WITH(record::RecordingReader(dir.file("absent.tbrec")),
                    Catch::Contains("absent.tbrec: cannot open"));

  // A newer format: rewrite the header with version kFormatVersion + 1.
  {
    v1::Header header;
    header.set_framework_version("9.0.0");
    record::RecordFileWriter writer(dir.file("newer.tbrec"), header);
  }
  record::RecordingReader current(dir.file("newer.tbrec"));
  v1::Header future = current.header();
  future.set_format_version(record::kFormatVersion + 1);
  std::string rewritten(record::kMagic);
  append_tfrecord(rewritten, future.SerializeAsString());
  write_bytes(dir.file("newer.tbrec"), rewritten);
  const std::string newer = "format version " + std::to_string(record::kFormatVersion + 1) +
                            ", newer than this trainbus reads (" +
                            std::to_string(record::kFormatVersion) + ")";
  CHECK_THROWS_WITH(record::RecordingReader(dir.file("newer.tbrec")),
                    Catch::Contains(newer) && Catch::Contains("9.0.0"));
}

TEST_CASE("A format 1 recording is read, with a caution where its losses may be undivided",
          "[record]") {
  TempDir dir;
  v1::Header header;
  header.set_magic(std::string(record::kHeaderMagic));
  header.set_format_version(1);
  (*header.mutable_options())["accumulate-grad-batches"] = "4";
  std::string bytes(record::kMagic);
  append_tfrecord(bytes, header.SerializeAsString());
  write_bytes(dir.file("old.tbrec"), bytes);

  record::RecordingReader reader(dir.file("old.tbrec"));
  CHECK(reader.header().format_version() == 1);
  CHECK(reader.next() == nullptr);
  CHECK_THAT(record::format_caveat(reader.header()),
             Catch::Contains("accumulate-grad-batches 4") && Catch::Contains("undivided"));

  // Nothing to say without accumulation, or for the current format.
  (*header.mutable_options())["accumulate-grad-batches"] = "1";
  CHECK(record::format_caveat(header).empty());
  header.mutable_options()->clear();
  CHECK(record::format_caveat(header).empty());
  header.set_format_version(record::kFormatVersion);
  (*header.mutable_options())["accumulate-grad-batches"] = "4";
  CHECK(record::format_caveat(header).empty());
}

TEST_CASE(
    "A recording of another rank made before Setup and FitStart carried the rank reads as "
    "that rank, in its header's world",
    "[record][file]") {
  // As `--record-every-rank` wrote rank 1's recording of 2 before the fields existed: the
  // envelopes carry rank 1, the header the world size, the events nothing.
  TempDir dir;
  const std::string path = dir.file("events.rank1.tbrec");
  {
    v1::Header header;
    header.set_rank(1);
    header.set_world_size(2);
    record::RecordFileWriter writer(path, header);
    v1::Envelope envelope;
    envelope.set_rank(1);
    envelope.mutable_setup()->set_stage(v1::STAGE_FIT);
    writer.append(envelope);
    envelope.mutable_fit_start()->set_num_batches(7);
    writer.append(envelope);
    // A recorded place is kept as it is.
    events::FitStart recorded;
    recorded.global_rank = 3;
    recorded.local_rank = 1;
    recorded.world_size = 4;
    record::encode(recorded, envelope);
    writer.append(envelope);
    writer.close();
  }
  record::RecordingReader reader(path);
  v1::Envelope envelope;
  REQUIRE(reader.next(envelope));
  events::Setup setup;
  record::decode(envelope, setup);
  CHECK(setup.global_rank == 1);
  CHECK(setup.local_rank == 0);  // not known
  CHECK(setup.world_size == 2);
  REQUIRE(reader.next(envelope));
  events::FitStart old_fit_start;
  record::decode(envelope, old_fit_start);
  CHECK(old_fit_start.global_rank == 1);
  CHECK(old_fit_start.world_size == 2);
  CHECK(old_fit_start.num_batches == 7);
  REQUIRE(reader.next(envelope));
  events::FitStart new_fit_start;
  record::decode(envelope, new_fit_start);
  CHECK(new_fit_start.global_rank == 3);
  CHECK(new_fit_start.local_rank == 1);
  CHECK(new_fit_start.world_size == 4);
}
