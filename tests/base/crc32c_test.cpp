// CRC32C: the CPU-instruction path and Boost.CRC agree, however the data is split and aligned.
#include <catch2/catch.hpp>

#include <random>
#include <string>

#include "base/crc32c.h"

using namespace trainbus;

TEST_CASE("CRC32C: the CPU instruction and Boost.CRC give the same checksum in any chunking",
          "[events][crc]") {
  for (bool portable : {true, false}) {
    Crc32c check(portable);
    check.update("123456789", 9);
    CHECK(check.value() == 0xE3069283u);
  }
  std::mt19937 random(42);
  std::string data(100003, '\0');
  for (char& c : data) c = static_cast<char>(random());
  Crc32c whole(/*portable=*/true);
  whole.update(data.data(), data.size());
  for (int trial = 0; trial < 20; ++trial) {
    Crc32c fast, portable(true);
    std::size_t at = 0;
    while (at < data.size()) {
      const std::size_t size =
          std::min<std::size_t>(data.size() - at, random() % 97);  // odd sizes, any alignment
      fast.update(data.data() + at, size);
      portable.update(data.data() + at, size);
      at += size;
    }
    CHECK(fast.value() == whole.value());
    CHECK(portable.value() == whole.value());
  }
  CHECK(crc32c("") == 0u);
}
