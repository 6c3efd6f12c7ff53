#pragma once
/// EventBus: one Boost.Signals2 signal per event type in events::AllEvents.

#include <array>
#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

#include "events/all.h"
#include "events/event_filter.h"
#include "events/subscription.h"

namespace trainbus::events {

/// Typed publish/subscribe for lifecycle events.
///
/// Slots run synchronously on the publishing thread, in group order (lower first), ungrouped slots
/// last in subscription order. An exception thrown by a slot propagates out of publish().
/// Publishing an event type nobody subscribed to costs one relaxed atomic load, and publish_lazy
/// does not even build the event then. All member functions are thread-safe (Signals2's mutex).
class EventBus {
 public:
  EventBus();
  ~EventBus();
  EventBus(const EventBus&) = delete;
  EventBus& operator=(const EventBus&) = delete;

  /// Connects `fn(const E&)` for event type E. Keep the returned Subscription: dropping it
  /// disconnects the slot.
  template <class E, class Fn>
  [[nodiscard]] Subscription subscribe(Fn&& fn) {
    return connect(events::kEventIndex<E>, erase<E>(std::forward<Fn>(fn)), /*group=*/nullptr);
  }

  /// As subscribe(fn), in an ordered group: groups run in ascending order, before ungrouped slots.
  template <class E, class Fn>
  [[nodiscard]] Subscription subscribe(int group, Fn&& fn) {
    return connect(events::kEventIndex<E>, erase<E>(std::forward<Fn>(fn)), &group);
  }

  /// As subscribe(fn), delivering only the occurrences `filter` lets through.
  template <class E, class Fn>
  [[nodiscard]] Subscription subscribe(const EventFilter& filter, Fn&& fn) {
    if (filter.passes_everything()) return subscribe<E>(std::forward<Fn>(fn));
    auto count = std::make_shared<std::atomic<int64_t>>(0);
    return subscribe<E>(
        [filter, count, fn = std::decay_t<Fn>(std::forward<Fn>(fn))](const E& event) mutable {
          if (filter.passes(count->fetch_add(1, std::memory_order_relaxed) + 1)) fn(event);
        });
  }

  /// True if at least one slot for E is connected.
  template <class E>
  bool has_subscribers() const noexcept {
    return counts_[events::kEventIndex<E>]->load(std::memory_order_relaxed) > 0;
  }

  /// Calls every slot connected for E.
  template <class E>
  void publish(const E& event) const {
    if (has_subscribers<E>()) emit(events::kEventIndex<E>, &event);
  }

  /// Builds the event with `make()` and publishes it, only if anyone listens to E.
  template <class E, class Make>
  void publish_lazy(Make&& make) const {
    if (has_subscribers<E>()) {
      const E event = std::forward<Make>(make)();
      emit(events::kEventIndex<E>, &event);
    }
  }

 private:
  using ErasedSlot = std::function<void(const void*)>;

  template <class E, class Fn>
  static ErasedSlot erase(Fn&& fn) {
    static_assert(std::is_invocable_v<std::decay_t<Fn>&, const E&>,
                  "a subscriber for event E must be callable as fn(const E&)");
    return [fn = std::decay_t<Fn>(std::forward<Fn>(fn))](const void* event) mutable {
      fn(*static_cast<const E*>(event));
    };
  }

  Subscription connect(std::size_t index, ErasedSlot slot, const int* group);
  void emit(std::size_t index, const void* event) const;

  struct Signals;  // one boost::signals2::signal per event type, kept out of this header
  std::unique_ptr<Signals> signals_;
  std::array<std::shared_ptr<std::atomic<int>>, events::AllEvents::size> counts_;
};

}  // namespace trainbus::events
