#include "observers/tfrecord.h"

#include <fstream>
#include <iterator>
#include <stdexcept>

#include "base/crc32c.h"

namespace trainbus::observers {
namespace {

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

uint64_t get_le(std::string_view in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  return value;
}

}  // namespace

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t crc = trainbus::crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string tfrecord_frame(std::string_view payload) {
  std::string record;
  record.reserve(payload.size() + 16);
  put_le(record, payload.size(), 8);
  put_le(record, masked_crc32c(std::string_view(record.data(), 8)), 4);
  record.append(payload);
  put_le(record, masked_crc32c(payload), 4);
  return record;
}

TfRecords read_tfrecords(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(path + ": cannot open for reading");
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const std::string_view all(bytes);
  TfRecords result;
  size_t offset = 0;
  auto stop = [&](const std::string& why) {
    result.complete = false;
    result.problem = path + ": record at offset " + std::to_string(offset) + " " + why;
    return result;
  };
  while (offset < all.size()) {
    if (all.size() - offset < 12) return stop("is torn: the file ends inside its header");
    const std::string_view header = all.substr(offset, 8);
    if (static_cast<uint32_t>(get_le(all.substr(offset + 8), 4)) != masked_crc32c(header)) {
      return stop("has a bad length CRC");
    }
    const uint64_t length = get_le(header, 8);
    if (all.size() - offset - 12 < length + 4)
      return stop("is torn: the file ends inside its data");
    const std::string_view payload = all.substr(offset + 12, length);
    if (static_cast<uint32_t>(get_le(all.substr(offset + 12 + length), 4)) !=
        masked_crc32c(payload)) {
      return stop("has a bad data CRC");
    }
    result.records.emplace_back(payload);
    offset += 12 + length + 4;
  }
  return result;
}

}  // namespace trainbus::observers
