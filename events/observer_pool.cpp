#include "events/observer_pool.h"

#include <algorithm>
#include <condition_variable>
#include <thread>

#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "events/check.h"
#include "events/diagnostics.h"
#include "events/observer_hooks.h"
#include "events/tensor_fields.h"

namespace trainbus {
namespace {

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception (not derived from std::exception)";
  }
}

}  // namespace

ObserverError::ObserverError(std::string observer, std::string message, std::exception_ptr original)
    : std::runtime_error("observer `" + observer + "` failed: " + message),
      observer_(std::move(observer)),
      original_(std::move(original)) {}

struct ObserverPool::Executor {
  explicit Executor(std::size_t threads) : pool(threads) {}
  boost::asio::thread_pool pool;
};

struct ObserverPool::Channel {
  Channel(std::shared_ptr<Observer> observer_in, ObserverOptions options_in, std::shared_ptr<Executor> executor_in,
          std::shared_ptr<std::atomic<bool>> any_failure_in)
      : executor(std::move(executor_in)),
        strand(boost::asio::make_strand(executor->pool)),
        observer(std::move(observer_in)),
        name(observer->name()),
        options(options_in),
        wants_tensors(observer->wants_tensors()),
        any_failure(std::move(any_failure_in)) {}

  // Publishing thread: reserves room for one event. False: do not post it (dropped, or the
  // observer failed or was disabled).
  bool admit() {
    std::unique_lock<std::mutex> lock(mutex);
    if (failed || disabled) return false;
    if (in_flight >= options.capacity) {
      if (options.when_full == ObserverOptions::WhenFull::kDrop) {
        ++dropped;
        return false;
      }
      changed.wait(lock, [&] { return in_flight < options.capacity || failed || disabled; });
      if (failed || disabled) return false;
    }
    ++in_flight;
    peak_in_flight = std::max(peak_in_flight, in_flight);
    return true;
  }

  // Gives back the room admit() reserved; `handled` when a hook ran to completion.
  void release(bool handled) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      --in_flight;
      if (handled) ++delivered;
    }
    changed.notify_all();
  }

  // Pool thread, on the strand. Never lets an exception escape into Asio.
  template <class E>
  void handle(const E& event) noexcept {
    bool skip;
    {
      std::lock_guard<std::mutex> lock(mutex);
      skip = failed || disabled;
    }
    bool handled = false;
    if (!skip) {
      try {
        detail::deliver(*observer, event);
        handled = true;
      } catch (...) {
        fail(std::current_exception());
      }
    }
    release(handled);
  }

  void fail(std::exception_ptr exception) noexcept {
    const std::string message = describe(exception);
    bool report = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (options.on_error == ObserverOptions::OnError::kDisable) {
        report = !disabled;
        disabled = true;
      } else {
        failed = true;
        error = exception;
        error_message = message;
        any_failure->store(true, std::memory_order_relaxed);
      }
    }
    changed.notify_all();
    if (report) {
      warn("observer `" + name + "` failed: " + message +
           "; it receives no more events (ObserverOptions::on_error = kDisable)");
    }
  }

  ObserverStats stats() {
    std::lock_guard<std::mutex> lock(mutex);
    return {name, delivered, dropped, in_flight, peak_in_flight, failed, disabled};
  }

  // NOTE: the executor outlives the strand (members are destroyed in reverse order), since a bus
  // may release the slots that hold this channel after the pool itself is gone.
  std::shared_ptr<Executor> executor;
  boost::asio::strand<boost::asio::thread_pool::executor_type> strand;
  std::shared_ptr<Observer> observer;
  std::string name;
  ObserverOptions options;
  bool wants_tensors;
  std::shared_ptr<std::atomic<bool>> any_failure;

  std::mutex mutex;
  std::condition_variable changed;
  std::size_t in_flight = 0;
  std::size_t peak_in_flight = 0;
  uint64_t delivered = 0;
  uint64_t dropped = 0;
  bool failed = false;
  bool disabled = false;
  bool raised = false;
  std::exception_ptr error;
  std::string error_message;
  std::vector<Subscription> subscriptions;  // training thread only
};

ObserverPool::ObserverPool(std::size_t threads, TensorSnapshot snapshot)
    : threads_(threads),
      executor_(std::make_shared<Executor>(threads)),
      snapshot_(std::move(snapshot)),
      any_failure_(std::make_shared<std::atomic<bool>>(false)) {
  TRAINBUS_CHECK(threads >= 1, "ObserverPool: needs at least 1 thread, got ", threads);
}

