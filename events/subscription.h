#pragma once
/// Subscription: the RAII handle EventBus::subscribe returns.

#include <atomic>
#include <memory>

#include <boost/signals2/connection.hpp>

namespace trainbus::events {

/// Keeps one slot connected to an EventBus for as long as it lives (or until disconnect()).
/// Move-only; safe to destroy after the bus itself is gone. Any thread.
class Subscription {
 public:
  Subscription() = default;
  Subscription(boost::signals2::connection connection, std::shared_ptr<std::atomic<int>> live_count);
  ~Subscription();

  Subscription(Subscription&& other) noexcept;
  Subscription& operator=(Subscription&& other) noexcept;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  /// Disconnects the slot; it will not be called by publishes that start after this returns.
  void disconnect();
  bool connected() const;

 private:
  boost::signals2::connection connection_;
  // The bus's count of live slots for this event type, so that publishing to nobody costs a load.
  std::shared_ptr<std::atomic<int>> live_count_;
};

}  // namespace trainbus::events
