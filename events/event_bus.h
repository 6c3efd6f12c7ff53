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

  /// Connects a keeper of E: `fn(const E& event, std::shared_ptr<E> sole)`, for a subscriber
  /// that keeps events after the publish returns (the ObserverPool). Keepers run after every
  /// subscribe() slot, in subscription order. When publish_lazy built the event and this is the
  /// only keeper the publish calls, `sole` owns it: nobody reads it after this call, so the keeper
  /// may change it and keep it instead of copying it. Otherwise `sole` is null and the keeper
  /// copies `event`.
  template <class E, class Fn>
  [[nodiscard]] Subscription keep(Fn&& fn) {
    static_assert(std::is_invocable_v<std::decay_t<Fn>&, const E&, std::shared_ptr<E>>,
                  "a keeper of event E must be callable as fn(const E&, std::shared_ptr<E>)");
    return connect_keeper(events::kEventIndex<E>,
                          [fn = std::decay_t<Fn>(std::forward<Fn>(fn))](
                              const void* event, std::shared_ptr<void>* built) mutable {
                            std::shared_ptr<E> sole;
                            if (built && *built)
                              sole = std::static_pointer_cast<E>(std::move(*built));
                            fn(*static_cast<const E*>(event), std::move(sole));
                          });
  }

  /// True if at least one slot or keeper for E is connected.
  template <class E>
  bool has_subscribers() const noexcept {
    constexpr std::size_t index = events::kEventIndex<E>;
    return counts_[index]->load(std::memory_order_relaxed) > 0 ||
           keeper_counts_[index]->load(std::memory_order_relaxed) > 0;
  }

  /// Calls every slot connected for E, then every keeper (which copies the event). A slot that
  /// throws ends the publish there: the slots after it and the keepers do not get the event.
  template <class E>
  void publish(const E& event) const {
    if (has_subscribers<E>()) emit(events::kEventIndex<E>, &event, nullptr);
  }

  /// Builds the event with `make()` and publishes it, only if anyone listens to E. With a keeper,
  /// the event is built on the heap, so that a sole keeper takes it without a copy.
  template <class E, class Make>
  void publish_lazy(Make&& make) const {
    constexpr std::size_t index = events::kEventIndex<E>;
    if (!has_subscribers<E>()) return;
    if (keeper_counts_[index]->load(std::memory_order_relaxed) > 0) {
      std::shared_ptr<void> built = std::make_shared<E>(std::forward<Make>(make)());
      const void* event = built.get();
      emit(index, event, &built);
    } else {
      const E event = std::forward<Make>(make)();
      emit(index, &event, nullptr);
    }
  }

 private:
  using ErasedSlot = std::function<void(const void*)>;
  using ErasedKeeper = std::function<void(const void*, std::shared_ptr<void>*)>;

  template <class E, class Fn>
  static ErasedSlot erase(Fn&& fn) {
    static_assert(std::is_invocable_v<std::decay_t<Fn>&, const E&>,
                  "a subscriber for event E must be callable as fn(const E&)");
    return [fn = std::decay_t<Fn>(std::forward<Fn>(fn))](const void* event) mutable {
      fn(*static_cast<const E*>(event));
    };
  }

  Subscription connect(std::size_t index, ErasedSlot slot, const int* group);
  Subscription connect_keeper(std::size_t index, ErasedKeeper keeper);
  // Runs the slots for `index`, then its keepers; `built` owns the event if publish_lazy built it.
  void emit(std::size_t index, const void* event, std::shared_ptr<void>* built) const;

  // Per event type: a boost::signals2::signal for the slots, and the keepers (a list copied on
  // write, so that a publish knows exactly which keepers it calls). Kept out of this header.
  struct Signals;
  std::unique_ptr<Signals> signals_;
  /// Per event type: connected slots, and connected keepers.
  std::array<std::shared_ptr<std::atomic<int>>, events::AllEvents::size> counts_;
  std::array<std::shared_ptr<std::atomic<int>>, events::AllEvents::size> keeper_counts_;
};

}  // namespace trainbus::events
