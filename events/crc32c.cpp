#include "events/crc32c.h"

#include <boost/crc.hpp>

namespace trainbus {

// Reflected, initial value and final XOR all ones: CRC-32C as iSCSI and TFRecord define it.
struct Crc32c::State : boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> {};

Crc32c::Crc32c() : state_(new State) {}
Crc32c::~Crc32c() { delete state_; }
void Crc32c::update(const void* data, std::size_t size) { state_->process_bytes(data, size); }
uint32_t Crc32c::value() const { return state_->checksum(); }

uint32_t crc32c(std::string_view data) {
  Crc32c crc;
  crc.update(data.data(), data.size());
  return crc.value();
}

}  // namespace trainbus
