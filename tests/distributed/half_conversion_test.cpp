// float32 <-> float16 conversions for the fp16 gradient hook: bit for bit as c10::Half's (IEEE,
// round to nearest, ties to even) except NaN payloads, and the F16C path as the scalar one.
#include "distributed/half_conversion.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <c10/util/Half.h>

// glog's CHECK (through c10's logging) before Catch's, which must win: the unity build may put
// this file's includes first.
#include <c10/util/Logging.h>
#include <catch2/catch.hpp>

using namespace trainbus::distributed;

namespace {

uint32_t bits_of(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

float float_of(uint32_t bits) {
  float value = 0.0F;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

float c10_half_to_float(uint16_t half) {
  return static_cast<float>(c10::Half(half, c10::Half::from_bits()));
}

std::string hex(uint32_t bits) {
  std::ostringstream out;
  out << "0x" << std::hex << bits;
  return out.str();
}

// Floats to convert: every float16 value and the midpoints between neighbours (the ties) with
// the floats just beside them, subnormals of both types, the edges of the range, infinities and
// NaNs of several payloads, then every 997th float32 bit pattern.
std::vector<float> conversion_inputs() {
  std::vector<float> inputs;
  for (uint32_t half = 0; half < 0x10000u; ++half) {
    const auto bits = static_cast<uint16_t>(half);
    const float value = c10_half_to_float(bits);
    inputs.push_back(value);
    if ((bits & 0x7C00u) == 0x7C00u) continue;  // infinity or NaN: no neighbour above
    const auto next = static_cast<uint16_t>(bits + 1);
    if ((next & 0x7FFFu) > 0x7C00u) continue;
    const float above = c10_half_to_float(next);  // 65504's neighbour is infinity
    const float midpoint = std::isinf(above)
                               ? std::copysign(65520.0F, value)
                               : static_cast<float>((static_cast<double>(value) + above) / 2);
    inputs.push_back(midpoint);  // exact: a float16 midpoint needs 12 significant bits
    inputs.push_back(std::nextafter(midpoint, 0.0F));
    inputs.push_back(std::nextafter(midpoint, std::copysign(1e30F, midpoint)));
  }
  for (const float value : {0.0F,
                            -0.0F,
                            65504.0F,
                            65519.996F,
                            65520.0F,
                            65535.0F,
                            65536.0F,
                            1e10F,
                            -1e10F,
                            std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::ldexp(1.0F, -25),
                            std::ldexp(1.0F, -24),
                            std::ldexp(1.5F, -25),
                            std::ldexp(1.0F, -14),
                            std::ldexp(1023.5F, -24),
                            std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::denorm_min(),
                            1e-40F,
                            -1e-40F,
                            1e-8F,
                            3e-8F,
                            1.0F / 3,
                            -2.0F / 3,
                            0.1F,
                            1e-3F})
    inputs.push_back(value);
  for (const float value : {std::ldexp(1.0F, -25), std::ldexp(1.0F, -24), 65520.0F}) {
    inputs.push_back(std::nextafter(value, 0.0F));
    inputs.push_back(std::nextafter(value, 1e30F));
  }
  for (const uint32_t nan :
       {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFFC00001u, 0x7FA5A000u, 0xFF800400u, 0x7F802000u})
    inputs.push_back(float_of(nan));
  for (uint64_t bits = 0; bits <= 0xFFFFFFFFu; bits += 997)
    inputs.push_back(float_of(static_cast<uint32_t>(bits)));
  return inputs;
}

// float16 bits as c10::Half rounds `value`, except a NaN: quiet, its sign and the top 9 bits of
// its payload, as F16C converts it (c10::Half gives every NaN 0x7E00).
uint16_t expected_half(float value) {
  if (std::isnan(value)) {
    const uint32_t bits = bits_of(value);
    return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7E00u | ((bits >> 13) & 0x3FFu));
  }
  return c10::Half(value).x;
}

// A description of the first few differences between `got` and `expected`, empty if none.
template <typename Value, typename Bits>
std::string differences(const std::vector<Value>& inputs, const std::vector<Bits>& got,
                        const std::vector<Bits>& expected) {
  std::string found;
  size_t count = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == expected[i]) continue;
    if (++count <= 5) {
      found += "input ";
      if constexpr (std::is_same_v<Value, float>) {
        found += hex(bits_of(inputs[i]));
      } else {
        found += hex(inputs[i]);
      }
      found += ": got " + hex(got[i]) + ", expected " + hex(expected[i]) + "\n";
    }
  }
  if (count > 5) found += std::to_string(count - 5) + " more\n";
  return found;
}

