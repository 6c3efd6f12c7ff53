#pragma once
/// CRC32C (Castagnoli), the checksum of TFRecord files, checkpoint manifests and event recordings.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace trainbus {

/// CRC32C of `data`; crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::string_view data);

/// CRC32C computed piece by piece, for data written or read in chunks.
class Crc32c {
 public:
  Crc32c();
  ~Crc32c();
  Crc32c(const Crc32c&) = delete;
  Crc32c& operator=(const Crc32c&) = delete;
  void update(const void* data, std::size_t size);
  uint32_t value() const;

 private:
  struct State;  // boost::crc_optimal, kept out of this header
  State* state_;
};

}  // namespace trainbus
