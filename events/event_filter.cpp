#include "events/event_filter.h"

#include "base/errors.h"

namespace trainbus::events {

EventFilter EventFilter::every(int64_t n) {
  TRAINBUS_CHECK(n >= 1, "EventFilter::every(", n, "): n must be >= 1");
  EventFilter filter;
  filter.every_n = n;
  return filter;
}

EventFilter EventFilter::once(int64_t n) {
  TRAINBUS_CHECK(n >= 1, "EventFilter::once(", n, "): n must be >= 1 (occurrences count from 1)");
  EventFilter filter;
  filter.once_at = n;
  return filter;
}

EventFilter EventFilter::before(int64_t n) { return EventFilter().and_before(n); }

EventFilter EventFilter::after(int64_t n) { return EventFilter().and_after(n); }

EventFilter& EventFilter::and_before(int64_t n) {
  TRAINBUS_CHECK(n >= 1, "EventFilter::before(", n, "): n must be >= 1");
  before_n = n;
  return *this;
}

EventFilter& EventFilter::and_after(int64_t n) {
  TRAINBUS_CHECK(n >= 0, "EventFilter::after(", n, "): n must be >= 0");
  after_n = n;
  return *this;
}

}  // namespace trainbus::events