std::vector<uint16_t> every_half() {
  std::vector<uint16_t> halves(0x10000u);
  for (uint32_t half = 0; half < 0x10000u; ++half) halves[half] = static_cast<uint16_t>(half);
  return halves;
}

std::vector<uint32_t> as_bits(const std::vector<float>& values) {
  std::vector<uint32_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = bits_of(values[i]);
  return bits;
}

}  // namespace

TEST_CASE("float to float16 rounds as c10::Half: ties to even, subnormals, overflow to infinity",
          "[half_conversion]") {
  const std::vector<float> inputs = conversion_inputs();
  REQUIRE(inputs.size() > 4'000'000);
  std::vector<uint16_t> expected(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) expected[i] = expected_half(inputs[i]);
  std::vector<uint16_t> got(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) got[i] = half_detail::float_to_half(inputs[i]);
  CHECK(differences(inputs, got, expected) == "");
  floats_to_halves(inputs.data(), got.data(), inputs.size());  // whichever path this CPU takes
  CHECK(differences(inputs, got, expected) == "");

  // A few by hand, as IEEE 754 says.
  CHECK(half_detail::float_to_half(65519.996F) == 0x7BFFu);  // 65504
  CHECK(half_detail::float_to_half(65520.0F) == 0x7C00u);    // the tie goes to the even 2^16: inf
  CHECK(half_detail::float_to_half(-65520.0F) == 0xFC00u);
  CHECK(half_detail::float_to_half(std::ldexp(1.0F, -25)) == 0x0000u);  // tie to the even zero
  CHECK(half_detail::float_to_half(std::nextafter(std::ldexp(1.0F, -25), 1.0F)) == 0x0001u);
  CHECK(half_detail::float_to_half(std::ldexp(3.0F, -25)) == 0x0002u);  // 1.5 ulp: tie, to even 2
  CHECK(half_detail::float_to_half(1.0F + std::ldexp(1.0F, -11)) == 0x3C00u);  // tie, to even 1.0
  CHECK(half_detail::float_to_half(1.0F + std::ldexp(3.0F, -11)) == 0x3C02u);  // tie, to even
  CHECK(half_detail::float_to_half(-0.0F) == 0x8000u);
  CHECK(half_detail::float_to_half(1e-40F) == 0x0000u);
}

TEST_CASE("float16 to float is exact, as c10::Half's, for every float16", "[half_conversion]") {
  const std::vector<uint16_t> halves = every_half();
  std::vector<uint32_t> expected(halves.size());
  for (size_t i = 0; i < halves.size(); ++i) {
    const float value = c10_half_to_float(halves[i]);
    // A NaN: quiet (bit 22), with its payload; c10::Half's conversion gives the same.
    expected[i] = bits_of(value);
    if (std::isnan(value)) {
      const uint32_t sign = static_cast<uint32_t>(halves[i] & 0x8000u) << 16;
      CHECK(expected[i] ==
            (sign | 0x7FC00000u | (static_cast<uint32_t>(halves[i] & 0x3FFu) << 13)));
    }
  }
  std::vector<uint32_t> got(halves.size());
  for (size_t i = 0; i < halves.size(); ++i)
    got[i] = bits_of(half_detail::half_to_float(halves[i]));
  CHECK(differences(halves, got, expected) == "");
  std::vector<float> converted(halves.size());
  halves_to_floats(halves.data(), converted.data(), halves.size());
  CHECK(differences(halves, as_bits(converted), expected) == "");
  CHECK(half_detail::half_to_float(0x0001u) == std::ldexp(1.0F, -24));
  CHECK(half_detail::half_to_float(0x7BFFu) == 65504.0F);
  CHECK(std::isinf(half_detail::half_to_float(0xFC00u)));
}

