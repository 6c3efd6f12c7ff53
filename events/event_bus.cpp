#include "events/event_bus.h"

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/signals2/signal.hpp>

#include "events/detail/connection.h"

namespace trainbus::events {

namespace detail {

struct Keeper {
  std::function<void(const void*, std::shared_ptr<void>*)> fn;
  std::shared_ptr<std::atomic<bool>> connected;
};

// One event type's keepers. Shared with their Subscriptions, which may outlive the bus.
struct KeeperList {
  std::mutex mutex;
  std::shared_ptr<const std::vector<std::shared_ptr<const Keeper>>> keepers =
      std::make_shared<const std::vector<std::shared_ptr<const Keeper>>>();
};

}  // namespace detail

using detail::Keeper;
using detail::KeeperList;

struct EventBus::Signals {
  // Every event type shares this signature; the typed API in the header restores the type.
  using Signal = boost::signals2::signal<void(const void*)>;
  std::array<Signal, events::AllEvents::size> by_index;
  std::array<std::shared_ptr<KeeperList>, events::AllEvents::size> keepers_by_index;
};

EventBus::EventBus() : signals_(std::make_unique<Signals>()) {
  for (auto& count : counts_) count = std::make_shared<std::atomic<int>>(0);
  for (auto& count : keeper_counts_) count = std::make_shared<std::atomic<int>>(0);
  for (auto& list : signals_->keepers_by_index) list = std::make_shared<KeeperList>();
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

Subscription EventBus::connect_keeper(std::size_t index, ErasedKeeper fn) {
  const std::shared_ptr<KeeperList>& list = signals_->keepers_by_index[index];
  auto connected = std::make_shared<std::atomic<bool>>(true);
  auto keeper = std::make_shared<const Keeper>(Keeper{std::move(fn), connected});
  // Everything that may throw comes before the keeper joins the list.
  auto handle = std::make_unique<detail::Connection>(detail::Connection{{}, keeper_counts_[index]});
  handle->keeper_connected = connected;
  handle->disconnect_keeper = [weak_list = std::weak_ptr<KeeperList>(list),
                               weak_keeper = std::weak_ptr<const Keeper>(keeper)] {
    const auto still = weak_list.lock();
    const auto gone = weak_keeper.lock();
    if (!still || !gone) return;  // the bus is gone
    try {
      std::lock_guard<std::mutex> lock(still->mutex);
      auto rest = std::make_shared<std::vector<std::shared_ptr<const Keeper>>>();
      for (const auto& each : *still->keepers) {
        if (each != gone) rest->push_back(each);
      }
      still->keepers = std::move(rest);
    } catch (...) {
      // No memory for the shorter list: the keeper stays on it, disconnected, and is skipped.
    }
  };
  {
    std::lock_guard<std::mutex> lock(list->mutex);
    auto grown = std::make_shared<std::vector<std::shared_ptr<const Keeper>>>(*list->keepers);
    grown->push_back(std::move(keeper));
    list->keepers = std::move(grown);
  }
  keeper_counts_[index]->fetch_add(1, std::memory_order_relaxed);
  return Subscription(std::move(handle));
}

void EventBus::emit(std::size_t index, const void* event, std::shared_ptr<void>* built) const {
  if (counts_[index]->load(std::memory_order_relaxed) > 0) signals_->by_index[index](event);
  if (keeper_counts_[index]->load(std::memory_order_relaxed) == 0) return;
  std::shared_ptr<const std::vector<std::shared_ptr<const Keeper>>> keepers;
  {
    KeeperList& list = *signals_->keepers_by_index[index];
    std::lock_guard<std::mutex> lock(list.mutex);
    keepers = list.keepers;
  }
  // The event goes to a keeper only if it is the one connected keeper in the list this publish
  // calls (a keeper disconnected meanwhile is skipped, and never connects again).
  int connected = 0;
  for (const auto& keeper : *keepers) connected += keeper->connected->load() ? 1 : 0;
  for (const auto& keeper : *keepers) {
    if (keeper->connected->load()) keeper->fn(event, connected == 1 ? built : nullptr);
  }
}

}  // namespace trainbus::events
