#pragma once
/// Private to ObserverPool: one bus subscription per event type (and bus) for all the pool's
/// observers of that type, so that each event is copied once, into a snapshot they share. Not
/// installed.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "events/detail/observer_channel.h"
#include "events/event_bus.h"
#include "events/event_filter.h"
#include "events/observer_pool.h"
#include "events/tensor_fields.h"

namespace trainbus::events::detail {

/// The pool's subscription to one event type on one bus.
struct FanoutBase {
  FanoutBase(const EventBus* on_bus, std::size_t event_index) : bus(on_bus), index(event_index) {}
  virtual ~FanoutBase() = default;
  const EventBus* bus;
  std::size_t index;  ///< kEventIndex of its event type
};

/// Hands each published E to the observers that select it, through their own filters: the first
/// that takes it makes an immutable snapshot (tensor fields copied once for the observers that
/// want tensors, emptied in a second snapshot for those that do not, made only if one takes it);
/// every observer's delivery holds that snapshot. Publishing thread only.
template <class E>
class Fanout final : public FanoutBase {
 public:
  Fanout(const EventBus* on_bus, ObserverPool::TensorSnapshot snapshot)
      : FanoutBase(on_bus, kEventIndex<E>), snapshot_(std::move(snapshot)) {}

  void add(std::shared_ptr<ObserverChannel> channel, const EventFilter& filter) {
    entries_.push_back({std::move(channel), filter, 0});
  }

  void publish(const E& event) {
    std::shared_ptr<const E> plain, with_tensors;
    std::chrono::steady_clock::time_point now{};
    for (Entry& entry : entries_) {
      ++entry.count;  // every occurrence since it was attached, as EventBus filters count
      if (!entry.filter.passes(entry.count)) continue;
      const bool tensors = kHasTensorFields<E> && snapshot_ && entry.channel->wants_tensors();
      std::shared_ptr<const E>& shared = tensors ? with_tensors : plain;
      if (!shared) {
        shared = make_snapshot(event, tensors);
        if (now == std::chrono::steady_clock::time_point{}) now = std::chrono::steady_clock::now();
      }
      entry.channel->enqueue(entry.channel, Delivery{shared, &deliver_erased<E>, now});
    }
  }

 private:
  struct Entry {
    std::shared_ptr<ObserverChannel> channel;
    EventFilter filter;
    int64_t count;
  };

  // Taken here, on the publishing thread, so that no observer ever sees a tensor the trainer
  // changes afterwards; observers that do not want tensors get none.
  std::shared_ptr<const E> make_snapshot(const E& event, bool tensors) const {
    auto copy = std::make_shared<E>(event);
    if constexpr (kHasTensorFields<E>) {
      for_each_tensor_field(*copy, [&](TensorRef& field) {
        field = tensors && field.has_value() ? snapshot_(field) : TensorRef();
      });
    }
    return copy;
  }

  ObserverPool::TensorSnapshot snapshot_;
  std::vector<Entry> entries_;
};

}  // namespace trainbus::events::detail
