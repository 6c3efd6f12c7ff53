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

/// Hands each published E to the observers that select it, through their own filters. They share
/// an immutable snapshot: the event itself when the bus hands it over (EventBus::keep: built by
/// publish_lazy, and this the only keeper), else a copy. Tensor fields are copied for the observers
/// that want tensors and emptied for those that do not (two snapshots when both take the event).
/// Publishing thread only.
template <class E>
class Fanout final : public FanoutBase {
 public:
  Fanout(const EventBus* on_bus, ObserverPool::TensorSnapshot snapshot)
      : FanoutBase(on_bus, kEventIndex<E>), snapshot_(std::move(snapshot)) {}

  void add(std::shared_ptr<ObserverChannel> channel, const EventFilter& filter) {
    entries_.push_back({std::move(channel), filter, 0});
  }

  void publish(const E& event, std::shared_ptr<E> sole) {
    // Which snapshots this occurrence needs; counted below (a filter counts every occurrence
    // since its observer was attached, as EventBus filters do).
    bool any_plain = false, any_tensors = false;
    for (const Entry& entry : entries_) {
      if (entry.filter.passes(entry.count + 1))
        (wants_tensors(entry) ? any_tensors : any_plain) = true;
    }
    if (!any_plain && !any_tensors) {
      for (Entry& entry : entries_) ++entry.count;
      return;
    }
    // The copy (if any) first: `sole` is `event`, and making the other snapshot changes it.
    std::shared_ptr<const E> with_tensors =
        any_tensors && (any_plain || !sole) ? snapshot(std::make_shared<E>(event), true) : nullptr;
    std::shared_ptr<const E> plain =
        any_plain ? snapshot(sole ? std::move(sole) : std::make_shared<E>(event), false) : nullptr;
    if (any_tensors && !with_tensors) with_tensors = snapshot(std::move(sole), true);
    const auto now = std::chrono::steady_clock::now();
    for (Entry& entry : entries_) {
      if (!entry.filter.passes(++entry.count)) continue;
      std::shared_ptr<const E>& snapshot = wants_tensors(entry) ? with_tensors : plain;
      if (!snapshot) continue;  // only if another thread publishes E too, against the contract
      entry.channel->enqueue(entry.channel, Delivery{snapshot, &deliver_erased<E>, now});
    }
  }

 private:
  struct Entry {
    std::shared_ptr<ObserverChannel> channel;
    EventFilter filter;
    int64_t count;
  };

  bool wants_tensors(const Entry& entry) const {
    return kHasTensorFields<E> && snapshot_ && entry.channel->wants_tensors();
  }

  // Taken here, on the publishing thread, so that no observer ever sees a tensor the trainer
  // changes afterwards; observers that do not want tensors get none.
  std::shared_ptr<const E> snapshot(std::shared_ptr<E> event, bool tensors) const {
    if constexpr (kHasTensorFields<E>) {
      for_each_tensor_field(*event, [&](TensorRef& field) {
        field = tensors && field.has_value() ? snapshot_(field) : TensorRef();
      });
    }
    return event;
  }

  ObserverPool::TensorSnapshot snapshot_;
  std::vector<Entry> entries_;
};

}  // namespace trainbus::events::detail
