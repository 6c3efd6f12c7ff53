#include "events/observer_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <system_error>
#include <thread>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "base/post_task.h"
#include "events/detail/fanout.h"
#include "events/detail/observer_channel.h"
#include "events/tensor_fields.h"

namespace trainbus::events {

using detail::ObserverChannel;
using detail::PoolExecutor;

ObserverError::ObserverError(std::string observer, std::string message, std::exception_ptr original)
    : std::runtime_error("observer `" + observer + "` failed: " + message),
      observer_(std::move(observer)),
      original_(std::move(original)) {}

ObserverPool::ObserverPool(std::size_t threads, TensorSnapshot snapshot,
                           std::chrono::milliseconds stall_timeout,
                           std::chrono::microseconds kick_interval)
    : threads_(threads),
      executor_(std::make_shared<PoolExecutor>(threads)),
      stall_timeout_(stall_timeout),
      kick_interval_(kick_interval),
      snapshot_(std::move(snapshot)),
      unraised_(std::make_shared<std::atomic<int>>(0)),
      progress_(std::make_shared<std::atomic<uint64_t>>(0)) {
  TRAINBUS_CHECK(threads >= 1, "ObserverPool: needs at least 1 thread, got ", threads);
  TRAINBUS_CHECK(stall_timeout.count() > 0,
                 "ObserverPool: the stall timeout must be positive, got ", stall_timeout.count(),
                 " ms");
  TRAINBUS_CHECK(kick_interval.count() > 0 && kick_interval <= std::chrono::hours(24),
                 "ObserverPool: the kick interval must be positive and at most a day, got ",
                 kick_interval.count(), " us");
  flusher_ = std::thread([this] { flush_periodically(); });
}

// The flusher thread: wakes the pool for whatever was published since its last round, so that the
// publishing thread never has to, and has observers flush() on their
// ObserverOptions::flush_interval. SCHED_BATCH, like the pool's threads, so its wake-ups do not
// preempt the training thread.
void ObserverPool::flush_periodically() {
  sched_param param{};
  (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);  // best effort
  (void)pthread_setname_np(pthread_self(), "tb-obs-flusher");
  std::unique_lock<std::mutex> lock(flusher_mutex_);
  while (!flusher_wake_.wait_for(lock, kick_interval_, [this] { return flusher_stop_; })) {
    lock.unlock();
    try {
      kick();
      flush_due(std::chrono::steady_clock::now());
    } catch (
        const std::exception& e) {  // out of memory posting: the next round, or drain(), retries
      warn(std::string("observer pool: could not start deliveries: ") + e.what());
    }
    lock.lock();
  }
}

void ObserverPool::flush_due(std::chrono::steady_clock::time_point now) {
  std::vector<std::shared_ptr<ObserverChannel>> due;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& channel : channels_) {
      const auto interval = channel->options().flush_interval();
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
  bool clean = false;
  try {
    detach_all();
    // Everything delivered, then what observers buffer handed to the OS (as their flush_interval
    // promises), then the threads joined; each step gives up on an observer that stalls.
    clean = drain_unless_stalled(stall_timeout_);
    for (const auto& channel : channels_) {
      if (channel->options().flush_interval().count() > 0) channel->post_flush(channel);
    }
    clean = drain_unless_stalled(stall_timeout_) && clean;
  } catch (const std::exception& e) {
    warn(std::string("observer pool: shutting down: ") + e.what());
  }
  // Failures nobody will raise any more (the owner is going away) are at least reported.
  for (const auto& channel : channels_) {
    try {
      const std::string failure = channel->unraised_failure();
      if (!failure.empty())
        warn("observer `" + channel->name() + "` failed at shutdown: " + failure);
    } catch (...) {
    }
  }
  // A hook of an abandoned observer may never return: joining would hang. NOTE: abandoned() is
  // read before in_hook() (both seq_cst), the order a starting hook checks them in reverse.
  bool stuck = false;
  for (const auto& channel : channels_)
    stuck = stuck || (channel->abandoned() && channel->in_hook());
  if (clean || !stuck) {
    executor_->join();
    return;
  }
  // The stuck hook cannot be stopped, and nothing queued behind it runs (the channels are
  // abandoned). A detached thread joins the pool once the hook returns and frees it; a hook that
  // never returns keeps its thread until the process exits.
  std::shared_ptr<PoolExecutor> executor = executor_;
  try {
    std::thread([executor] { executor->join(); }).detach();
  } catch (...) {
    // No thread to spare: the pool is left behind, never joined, rather than hang here.
    new std::shared_ptr<PoolExecutor>(std::move(executor_));
  }
}

template <class E>
void ObserverPool::subscribe(EventBus& bus, const std::shared_ptr<ObserverChannel>& channel,
                             const EventFilter& filter) {
  // One subscription per event type and bus for all observers (see detail::Fanout); under mutex_
  // only against detach_all() from another thread.
  std::shared_ptr<detail::Fanout<E>> fanout;
  for (const auto& each : fanouts_) {
    if (each.fanout->bus == &bus && each.fanout->index == kEventIndex<E>) {
      fanout = std::static_pointer_cast<detail::Fanout<E>>(each.fanout);
      break;
    }
  }
  if (!fanout) {
    fanout = std::make_shared<detail::Fanout<E>>(&bus, snapshot_);
    // The slot shares the fanout: a publish running while detach_all() disconnects it keeps it.
    Subscription subscription = bus.keep<E>([fanout](const E& event, std::shared_ptr<E> sole) {
      fanout->publish(event, std::move(sole));
    });
    fanouts_.push_back({fanout, std::move(subscription)});
  }
  fanout->add(channel, filter);
}

void ObserverPool::attach(EventBus& bus, std::shared_ptr<Observer> observer,
                          ObserverOptions options, Placement placement) {
  TRAINBUS_CHECK(observer != nullptr, "ObserverPool::attach: the observer is null");
  TRAINBUS_CHECK(options.capacity() >= 1, "ObserverOptions::capacity of `", observer->name(),
                 "` must be >= 1");
  // Before the channel, which keeps its name (a Recorder's names the file of its rank), and
  // before any event can reach it.
  observer->attached(placement);
  auto channel = std::make_shared<ObserverChannel>(std::move(observer), options, executor_,
                                                   unraised_, progress_, stall_timeout_);
  EventSelection selection;
  channel->observer().select_events(selection);
  std::lock_guard<std::mutex> lock(mutex_);
  events::for_each_event_type([&](auto tag) {
    using E = typename decltype(tag)::type;
    constexpr std::size_t index = events::kEventIndex<E>;
    if (selection.contains(index)) subscribe<E>(bus, channel, selection.filter(index));
  });
  channels_.push_back(std::move(channel));
}

void ObserverPool::detach_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  fanouts_.clear();  // their subscriptions disconnect from the buses
}

