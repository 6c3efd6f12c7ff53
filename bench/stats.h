#pragma once
/// Statistics of repeated timings, shared by the end-to-end benchmarks: timings here are noisy, so
/// every number they quote is a median (or a percentile) of repetitions, never one run.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace trainbus::bench {

/// The value below which a fraction `q` (0..1) of `values` lie: the nearest rank, no interpolation,
/// so that a quoted p99 is a timing that really happened. NaN for no values (a table prints "nan"
/// where a case has nothing to measure, as a run without checkpoints has no save stall).
inline double percentile(std::vector<double> values, double q) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
  const std::size_t index = rank == 0 ? 0 : std::min(rank, values.size()) - 1;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(index),
                   values.end());
  return values[index];
}

/// The middle value; for an even count the mean of the two middle ones. NaN for no values.
inline double median(std::vector<double> values) {
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

}  // namespace trainbus::bench
