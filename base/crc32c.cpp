#include "base/crc32c.h"

#include <cstring>

#include <boost/crc.hpp>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define TRAINBUS_CRC32C_SSE42 1
#endif

namespace trainbus {
namespace {

// Reflected, initial value and final XOR all ones: CRC-32C as iSCSI and TFRecord define it. The
// running register is passed in and out without the final XOR, so that both paths can continue
// each other's work.
uint32_t reflect(uint32_t value) {
  uint32_t out = 0;
  for (int bit = 0; bit < 32; ++bit, value >>= 1) out = (out << 1) | (value & 1u);
  return out;
}

uint32_t update_portable(uint32_t reg, const void* data, std::size_t size) {
  // Boost takes the initial remainder unreflected, and hands the result back reflected.
  boost::crc_optimal<32, 0x1EDC6F41, 0, 0, true, true> crc(reflect(reg));
  crc.process_bytes(data, size);
  return crc.checksum();
}

#ifdef TRAINBUS_CRC32C_SSE42
__attribute__((target("sse4.2"))) uint32_t update_sse42(uint32_t reg, const void* data,
                                                        std::size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint64_t crc = reg;
  for (; size >= 8; size -= 8, bytes += 8) {
    uint64_t word;
    std::memcpy(&word, bytes, 8);
    crc = _mm_crc32_u64(crc, word);
  }
  auto reg32 = static_cast<uint32_t>(crc);
  for (; size > 0; --size, ++bytes) reg32 = _mm_crc32_u8(reg32, *bytes);
  return reg32;
}

bool cpu_has_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

Crc32c::Crc32c(bool portable) {
#ifdef TRAINBUS_CRC32C_SSE42
  hardware_ = !portable && cpu_has_sse42();
#else
  (void)portable;
  hardware_ = false;
#endif
}

void Crc32c::update(const void* data, std::size_t size) {
#ifdef TRAINBUS_CRC32C_SSE42
  if (hardware_) {
    register_ = update_sse42(register_, data, size);
    return;
  }
#endif
  register_ = update_portable(register_, data, size);
}

uint32_t crc32c(std::string_view data) {
  Crc32c crc;
  crc.update(data.data(), data.size());
  return crc.value();
}

}  // namespace trainbus
