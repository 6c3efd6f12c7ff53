#pragma once
/// CRC32C (Castagnoli), the checksum of TFRecord files, checkpoint manifests and event recordings.
/// Uses the CPU's CRC32 instruction (SSE4.2) where there is one: checkpoints checksum hundreds of
/// megabytes, and Boost.CRC's table runs at ~0.4 GB/s here against ~8 GB/s for the instruction
/// (bench/README.md). Boost.CRC is the portable path and the reference in the tests.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace trainbus {

/// CRC32C of `data`; crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::string_view data);

/// CRC32C computed piece by piece, for data written or read in chunks.
class Crc32c {
 public:
  /// `portable`: Boost.CRC even where the CPU instruction exists (for tests and comparisons).
  explicit Crc32c(bool portable = false);
  void update(const void* data, std::size_t size);
  uint32_t value() const noexcept { return ~register_; }

 private:
  uint32_t register_ = 0xFFFFFFFFu;  // the running CRC before the final inversion
  bool hardware_;
};

}  // namespace trainbus
