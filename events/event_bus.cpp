#include "events/event_bus.h"

#include <boost/signals2/signal.hpp>

#include "events/detail/connection.h"

namespace trainbus::events {

struct EventBus::Signals {
  // Every event type shares this signature; the typed API in the header restores the type.
  using Signal = boost::signals2::signal<void(const void*)>;
  std::array<Signal, events::AllEvents::size> by_index;
};

EventBus::EventBus() : signals_(std::make_unique<Signals>()) {
  for (auto& count : counts_) count = std::make_shared<std::atomic<int>>(0);
}

EventBus::~EventBus() = default;

Subscription EventBus::connect(std::size_t index, ErasedSlot slot, const int* group) {
  auto& signal = signals_->by_index[index];
  // Allocated before connecting: once connected, nothing may throw and leave the slot behind.
  auto handle = std::make_unique<detail::Connection>(detail::Connection{{}, counts_[index]});
  handle->connection =
      group ? signal.connect(*group, std::move(slot)) : signal.connect(std::move(slot));
  counts_[index]->fetch_add(1, std::memory_order_relaxed);
  return Subscription(std::move(handle));
}

void EventBus::emit(std::size_t index, const void* event) const {
  signals_->by_index[index](event);
}

}  // namespace trainbus::events
