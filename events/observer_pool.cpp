#include "events/observer_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
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

// The Asio thread pool, run by threads of our own so that they can be made SCHED_BATCH first:
// the kernel then never lets an observer thread preempt the training thread when it is woken for
// an event (measured: that preemption, not the wake-up itself, made a publish cost ~9 us).
struct ObserverPool::Executor {
  explicit Executor(std::size_t count) : pool(0) {
    for (std::size_t i = 0; i < count; ++i) {
      threads.emplace_back([this] {
        sched_param param{};
        (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);  // best effort
        pool.attach();
      });
    }
  }
  ~Executor() { join(); }
  /// Returns once every posted handler has run.
  void join() {
    std::call_once(joined, [this] {
      // With only attached threads, Boost 1.74's join() does nothing; wait() releases the pool's
      // own work count, so that the threads return once the handlers are done.
      pool.wait();
      for (auto& thread : threads) thread.join();
    });
  }
  boost::asio::thread_pool pool;
  std::vector<std::thread> threads;
  std::once_flag joined;
};

namespace {

// One queued event for one observer: the event's copy and the hook to hand it to.
struct Delivery {
  virtual ~Delivery() = default;
  virtual void run(Observer& observer) = 0;
};

template <class E>
struct TypedDelivery final : Delivery {
  explicit TypedDelivery(E e) : event(std::move(e)) {}
  void run(Observer& observer) override { detail::deliver(observer, event); }
  E event;
};

}  // namespace

