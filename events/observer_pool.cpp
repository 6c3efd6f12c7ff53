#include "events/observer_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <thread>

#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "events/check.h"
#include "events/diagnostics.h"
#include "events/observer_hooks.h"
#include "events/post_task.h"
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
        current_executor = this;
        pool.attach();
      });
    }
  }
  /// The executor whose thread this is (nullptr on other threads): a drain from one of its own
  /// threads would wait for itself.
  static thread_local const Executor* current_executor;
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

thread_local const ObserverPool::Executor* ObserverPool::Executor::current_executor = nullptr;

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
          std::shared_ptr<std::atomic<int>> unraised_in)
      : executor(std::move(executor_in)),
        strand(boost::asio::make_strand(executor->pool)),
        observer(std::move(observer_in)),
        name(observer->name()),
        options(options_in),
        wants_tensors(observer->wants_tensors()),
        unraised(std::move(unraised_in)) {}

  /// The channel whose hook this thread runs now (nullptr outside hooks), for error messages.
  static thread_local const Channel* running;

  // Publishing thread: queues one delivery, waiting for room or dropping it when full. A full
  // queue, or a burst of kEagerBatch, posts the drainer; otherwise the next kick() does.
  void enqueue(const std::shared_ptr<Channel>& self, std::unique_ptr<Delivery> delivery) {
    {
      std::unique_lock<std::mutex> lock(mutex);
      if (closed_locked()) return;
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
        changed.wait(lock, [&] { return in_flight < options.capacity || closed_locked(); });
        --waiters;
        if (closed_locked()) return;
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

  // Undoes claim_drainer() when the drainer could not be posted.
  void release_drainer() {
    std::lock_guard<std::mutex> lock(mutex);
    scheduled = false;
  }

  void post_drainer(const std::shared_ptr<Channel>& self) {
    try {
      detail::post_task(strand, [self] { self->drain_queue(); });
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
        skip = closed_locked();
      }
      uint64_t handled = 0;
      running = this;
      for (auto& delivery : batch) {
        if (skip) break;
        try {
          delivery->run(*observer);
          ++handled;
          progress.fetch_add(1, std::memory_order_relaxed);
        } catch (...) {
          fail(std::current_exception());
          skip = true;  // failed or disabled: the rest of the batch is not delivered
        }
        if (abandoned.load(std::memory_order_relaxed)) skip = true;
      }
      running = nullptr;
      if (handled > 0) dirty.store(true, std::memory_order_relaxed);
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
    return closed_locked();
  }
  bool closed_locked() const { return failed || disabled || abandoned.load(std::memory_order_relaxed); }

  // Records the first failure (kRaise: counted in `unraised` until check() raises it; kDisable:
  // reported once). With `drop_queued`, also drops what is queued: for a failure outside the
  // drainer (its drainer could not be posted), which nobody else would ever take off the queue.
  void fail(std::exception_ptr exception, bool drop_queued = false) noexcept {
    const std::string message = describe(exception);
    bool report = false;
    std::deque<std::unique_ptr<Delivery>> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (options.on_error == ObserverOptions::OnError::kDisable) {
        report = !disabled;
        disabled = true;
      } else if (!failed) {
        failed = true;
        error = exception;
        error_message = message;
        unraised->fetch_add(1, std::memory_order_relaxed);
      }
      if (drop_queued && !scheduled) {
        in_flight -= queue.size();
        dropped.swap(queue);
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
  std::shared_ptr<std::atomic<int>> unraised;  // the pool's count of failures not yet raised
  std::atomic<uint64_t> progress{0};           // events handled, for drains that detect a stall
  std::atomic<bool> abandoned{false};          // set by a destructor that gave up: deliver nothing more
  std::atomic<bool> dirty{false};              // handled events since its last flush()
  std::atomic<bool> flush_posted{false};       // a flush() is posted to its strand
  std::chrono::steady_clock::time_point last_flush = std::chrono::steady_clock::now();  // flusher thread only

  // Posts observer->flush() to the strand if events were handled since the last one.
  void post_flush(const std::shared_ptr<Channel>& self) {
    if (!dirty.load(std::memory_order_relaxed) || flush_posted.exchange(true)) return;
    dirty.store(false, std::memory_order_relaxed);
    try {
      detail::post_task(strand, [self] {
        if (!self->closed()) {
          try {
            self->observer->flush();
          } catch (...) {
            self->fail(std::current_exception());
          }
        }
        self->flush_posted.store(false);
      });
    } catch (...) {
      dirty.store(true, std::memory_order_relaxed);  // the next round tries again
      flush_posted.store(false);
      throw;
    }
  }

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

thread_local const ObserverPool::Channel* ObserverPool::Channel::running = nullptr;

ObserverPool::ObserverPool(std::size_t threads, TensorSnapshot snapshot, std::chrono::microseconds flush_interval)
    : threads_(threads),
      executor_(std::make_shared<Executor>(threads)),
      flush_interval_(flush_interval),
      snapshot_(std::move(snapshot)),
      unraised_(std::make_shared<std::atomic<int>>(0)) {
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
      flush_due(std::chrono::steady_clock::now());
    } catch (const std::exception& e) {  // out of memory posting: the next round, or drain(), retries
      warn(std::string("observer pool: could not start deliveries: ") + e.what());
    }
    lock.lock();
  }
}

// Has every observer whose ObserverOptions::flush_interval has passed since its last flush, and
// that handled events since, flush() what it buffers. Flusher thread only.
void ObserverPool::flush_due(std::chrono::steady_clock::time_point now) {
  std::vector<std::shared_ptr<Channel>> due;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& channel : channels_) {
      const auto interval = channel->options.flush_interval;
      if (interval.count() > 0 && now - channel->last_flush >= interval) due.push_back(channel);
    }
  }
  for (const auto& channel : due) {
    channel->last_flush = now;
    channel->post_flush(channel);
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
    // What observers buffer reaches their files before the pool goes (a failure here has nobody
    // left to be raised to: it is reported on stderr by the observer's error path).
    for (const auto& channel : channels_) {
      try {
        channel->post_flush(channel);
      } catch (const std::exception& e) {
        warn("observer `" + channel->name + "`: could not flush at shutdown: " + e.what());
      }
    }
    executor_->join();
    return;
  }
  std::string names;
  for (const ObserverStats& stuck : busy_observers()) {
    names += (names.empty() ? "" : ", ") + stuck.name + " (" + std::to_string(stuck.in_flight) + " events)";
  }
  warn("observers made no progress for " + std::to_string(shutdown_timeout_.count()) + " ms at shutdown: " + names +
       "; the events still queued for them are dropped so that shutdown does not hang. A hook that never "
       "returns keeps its thread until the process exits");
  // Nothing queued behind a stuck hook runs any more: user code must not go on running after its
  // owner is gone. The stuck hook itself cannot be stopped; a detached thread joins the pool once
  // it returns and frees it.
  for (const auto& channel : channels_) channel->abandoned.store(true, std::memory_order_relaxed);
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
  auto channel = std::make_shared<Channel>(std::move(observer), options, executor_, unraised_);
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
  try {
    detail::post_task(executor_->pool, [due] {
      for (const auto& channel : due) {
        try {
          channel->post_drainer(channel);
        } catch (...) {
          channel->fail(std::current_exception(), /*drop_queued=*/true);
        }
      }
    });
  } catch (...) {
    // Nothing was posted: release the claims, so that the next kick (the flusher's, a drain's)
    // tries again rather than every drain waiting for a drainer that never comes.
    for (const auto& channel : due) channel->release_drainer();
    throw;
  }
}

