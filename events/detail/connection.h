#pragma once
/// Private to events/: what a Subscription holds. Not installed, so that no public header pulls in
/// Boost.Signals2 (~100k lines preprocessed).

#include <atomic>
#include <functional>
#include <memory>

#include <boost/signals2/connection.hpp>

namespace trainbus::events::detail {

struct Connection {
  boost::signals2::connection connection;
  /// The bus's count of live slots for this event type, so that publishing to nobody costs a load.
  std::shared_ptr<std::atomic<int>> live_count;
  /// For a keeper (EventBus::keep): whether it is connected, and what takes it off the bus's list
  /// (a no-op once the bus is gone); else null and empty.
  std::shared_ptr<std::atomic<bool>> keeper_connected = nullptr;
  std::function<void()> disconnect_keeper = nullptr;
};

}  // namespace trainbus::events::detail
