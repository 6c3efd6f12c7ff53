#include "events/event_bus.h"

#include <boost/signals2/signal.hpp>

#include "events/detail/connection.h"

namespace trainbus::events {

struct EventBus::Signals {
  // Every event type shares this signature; the typed API in the header restores the type.
  using Signal = boost::signals2::signal<void(const void*)>;
  using KeeperSignal = boost::signals2::signal<void(const void*, std::shared_ptr<void>*)>;
  std::array<Signal, events::AllEvents::size> by_index;
  std::array<KeeperSignal, events::AllEvents::size> keepers_by_index;
};

EventBus::EventBus() : signals_(std::make_unique<Signals>()) {
  for (auto& count : counts_) count = std::make_shared<std::atomic<int>>(0);
  for (auto& count : keeper_counts_) count = std::make_shared<std::atomic<int>>(0);
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

Subscription EventBus::connect_keeper(std::size_t index, ErasedKeeper keeper) {
  auto& signal = signals_->keepers_by_index[index];
  auto handle = std::make_unique<detail::Connection>(
      detail::Connection{{}, counts_[index], keeper_counts_[index]});
  // Counted before it connects (and uncounted after it disconnects): a keeper that reads a count
  // of 1 during a publish is then the only keeper that publish calls (see keep()).
  keeper_counts_[index]->fetch_add(1, std::memory_order_acq_rel);
  try {
    handle->connection = signal.connect(std::move(keeper));
  } catch (...) {
    keeper_counts_[index]->fetch_sub(1, std::memory_order_acq_rel);
    throw;
  }
  counts_[index]->fetch_add(1, std::memory_order_relaxed);
  return Subscription(std::move(handle));
}

void EventBus::emit(std::size_t index, const void* event, std::shared_ptr<void>* built) const {
  const int keepers = keeper_counts_[index]->load(std::memory_order_relaxed);
  if (counts_[index]->load(std::memory_order_relaxed) > keepers) signals_->by_index[index](event);
  if (keeper_counts_[index]->load(std::memory_order_relaxed) > 0) {
    signals_->keepers_by_index[index](event, built);
  }
}

}  // namespace trainbus::events
