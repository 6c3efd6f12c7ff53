// TFRecord framing and TensorBoard event bytes, against golden vectors
// (../shared/reference/async-checkpoints-and-logs.md, section 2.5: hand-encoded, cross-checked
// with protoc 3.21's SerializeAsString).
#include "base/tfrecord.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "base/crc32c.h"
#include "proto/tensorboard.pb.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using trainbus::testing::TempDir;

namespace {

std::string hex(const std::string& bytes) {
  std::string out;
  char two[3];
  for (unsigned char c : bytes) {
    std::snprintf(two, sizeof two, "%02x", c);
    out += two;
  }
  return out;
}

std::string first_event_payload() {
  trainbus::tensorboard::Event event;
  event.set_wall_time(1700000000.0);
  event.set_file_version("brain.Event:2");
  return event.SerializeAsString();
}

std::string loss_event_payload() {
  trainbus::tensorboard::Event event;
  event.set_wall_time(1700000001.0);
  event.set_step(10);
  auto* value = event.mutable_summary()->add_value();
  value->set_tag("loss");
  value->set_simple_value(0.5f);
  return event.SerializeAsString();
}

}  // namespace

TEST_CASE("CRC32C and TensorFlow's mask match the reference values", "[base][tfrecord]") {
  CHECK(crc32c("123456789") == 0xE3069283u);
  CHECK(masked_crc32c("") == 0xa282ead8u);
}

TEST_CASE("Event payloads and records equal the golden bytes", "[base][tfrecord]") {
  CHECK(hex(first_event_payload()) == "0900000040fc54d9411a0d627261696e2e4576656e743a32");
  CHECK(hex(tfrecord_frame(first_event_payload())) ==
        "1800000000000000a37f4b220900000040fc54d9411a0d627261696e2e4576656e743a32eced8f9d");
  CHECK(hex(loss_event_payload()) == "0900004040fc54d941100a2a0d0a0b0a046c6f7373150000003f");
  CHECK(hex(tfrecord_frame(loss_event_payload())) ==
        "1a00000000000000129bd82d0900004040fc54d941100a2a0d0a0b0a046c6f7373150000003f5dcadba0");
}

TEST_CASE("read_tfrecords checks every CRC and stops cleanly at a torn tail", "[base][tfrecord]") {
  TempDir dir;
  const std::string path = dir.file("events.out.tfevents.test");
  const std::string bytes =
      tfrecord_frame(first_event_payload()) + tfrecord_frame(loss_event_payload());
  std::ofstream(path, std::ios::binary) << bytes;
  TfRecords all = read_tfrecords(path);
  CHECK(all.complete);
  REQUIRE(all.records.size() == 2);
  CHECK(all.records[1] == loss_event_payload());

  std::filesystem::resize_file(path, bytes.size() - 3);  // a crash in the middle of the last write
  TfRecords torn = read_tfrecords(path);
  CHECK_FALSE(torn.complete);
  CHECK(torn.records.size() == 1);
  CHECK_THAT(torn.problem, Catch::Contains("record at offset 40 is torn"));

  std::string flipped = bytes;
  flipped[20] ^= 0x01;  // inside the first payload
  std::ofstream(path, std::ios::binary | std::ios::trunc) << flipped;
  TfRecords corrupt = read_tfrecords(path);
  CHECK(corrupt.records.empty());
  CHECK_THAT(corrupt.problem, Catch::Contains("record at offset 0 has a bad data CRC"));
}

TEST_CASE("TfRecordScanner tells a torn tail, a zero-filled tail and damage apart",
          "[base][tfrecord]") {
  std::string bytes = tfrecord_frame("first") + tfrecord_frame("second");
  const std::size_t second = tfrecord_size(5);
  using Status = TfRecordScanner::Status;

  TfRecordScanner whole(bytes);
  CHECK(whole.next().payload == "first");
  CHECK(whole.next().payload == "second");
  CHECK(whole.next().status == Status::kEnd);

  for (std::size_t cut = second + 1; cut < bytes.size(); ++cut) {
    TfRecordScanner torn(std::string_view(bytes).substr(0, cut));
    REQUIRE(torn.next().status == Status::kRecord);
    const auto step = torn.next();
    CHECK(step.status == Status::kTorn);
    CHECK(step.offset == second);
  }

  const std::string zero_tail = bytes + std::string(4096, '\0');
  TfRecordScanner zeros(zero_tail);
  zeros.next();
  zeros.next();
  CHECK(zeros.next().status == Status::kZeroTail);

  std::string flipped = bytes;
  flipped[3] ^= 0x10;  // the first record's length
  CHECK(TfRecordScanner(flipped).next().status == Status::kBadLengthCrc);
  flipped = bytes;
  flipped[14] ^= 0x01;  // the first record's payload
  TfRecordScanner damaged(flipped);
  const auto bad = damaged.next();
  CHECK(bad.status == Status::kBadDataCrc);
  CHECK(bad.offset == 0);
  REQUIRE(damaged.resync());
  CHECK(damaged.offset() == second);
  CHECK(damaged.next().payload == "second");
  CHECK_FALSE(damaged.resync());
}