void ObserverPool::kick() {
  std::vector<std::shared_ptr<ObserverChannel>> due;
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
    trainbus::detail::post_task(executor_->pool, [due] {
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

bool ObserverPool::drain_unless_stalled(std::chrono::milliseconds stall_timeout) {
  return drain_until(stall_timeout);
}

bool ObserverPool::drain_until(std::optional<std::chrono::milliseconds> stall_timeout) {
  if (PoolExecutor::current == executor_.get()) {
    const ObserverChannel* running = ObserverChannel::running;
    throw MisconfigurationError(
        trainbus::detail::concat("ObserverPool: drain() was called from a hook of observer `",
                                 running ? running->name() : std::string("?"),
                                 "`, which runs on the pool it would wait for: it would wait for "
                                 "itself. An observer's hooks cannot "
                                 "wait for the observers; do that from the training thread (a "
                                 "Callback: trainer.wait_for_observers())"));
  }
  kick();
  std::vector<std::shared_ptr<ObserverChannel>> channels;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    channels = channels_;
  }
  bool drained = true;
  for (const auto& channel : channels) drained = channel->wait_drained(stall_timeout) && drained;
  return drained;
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

bool ObserverPool::has_failure() const noexcept {
  return unraised_->load(std::memory_order_relaxed) > 0;
}

void ObserverPool::check() {
  if (!has_failure()) return;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& channel : channels_) channel->raise_if_failed();
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

}  // namespace trainbus::events