ObserverPool::~ObserverPool() {
  detach_all();
  if (drain_for(shutdown_timeout_)) {
    executor_->pool.join();
    return;
  }
  std::string pending;
  for (const auto& channel : channels_) {
    const ObserverStats s = channel->stats();
    if (s.in_flight > 0) pending += (pending.empty() ? "" : ", ") + s.name + " (" + std::to_string(s.in_flight) + ")";
  }
  warn("observers still busy after " + std::to_string(shutdown_timeout_.count()) +
       " ms: " + pending + "; their pending events are abandoned so that shutdown does not hang");
  // A hook that does not return cannot be joined here: a detached thread joins the pool instead,
  // and frees it once the stuck hooks (and the events queued behind them) are done.
  std::thread([executor = std::move(executor_)] { executor->pool.join(); }).detach();
}

template <class E>
void ObserverPool::subscribe(EventBus& bus, const std::shared_ptr<Channel>& channel, const EventFilter& filter) {
  auto post = [channel, snapshot = snapshot_](const E& event) {
    if (!channel->admit()) return;
    try {
      E copy = event;
      if constexpr (events::kHasTensorFields<E>) {
        // Copies taken here, on the publishing thread, so that the observer never sees a tensor
        // the trainer changes afterwards; observers that do not want tensors get none.
        events::for_each_tensor_field(copy, [&](events::TensorRef& field) {
          field = channel->wants_tensors && snapshot && field.has_value() ? snapshot(field) : events::TensorRef();
        });
      }
      boost::asio::post(channel->strand, [channel, copy = std::move(copy)]() { channel->handle(copy); });
    } catch (...) {
      channel->release(false);
      throw;
    }
  };
  channel->subscriptions.push_back(bus.subscribe<E>(filter, std::move(post)));
}

void ObserverPool::attach(EventBus& bus, std::shared_ptr<Observer> observer, ObserverOptions options) {
  TRAINBUS_CHECK(observer != nullptr, "ObserverPool::attach: the observer is null");
  TRAINBUS_CHECK(options.capacity >= 1, "ObserverOptions::capacity of `", observer->name(), "` must be >= 1");
  auto channel = std::make_shared<Channel>(std::move(observer), options, executor_, any_failure_);
  EventSelection selection;
  channel->observer->select_events(selection);
  events::for_each_event_type([&](auto tag) {
    using E = typename decltype(tag)::type;
    constexpr std::size_t index = events::kEventIndex<E>;
    if (selection.contains(index)) subscribe<E>(bus, channel, selection.filter(index));
  });
  std::lock_guard<std::mutex> lock(mutex_);
  channels_.push_back(std::move(channel));
}

void ObserverPool::detach_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& channel : channels_) channel->subscriptions.clear();
}

void ObserverPool::drain() {
  std::vector<std::shared_ptr<Channel>> channels;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    channels = channels_;
  }
  for (const auto& channel : channels) {
    std::unique_lock<std::mutex> lock(channel->mutex);
    channel->changed.wait(lock, [&] { return channel->in_flight == 0; });
  }
}

bool ObserverPool::drain_for(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<std::shared_ptr<Channel>> channels;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    channels = channels_;
  }
  for (const auto& channel : channels) {
    std::unique_lock<std::mutex> lock(channel->mutex);
    if (!channel->changed.wait_until(lock, deadline, [&] { return channel->in_flight == 0; })) return false;
  }
  return true;
}

bool ObserverPool::has_failure() const noexcept { return any_failure_->load(std::memory_order_relaxed); }

void ObserverPool::check() {
  if (!has_failure()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& channel : channels_) {
    std::lock_guard<std::mutex> channel_lock(channel->mutex);
    if (channel->failed && !channel->raised) {
      channel->raised = true;
      bool others = false;
      for (const auto& other : channels_) {
        if (other != channel && other->failed && !other->raised) others = true;
      }
      any_failure_->store(others, std::memory_order_relaxed);
      throw ObserverError(channel->name, channel->error_message, channel->error);
    }
  }
  any_failure_->store(false, std::memory_order_relaxed);
}

std::vector<ObserverStats> ObserverPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ObserverStats> out;
  for (const auto& channel : channels_) out.push_back(channel->stats());
  return out;
}

std::size_t ObserverPool::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return channels_.size();
}

}  // namespace trainbus