// Deliveries queued for one observer before the publisher posts its drainer without waiting for kick().
constexpr std::size_t kEagerBatch = 64;

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

  // Publishing thread: queues one delivery, waiting for room or dropping it when full. A full
  // queue, or a burst of kEagerBatch, posts the drainer; otherwise the next kick() does.
  void enqueue(const std::shared_ptr<Channel>& self, std::unique_ptr<Delivery> delivery) {
    {
      std::unique_lock<std::mutex> lock(mutex);
      if (failed || disabled) return;
      while (in_flight >= options.capacity) {
        if (options.when_full == ObserverOptions::WhenFull::kDrop) {
          ++dropped;
          return;
        }
        if (!scheduled) {
          // Full and nothing delivering: waiting for the next kick() would wait forever.
          scheduled = true;
          lock.unlock();
          post_drainer(self);
          lock.lock();
          continue;
        }
        ++waiters;
        changed.wait(lock, [&] { return in_flight < options.capacity || failed || disabled; });
        --waiters;
        if (failed || disabled) return;
      }
      ++in_flight;
      peak_in_flight = std::max(peak_in_flight, in_flight);
      queue.push_back(std::move(delivery));
      // Waking a pool thread costs the publisher ~9 us here (a cross-CPU wake-up in a VM), so
      // deliveries wait for the next kick() unless a burst has built up.
      if (scheduled || queue.size() < std::min(kEagerBatch, options.capacity)) return;
      scheduled = true;
    }
    post_drainer(self);
  }

  // Marks the channel scheduled if it has deliveries and no drainer; true if the caller must post one.
  bool claim_drainer() {
    std::lock_guard<std::mutex> lock(mutex);
    if (scheduled || queue.empty()) return false;
    scheduled = true;
    return true;
  }

  void post_drainer(const std::shared_ptr<Channel>& self) {
    try {
      boost::asio::post(strand, [self] { self->drain_queue(); });
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex);
      scheduled = false;
      throw;
    }
  }

  // Pool thread, on the strand: delivers everything queued, in order, taking the queue a batch at
  // a time so that the publishing thread and the drainer rarely meet on the mutex. Never lets an
  // exception escape into Asio.
  void drain_queue() noexcept {
    std::deque<std::unique_ptr<Delivery>> batch;
    for (;;) {
      bool skip;
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (queue.empty()) {
          scheduled = false;
          return;
        }
        batch.swap(queue);
        skip = failed || disabled;
      }
      uint64_t handled = 0;
      for (auto& delivery : batch) {
        if (skip) break;
        try {
          delivery->run(*observer);
          ++handled;
        } catch (...) {
          fail(std::current_exception());
          skip = true;  // failed or disabled: the rest of the batch is not delivered
        }
      }
      const std::size_t done = batch.size();
      batch.clear();  // frees the event copies outside the lock
      bool wake;
      {
        std::lock_guard<std::mutex> lock(mutex);
        in_flight -= done;
        delivered += handled;
        wake = waiters > 0;
      }
      if (wake) changed.notify_all();
    }
  }

  bool closed() {
    std::lock_guard<std::mutex> lock(mutex);
    return failed || disabled;
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
  std::deque<std::unique_ptr<Delivery>> queue;  // deliveries not yet handled, in publish order
  bool scheduled = false;                    // a drain_queue() is posted or running
  int waiters = 0;                           // threads blocked on `changed` (full, or draining)
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

ObserverPool::ObserverPool(std::size_t threads, TensorSnapshot snapshot, std::chrono::microseconds flush_interval)
    : threads_(threads),
      executor_(std::make_shared<Executor>(threads)),
      flush_interval_(flush_interval),
      snapshot_(std::move(snapshot)),
      any_failure_(std::make_shared<std::atomic<bool>>(false)) {
  TRAINBUS_CHECK(threads >= 1, "ObserverPool: needs at least 1 thread, got ", threads);
  TRAINBUS_CHECK(flush_interval.count() > 0, "ObserverPool: the flush interval must be positive, got ",
                 flush_interval.count(), " us");
  flusher_ = std::thread([this] { flush_periodically(); });
}

// The flusher thread: wakes the pool for whatever was published since its last round, so that the
// publishing thread never has to. SCHED_BATCH, like the pool's threads, so its wake-ups do not
// preempt the training thread.
void ObserverPool::flush_periodically() {
  sched_param param{};
  (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);  // best effort
  std::unique_lock<std::mutex> lock(flusher_mutex_);
  while (!flusher_wake_.wait_for(lock, flush_interval_, [this] { return flusher_stop_; })) {
    lock.unlock();
    try {
      kick();
    } catch (const std::exception& e) {  // out of memory posting: the next round, or drain(), retries
      warn(std::string("observer pool: could not start deliveries: ") + e.what());
    }
    lock.lock();
  }
}

ObserverPool::~ObserverPool() {
  {
    std::lock_guard<std::mutex> lock(flusher_mutex_);
    flusher_stop_ = true;
  }
  flusher_wake_.notify_all();
  flusher_.join();
  detach_all();
  if (drain_for(shutdown_timeout_)) {
    executor_->join();
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
  std::thread([executor = std::move(executor_)] { executor->join(); }).detach();
}

template <class E>
void ObserverPool::subscribe(EventBus& bus, const std::shared_ptr<Channel>& channel, const EventFilter& filter) {
  auto post = [channel, snapshot = snapshot_](const E& event) {
    if (channel->closed()) return;
    E copy = event;
    if constexpr (events::kHasTensorFields<E>) {
      // Copies taken here, on the publishing thread, so that the observer never sees a tensor the
      // trainer changes afterwards; observers that do not want tensors get none.
      events::for_each_tensor_field(copy, [&](events::TensorRef& field) {
        field = channel->wants_tensors && snapshot && field.has_value() ? snapshot(field) : events::TensorRef();
      });
    }
    channel->enqueue(channel, std::make_unique<TypedDelivery<E>>(std::move(copy)));
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

void ObserverPool::kick() {
  std::vector<std::shared_ptr<Channel>> due;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& channel : channels_) {
      if (channel->claim_drainer()) due.push_back(channel);
    }
  }
  if (due.empty()) return;
  // One post, so one wake-up, however many observers have work; the pool thread then posts each
  // observer's drainer to its strand, where the observers run in parallel.
  boost::asio::post(executor_->pool, [due = std::move(due)] {
    for (const auto& channel : due) {
      try {
        channel->post_drainer(channel);
      } catch (...) {
        channel->fail(std::current_exception());
      }
    }
  });
}

void ObserverPool::drain() { drain_until(std::nullopt); }

bool ObserverPool::drain_for(std::chrono::milliseconds timeout) {
  return drain_until(std::chrono::steady_clock::now() + timeout);
}

bool ObserverPool::drain_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
  kick();
  std::vector<std::shared_ptr<Channel>> channels;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    channels = channels_;
  }
  for (const auto& channel : channels) {
    std::unique_lock<std::mutex> lock(channel->mutex);
    ++channel->waiters;
    auto drained = [&] { return channel->in_flight == 0; };
    bool done = true;
    if (deadline) {
      done = channel->changed.wait_until(lock, *deadline, drained);
    } else {
      channel->changed.wait(lock, drained);
    }
    --channel->waiters;
    if (!done) return false;
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
