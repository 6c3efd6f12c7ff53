#pragma once
/// Subscription: the RAII handle EventBus::subscribe returns.

#include <memory>

namespace trainbus::events {

namespace detail {
struct Connection;  // a Boost.Signals2 connection and the bus's count of live slots
                    // (detail/connection.h)
}  // namespace detail

/// Keeps one slot connected to an EventBus for as long as it lives (or until disconnect()).
/// Move-only; safe to destroy after the bus itself is gone. Any thread, but one at a time per
/// Subscription object (as any standard library object): disconnect() frees the connection.
class Subscription {
 public:
  Subscription() noexcept;
  /// Takes over a connection made by EventBus::subscribe.
  explicit Subscription(std::unique_ptr<detail::Connection> connection) noexcept;
  ~Subscription();

  Subscription(Subscription&& other) noexcept;
  Subscription& operator=(Subscription&& other) noexcept;
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  /// Disconnects the slot; it will not be called by publishes that start after this returns.
  void disconnect() noexcept;
  bool connected() const noexcept;

 private:
  std::unique_ptr<detail::Connection> connection_;
};

}  // namespace trainbus::events
