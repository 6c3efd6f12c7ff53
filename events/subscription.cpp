#include "events/subscription.h"

#include <utility>

namespace trainbus::events {

Subscription::Subscription(boost::signals2::connection connection,
                           std::shared_ptr<std::atomic<int>> live_count)
    : connection_(std::move(connection)), live_count_(std::move(live_count)) {}

Subscription::~Subscription() { disconnect(); }

Subscription::Subscription(Subscription&& other) noexcept
    : connection_(std::move(other.connection_)), live_count_(std::move(other.live_count_)) {
  other.connection_ = boost::signals2::connection();
}

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    disconnect();
    connection_ = std::move(other.connection_);
    live_count_ = std::move(other.live_count_);
    other.connection_ = boost::signals2::connection();
  }
  return *this;
}

void Subscription::disconnect() {
  connection_.disconnect();
  if (live_count_) {
    live_count_->fetch_sub(1, std::memory_order_relaxed);
    live_count_.reset();
  }
}

bool Subscription::connected() const { return connection_.connected(); }

}  // namespace trainbus::events
