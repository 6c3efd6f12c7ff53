#pragma once
/// Private to events/: what a Subscription holds. Not installed, so that no public header pulls in
/// Boost.Signals2 (~100k lines preprocessed).

#include <atomic>
#include <memory>

#include <boost/signals2/connection.hpp>

namespace trainbus::events::detail {

struct Connection {
  boost::signals2::connection connection;
  /// The bus's count of live slots for this event type, so that publishing to nobody costs a load.
  std::shared_ptr<std::atomic<int>> live_count;
  /// For a keeper (EventBus::keep), the bus's count of keepers of this event type; else null.
  std::shared_ptr<std::atomic<int>> keeper_count = nullptr;
};

}  // namespace trainbus::events::detail
