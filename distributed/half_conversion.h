#pragma once
/// float32 <-> IEEE float16 conversions for gradients sent as float16 (Fp16AllGatherHook), fast
/// where LibTorch 1.13's own CPU casts are not (about 0.75 ms for 235K values here): with the
/// CPU's F16C instructions, 8 values an instruction, where the CPU has them (checked at run
/// time), else one value at a time in plain C++. Both paths give the same bits for every input.
/// The plain path costs: 235K float32 values to float16 took 0.67 ms here against 0.024 ms with
/// F16C (the best of 200 runs of a throwaway loop, on a loaded machine), each step and rank, a
/// third of a 2 ms step of the MLP of bench/README.md.
///
/// float32 to float16 rounds to nearest, ties to even, as IEEE 754 and c10::Half: values from
/// 65520 up become infinity, those up to 2^-25 zero (with their sign); subnormals are kept. A NaN
/// stays a quiet NaN of its sign whose payload is its top 9 bits (as F16C converts; c10::Half
/// makes every NaN 0x7E00 with its sign). float16 to float32 is exact; a signalling NaN becomes
/// quiet, its payload kept. Thread-safe; no allocation.

#include <cstddef>
#include <cstdint>

namespace trainbus::distributed {

/// out[i] = float16 bits of in[i], i < count.
void floats_to_halves(const float* in, uint16_t* out, size_t count);

/// out[i] = float16 bits of in[i], i < count, rounded once from the double (to nearest, ties to
/// even), not through float32 (a double just past a float16 tie may round to float32's tie, then
/// to even: 1 + 2^-11 + 2^-40 would become 1.0 instead of 1 + 2^-10).
void doubles_to_halves(const double* in, uint16_t* out, size_t count);

/// out[i] = in[i] as float32, i < count.
void halves_to_floats(const uint16_t* in, float* out, size_t count);

/// out[i] = (parts[0][i] + parts[1][i] + ... + parts[part_count - 1][i]) / part_count, i < count:
/// each float16 converted to float32, added in float32 in the order of `parts`, then divided
/// (not multiplied by a reciprocal): the same bits on every rank that calls it with the same
/// parts, whichever path its CPU takes. part_count >= 1.
void average_halves(const uint16_t* const* parts, int part_count, float* out, size_t count);

namespace half_detail {

/// One value, in plain C++ (the fallback, and the vector paths' tails).
uint16_t float_to_half(float value);
/// `value` to float32 rounded to odd (an inexact result gets the neighbour whose last bit is
/// 1): rounding that to float16 is rounding `value` once, as float32 keeps 13 more bits.
float double_to_float_rounded_to_odd(double value);
float half_to_float(uint16_t bits);

/// Whether this CPU has F16C and AVX (and the OS saves AVX state): the vector paths run.
bool f16c_supported();

/// The two paths of the functions above, for tests that compare them; the F16C ones only where
/// f16c_supported().
void floats_to_halves_scalar(const float* in, uint16_t* out, size_t count);
void halves_to_floats_scalar(const uint16_t* in, float* out, size_t count);
void average_halves_scalar(const uint16_t* const* parts, int part_count, float* out, size_t count);
void floats_to_halves_f16c(const float* in, uint16_t* out, size_t count);
void halves_to_floats_f16c(const uint16_t* in, float* out, size_t count);
void average_halves_f16c(const uint16_t* const* parts, int part_count, float* out, size_t count);

}  // namespace half_detail

}  // namespace trainbus::distributed
