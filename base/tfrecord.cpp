#include "base/tfrecord.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "base/crc32c.h"

namespace trainbus {

namespace {

constexpr std::size_t kHeaderBytes = 12;  // length + its CRC
constexpr std::size_t kFooterBytes = 4;   // the payload's CRC

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

uint64_t get_le(std::string_view in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return value;
}

bool all_zero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

}  // namespace

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

void append_tfrecord(std::string& out, std::string_view payload) {
  const std::size_t start = out.size();
  put_le(out, payload.size(), 8);
  put_le(out, masked_crc32c(std::string_view(out).substr(start, 8)), 4);
  out.append(payload);
  put_le(out, masked_crc32c(payload), 4);
}

std::string tfrecord_frame(std::string_view payload) {
  std::string record;
  record.reserve(tfrecord_size(payload.size()));
  append_tfrecord(record, payload);
  return record;
}

std::size_t TfRecordScanner::zeros_start() const {
  if (zeros_start_ == std::string_view::npos) {
    const std::size_t last_nonzero = bytes_.find_last_not_of('\0');
    zeros_start_ = last_nonzero == std::string_view::npos ? 0 : last_nonzero + 1;
  }
  return zeros_start_;
}

// Whether the buffer ends in a run of zero bytes that starts within the `record_bytes` of the
// damaged record at `offset`: the tail a file system leaves after a crash (blocks allocated, never
// written), not damage. Eight zeros at least: a record's own last bytes are its CRC.
bool TfRecordScanner::zero_tail_within(std::size_t offset, std::size_t record_bytes) const {
  const std::size_t zeros = zeros_start();
  return bytes_.size() - std::max(zeros, offset) >= 8 && zeros < offset + record_bytes;
}

TfRecordScanner::Step TfRecordScanner::check(std::size_t offset) const {
  Step step;
  step.offset = offset;
  const std::size_t left = bytes_.size() - offset;
  if (left == 0) {
    step.status = Status::kEnd;
    return step;
  }
  const std::string_view rest = bytes_.substr(offset);
  if (left < kHeaderBytes) {
    step.status = all_zero(rest) ? Status::kZeroTail : Status::kTorn;
    return step;
  }
  const std::string_view length_bytes = rest.substr(0, 8);
  if (static_cast<uint32_t>(get_le(rest.substr(8), 4)) != masked_crc32c(length_bytes)) {
    step.status =
        zero_tail_within(offset, kHeaderBytes) ? Status::kZeroTail : Status::kBadLengthCrc;
    return step;
  }
  const uint64_t length = get_le(length_bytes, 8);
  if (left - kHeaderBytes < kFooterBytes || length > left - kHeaderBytes - kFooterBytes) {
    step.status = Status::kTorn;
    return step;
  }
  const std::string_view payload = rest.substr(kHeaderBytes, length);
  if (static_cast<uint32_t>(get_le(rest.substr(kHeaderBytes + length), 4)) !=
      masked_crc32c(payload)) {
    step.status =
        zero_tail_within(offset, tfrecord_size(length)) ? Status::kZeroTail : Status::kBadDataCrc;
    return step;
  }
  step.status = Status::kRecord;
  step.payload = payload;
  return step;
}

TfRecordScanner::Step TfRecordScanner::next() {
  Step step = check(offset_);
  if (step.status == Status::kRecord) offset_ += tfrecord_size(step.payload.size());
  return step;
}

bool TfRecordScanner::resync() {
  // No record starts inside the zero tail.
  const std::size_t end = std::min(bytes_.size(), zeros_start() + kHeaderBytes + kFooterBytes);
  for (std::size_t offset = offset_ + 1; offset + kHeaderBytes + kFooterBytes <= end; ++offset) {
    if (check(offset).status == Status::kRecord) {
      offset_ = offset;
      return true;
    }
  }
  return false;
}

const char* TfRecordScanner::describe(Status status) {
  switch (status) {
    case Status::kRecord:
      return "is a record";
    case Status::kEnd:
      return "is the end of the file";
    case Status::kTorn:
      return "is torn: the file ends inside it";
    case Status::kZeroTail:
      return "starts a zero-filled tail, which holds no records";
    case Status::kBadLengthCrc:
      return "has a bad length CRC";
    case Status::kBadDataCrc:
      return "has a bad data CRC";
  }
  return "is unknown";
}

TfRecords read_tfrecords(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(path + ": cannot open for reading");
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  TfRecords result;
  TfRecordScanner scanner(bytes);
  for (;;) {
    const TfRecordScanner::Step step = scanner.next();
    if (step.status == TfRecordScanner::Status::kRecord) {
      result.records.emplace_back(step.payload);
      continue;
    }
    if (step.status != TfRecordScanner::Status::kEnd) {
      result.complete = false;
      result.problem = path + ": record at offset " + std::to_string(step.offset) + " " +
                       TfRecordScanner::describe(step.status);
    }
    return result;
  }
}

}  // namespace trainbus
