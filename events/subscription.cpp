#include "events/subscription.h"

#include <utility>

#include "events/detail/connection.h"

namespace trainbus::events {

Subscription::Subscription() noexcept = default;

Subscription::Subscription(std::unique_ptr<detail::Connection> connection) noexcept
    : connection_(std::move(connection)) {}

Subscription::~Subscription() { disconnect(); }

Subscription::Subscription(Subscription&& other) noexcept
    : connection_(std::move(other.connection_)) {}

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    disconnect();
    connection_ = std::move(other.connection_);
  }
  return *this;
}

void Subscription::disconnect() noexcept {
  if (!connection_) return;
  connection_->connection.disconnect();
  if (connection_->keeper_connected) {
    connection_->keeper_connected->store(false);
    connection_->disconnect_keeper();
  }
  connection_->live_count->fetch_sub(1, std::memory_order_relaxed);
  connection_.reset();
}

bool Subscription::connected() const noexcept {
  if (!connection_) return false;
  return connection_->keeper_connected ? connection_->keeper_connected->load()
                                       : connection_->connection.connected();
}

}  // namespace trainbus::events