void ObserverPool::drain() { drain_until(std::nullopt); }

bool ObserverPool::drain_for(std::chrono::milliseconds timeout) { return drain_until(timeout); }

bool ObserverPool::drain_until(std::optional<std::chrono::milliseconds> stall_timeout) {
  if (Executor::current_executor == executor_.get()) {
    const Channel* running = Channel::running;
    throw MisconfigurationError(detail::concat(
        "ObserverPool: drain() was called from a hook of observer `", running ? running->name : std::string("?"),
        "`, which runs on the pool it would wait for: it would wait for itself. An observer's hooks cannot "
        "wait for the observers; do that from the training thread (a Callback: trainer.wait_for_observers())"));
  }
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
    if (!stall_timeout) {
      channel->changed.wait(lock, drained);
    } else {
      // A slow observer is waited for as long as it handles events; one that handles none for
      // the whole timeout is stuck.
      for (;;) {
        const uint64_t before = channel->progress.load(std::memory_order_relaxed);
        if (channel->changed.wait_for(lock, *stall_timeout, drained)) break;
        if (channel->progress.load(std::memory_order_relaxed) == before) {
          done = false;
          break;
        }
      }
    }
    --channel->waiters;
    if (!done) return false;
  }
  return true;
}

std::vector<ObserverStats> ObserverPool::busy_observers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ObserverStats> busy;
  for (const auto& channel : channels_) {
    ObserverStats s = channel->stats();
    if (s.in_flight > 0) busy.push_back(std::move(s));
  }
  return busy;
}

bool ObserverPool::has_failure() const noexcept { return unraised_->load(std::memory_order_relaxed) > 0; }

void ObserverPool::check() {
  if (!has_failure()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& channel : channels_) {
    std::lock_guard<std::mutex> channel_lock(channel->mutex);
    if (channel->failed && !channel->raised) {
      channel->raised = true;
      unraised_->fetch_sub(1, std::memory_order_relaxed);
      throw ObserverError(channel->name, channel->error_message, channel->error);
    }
  }
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
