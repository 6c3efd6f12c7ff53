#include "distributed/half_conversion.h"

#include <cmath>
#include <cstring>
#include <limits>

// The F16C path only on x86_64 (its intrinsics and <cpuid.h>); elsewhere the scalar path.
#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define TRAINBUS_HAVE_F16C_PATH 1
#else
#define TRAINBUS_HAVE_F16C_PATH 0
#endif

namespace trainbus::distributed {
namespace half_detail {

uint16_t float_to_half(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  if (magnitude >= 0x7F800000u) {  // infinity, or a NaN: quiet, its payload's top bits
    if (magnitude == 0x7F800000u) return sign | 0x7C00u;
    return static_cast<uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
  }
  // 65520 (halfway from 65504, the largest float16, to 2^16; a tie to the even 2^16) and up.
  if (magnitude >= 0x477FF000u) return sign | 0x7C00u;
  if (magnitude >= 0x38800000u) {                       // 2^-14 and up: a normal float16
    const uint32_t rebiased = magnitude - 0x38000000u;  // exponent bias 127 to 15
    // 13 mantissa bits dropped, rounded to nearest, ties to even; a carry moves into the
    // exponent, as it should (up to 0x7C00, infinity, which the check above leaves out).
    const uint32_t rounded = rebiased + 0xFFFu + ((rebiased >> 13) & 1u);
    return static_cast<uint16_t>(sign | (rounded >> 13));
  }
  if (magnitude <= 0x33000000u) return sign;  // up to 2^-25 (a tie, to the even 0)
  // A subnormal float16: magnitude / 2^-24 rounded to an integer, ties to even (1024: the
  // smallest normal, whose bits follow on).
  const uint32_t exponent = magnitude >> 23;  // 102 to 112
  const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126 - exponent;  // 14 to 24
  uint32_t result = mantissa >> shift;
  const uint32_t remainder = mantissa & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (remainder > halfway || (remainder == halfway && (result & 1u) != 0)) ++result;
  return static_cast<uint16_t>(sign | result);
}

float half_to_float(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000u) << 16;
  const uint32_t exponent = (half >> 10) & 0x1Fu;
  const uint32_t mantissa = half & 0x3FFu;
  uint32_t bits = sign;
  if (exponent == 0x1Fu) {  // infinity, or a NaN made quiet
    bits |= 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x400000u : 0u);
  } else if (exponent != 0) {
    bits |= ((exponent + 112u) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {  // subnormal: normalized, a normal float32
    uint32_t normalized = mantissa;
    uint32_t float_exponent = 113;
    while ((normalized & 0x400u) == 0) {
      normalized <<= 1;
      --float_exponent;
    }
    bits |= (float_exponent << 23) | ((normalized & 0x3FFu) << 13);
  }
  float value = 0.0F;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

float double_to_float_rounded_to_odd(double value) {
  const auto rounded = static_cast<float>(value);  // to nearest
  if (!std::isfinite(rounded) || static_cast<double>(rounded) == value) return rounded;
  uint32_t bits = 0;
  std::memcpy(&bits, &rounded, sizeof bits);
  if ((bits & 1u) != 0) return rounded;
  // Even: the other neighbour of `value`, toward it, is odd.
  const float toward = value > static_cast<double>(rounded)
                           ? std::numeric_limits<float>::infinity()
                           : -std::numeric_limits<float>::infinity();
  return std::nextafter(rounded, toward);
}

void floats_to_halves_scalar(const float* in, uint16_t* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = float_to_half(in[i]);
}

void halves_to_floats_scalar(const uint16_t* in, float* out, size_t count) {
  for (size_t i = 0; i < count; ++i) out[i] = half_to_float(in[i]);
}

void average_halves_scalar(const uint16_t* const* parts, int part_count, float* out, size_t count) {
  const auto divisor = static_cast<float>(part_count);
  for (size_t i = 0; i < count; ++i) {
    float sum = half_to_float(parts[0][i]);
    for (int part = 1; part < part_count; ++part) sum += half_to_float(parts[part][i]);
    out[i] = sum / divisor;
  }
}

#if TRAINBUS_HAVE_F16C_PATH

bool f16c_supported() {
  // Read from CPUID and XCR0 directly: Clang's __builtin_cpu_supports does not know "f16c".
  static const bool supported = [] {
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
    constexpr unsigned int kOsxsave = 1u << 27;  // the OS enabled XGETBV (and XSAVE)
    constexpr unsigned int kAvx = 1u << 28;
    constexpr unsigned int kF16c = 1u << 29;
    if ((ecx & (kOsxsave | kAvx | kF16c)) != (kOsxsave | kAvx | kF16c)) return false;
    // XCR0 bits 1 and 2: the OS saves the SSE and AVX (upper YMM) registers across switches.
    // xgetbv by its mnemonic: _xgetbv needs the xsave target.
    unsigned int xcr0_low = 0, xcr0_high = 0;
    __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0u));
    (void)xcr0_high;
    return (xcr0_low & 0x6u) == 0x6u;
  }();
  return supported;
}

// NOTE: only these functions are compiled for F16C and AVX; they run only where
// f16c_supported(). _MM_FROUND_TO_NEAREST_INT rounds ties to even whatever MXCSR says.
__attribute__((target("f16c,avx"))) void floats_to_halves_f16c(const float* in, uint16_t* out,
                                                               size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    const __m128i halves =
        _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), halves);
  }
  floats_to_halves_scalar(in + i, out + i, count - i);
}