TEST_CASE("F16C is found as Linux finds it: F16C and AVX, on x86_64 only", "[half_conversion]") {
#if defined(__x86_64__) && defined(__linux__)
  // Linux lists avx only where the OS saves the AVX registers (XCR0), as f16c_supported asks.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  bool f16c = false, avx = false;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream flags(line.substr(line.find(':') + 1));
    for (std::string flag; flags >> flag;) {
      f16c = f16c || flag == "f16c";
      avx = avx || flag == "avx";
    }
    break;
  }
  CAPTURE(f16c, avx);
  CHECK(half_detail::f16c_supported() == (f16c && avx));
#else
  CHECK_FALSE(half_detail::f16c_supported());
#endif
}

TEST_CASE("the F16C paths give the scalar paths' bits, tails too", "[half_conversion]") {
  if (!half_detail::f16c_supported()) {
    WARN("this CPU has no F16C: only the scalar paths run here");
    return;
  }
  std::vector<float> inputs = conversion_inputs();
  inputs.resize(inputs.size() / 8 * 8 + 5);  // a tail of 5 after the vectors
  std::vector<uint16_t> scalar(inputs.size());
  std::vector<uint16_t> f16c(inputs.size());
  half_detail::floats_to_halves_scalar(inputs.data(), scalar.data(), inputs.size());
  half_detail::floats_to_halves_f16c(inputs.data(), f16c.data(), inputs.size());
  CHECK(differences(inputs, f16c, scalar) == "");
  for (size_t length = 0; length < 20; ++length) {  // shorter than a vector, and around one
    std::vector<uint16_t> short_f16c(length);
    half_detail::floats_to_halves_f16c(inputs.data() + 3, short_f16c.data(), length);
    CHECK(std::equal(short_f16c.begin(), short_f16c.end(), scalar.begin() + 3));
  }

  std::vector<uint16_t> halves = every_half();
  halves.push_back(0x3C00u);  // 65537 values: a tail of 1
  std::vector<float> scalar_floats(halves.size());
  std::vector<float> f16c_floats(halves.size());
  half_detail::halves_to_floats_scalar(halves.data(), scalar_floats.data(), halves.size());
  half_detail::halves_to_floats_f16c(halves.data(), f16c_floats.data(), halves.size());
  CHECK(differences(halves, as_bits(f16c_floats), as_bits(scalar_floats)) == "");

  // Averages of 1 to 4 parts: random float16 bits (NaNs, infinities and subnormals among them),
  // 1003 values (a tail of 3).
  std::mt19937 random(14);
  std::uniform_int_distribution<uint32_t> any_half(0, 0xFFFFu);
  for (int part_count = 1; part_count <= 4; ++part_count) {
    CAPTURE(part_count);
    std::vector<std::vector<uint16_t>> parts(static_cast<size_t>(part_count),
                                             std::vector<uint16_t>(1003));
    std::vector<const uint16_t*> pointers;
    for (auto& part : parts) {
      for (auto& value : part) value = static_cast<uint16_t>(any_half(random));
      pointers.push_back(part.data());
    }
    std::vector<float> scalar_average(1003);
    std::vector<float> f16c_average(1003);
    half_detail::average_halves_scalar(pointers.data(), part_count, scalar_average.data(), 1003);
    half_detail::average_halves_f16c(pointers.data(), part_count, f16c_average.data(), 1003);
    CHECK(differences(parts[0], as_bits(f16c_average), as_bits(scalar_average)) == "");
  }
}

