#pragma once
/// EventFilter: deliver only some occurrences of an event (Ignite's every= / once= / before= /
/// after=).

#include <cstdint>

namespace trainbus::events {

/// Which occurrences of one event type a subscription receives. Occurrences are counted per
/// subscription from 1, the way Ignite counts iterations and epochs. Conditions combine:
/// `EventFilter::every(10).after(100)` delivers the 110th, 120th, ... occurrence.
struct EventFilter {
  int64_t every_n = 1;   ///< deliver when count % every_n == 0
  int64_t once_at = 0;   ///< if > 0: deliver only when count == once_at
  int64_t before_n = 0;  ///< if > 0: deliver only when count < before_n
  int64_t after_n = 0;   ///< if > 0: deliver only when count > after_n

  static EventFilter all() { return {}; }
  static EventFilter every(int64_t n);
  static EventFilter once(int64_t n);
  static EventFilter before(int64_t n);
  static EventFilter after(int64_t n);
  EventFilter& and_before(int64_t n);
  EventFilter& and_after(int64_t n);

  /// Whether the `count`-th occurrence (1-based) passes.
  bool passes(int64_t count) const noexcept {
    if (count % every_n != 0) return false;
    if (once_at > 0 && count != once_at) return false;
    if (before_n > 0 && count >= before_n) return false;
    if (after_n > 0 && count <= after_n) return false;
    return true;
  }
  bool passes_everything() const noexcept {
    return every_n == 1 && once_at == 0 && before_n == 0 && after_n == 0;
  }
};

}  // namespace trainbus::events