__attribute__((target("f16c,avx"))) void halves_to_floats_f16c(const uint16_t* in, float* out,
                                                               size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  halves_to_floats_scalar(in + i, out + i, count - i);
}

__attribute__((target("f16c,avx"))) void average_halves_f16c(const uint16_t* const* parts,
                                                             int part_count, float* out,
                                                             size_t count) {
  const __m256 divisor = _mm256_set1_ps(static_cast<float>(part_count));
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m256 sum = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(parts[0] + i)));
    for (int part = 1; part < part_count; ++part)
      sum = _mm256_add_ps(
          sum, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(parts[part] + i))));
    _mm256_storeu_ps(out + i, _mm256_div_ps(sum, divisor));
  }
  // The tail, one value at a time: the same sums and division, in the same order.
  for (; i < count; ++i) {
    float sum = half_to_float(parts[0][i]);
    for (int part = 1; part < part_count; ++part) sum += half_to_float(parts[part][i]);
    out[i] = sum / static_cast<float>(part_count);
  }
}

#else  // no F16C on this architecture: the scalar paths

bool f16c_supported() { return false; }
void floats_to_halves_f16c(const float* in, uint16_t* out, size_t count) {
  floats_to_halves_scalar(in, out, count);
}
void halves_to_floats_f16c(const uint16_t* in, float* out, size_t count) {
  halves_to_floats_scalar(in, out, count);
}
void average_halves_f16c(const uint16_t* const* parts, int part_count, float* out, size_t count) {
  average_halves_scalar(parts, part_count, out, count);
}

#endif

}  // namespace half_detail

void floats_to_halves(const float* in, uint16_t* out, size_t count) {
  if (half_detail::f16c_supported()) {
    half_detail::floats_to_halves_f16c(in, out, count);
  } else {
    half_detail::floats_to_halves_scalar(in, out, count);
  }
}

void doubles_to_halves(const double* in, uint16_t* out, size_t count) {
  constexpr size_t kChunk = 256;  // float32s rounded to odd, then converted as floats are
  float floats[kChunk];
  for (size_t done = 0; done < count; done += kChunk) {
    const size_t chunk = count - done < kChunk ? count - done : kChunk;
    for (size_t i = 0; i < chunk; ++i)
      floats[i] = half_detail::double_to_float_rounded_to_odd(in[done + i]);
    floats_to_halves(floats, out + done, chunk);
  }
}

void halves_to_floats(const uint16_t* in, float* out, size_t count) {
  if (half_detail::f16c_supported()) {
    half_detail::halves_to_floats_f16c(in, out, count);
  } else {
    half_detail::halves_to_floats_scalar(in, out, count);
  }
}

void average_halves(const uint16_t* const* parts, int part_count, float* out, size_t count) {
  if (half_detail::f16c_supported()) {
    half_detail::average_halves_f16c(parts, part_count, out, count);
  } else {
    half_detail::average_halves_scalar(parts, part_count, out, count);
  }
}

}  // namespace trainbus::distributed