TEST_CASE("average_halves sums in float32 in the parts' order, then divides", "[half_conversion]") {
  std::mt19937 random(31);
  std::normal_distribution<float> gradient(0.0F, 0.01F);
  constexpr size_t kCount = 4099;
  std::vector<std::vector<uint16_t>> parts(3, std::vector<uint16_t>(kCount));
  std::vector<const uint16_t*> pointers;
  for (auto& part : parts) {
    for (auto& value : part) value = c10::Half(gradient(random)).x;
    pointers.push_back(part.data());
  }
  parts[1][7] = c10::Half(65504.0F).x;  // a sum that float16 could not hold
  parts[2][7] = c10::Half(65504.0F).x;
  for (int part_count = 1; part_count <= 3; ++part_count) {
    CAPTURE(part_count);
    std::vector<float> average(kCount);
    average_halves(pointers.data(), part_count, average.data(), kCount);
    size_t wrong = 0;
    for (size_t i = 0; i < kCount; ++i) {
      float sum = c10_half_to_float(parts[0][i]);
      for (int part = 1; part < part_count; ++part) sum += c10_half_to_float(parts[part][i]);
      if (bits_of(average[i]) != bits_of(sum / static_cast<float>(part_count))) ++wrong;
    }
    CHECK(wrong == 0);
  }
  std::vector<float> average(kCount);
  average_halves(pointers.data(), 3, average.data(), kCount);
  CHECK(std::isfinite(average[7]));
}

TEST_CASE("doubles to float16 round once: to the nearest float16, ties to even",
          "[half_conversion]") {
  // Doubles near float16's ties (where rounding through float32 first may land on the tie and go
  // to even), random magnitudes, and the values past a tie; 1000: chunks of 256 and a tail.
  std::mt19937_64 random(7);
  std::uniform_int_distribution<int> exponent(-26, 16);
  std::uniform_int_distribution<int> mantissa(0, 1023);
  std::uniform_int_distribution<int> offset(-3, 3);
  std::vector<double> inputs;
  for (int i = 0; i < 1000; ++i) {
    // A float16 tie (an 11-bit mantissa and a half), moved by a few units of 2^-40 of it.
    const double tie = std::ldexp(1024.0 + mantissa(random) + 0.5, exponent(random) - 10);
    inputs.push_back((i % 2 == 0 ? 1 : -1) * (tie + offset(random) * std::ldexp(tie, -40)));
  }
  std::vector<uint16_t> halves(inputs.size());
  doubles_to_halves(inputs.data(), halves.data(), inputs.size());
  size_t wrong = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const double value = inputs[i];
    const uint16_t got = halves[i];
    const double got_value = half_detail::half_to_float(got);
    if (std::isinf(got_value)) continue;  // above 65504: checked by the float cases
    // Neither neighbour of the result is nearer; at a tie the result is even.
    bool ok = true;
    for (int step : {-1, 1}) {
      const auto neighbour_bits = static_cast<uint16_t>(got + step);
      if ((neighbour_bits & 0x7FFFu) >= 0x7C00u || ((got & 0x7FFFu) == 0 && step < 0)) continue;
      const double neighbour = half_detail::half_to_float(neighbour_bits);
      const double mine = std::abs(value - got_value);
      const double theirs = std::abs(value - neighbour);
      ok = ok && (mine < theirs || (mine == theirs && (got & 1u) == 0));
    }
    if (!ok && ++wrong <= 3) UNSCOPED_INFO("input " << value << ": got float16 bits " << got);
  }
  CHECK(wrong == 0);
  const double past_tie = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  uint16_t one[1] = {0};
  doubles_to_halves(&past_tie, one, 1);
  CHECK(one[0] == 0x3C01u);  // 1 + 2^-10, where through float32 it is 0x3C00, 1.0
}
