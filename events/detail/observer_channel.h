#pragma once
/// Private to ObserverPool: the Asio threads, and one attached observer's queue, strand, bound,
/// errors and flushes. Not installed.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include "events/detail/observer_hooks.h"
#include "events/observer_pool.h"

namespace trainbus::events::detail {

/// The Asio thread pool, run by threads of our own so that they can be made SCHED_BATCH first: the
/// kernel then never lets an observer thread preempt the training thread when it is woken for an
/// event (measured: that preemption, not the wake-up itself, made a publish cost ~9 us).
struct PoolExecutor {
  explicit PoolExecutor(std::size_t count);
  ~PoolExecutor() { join(); }
  /// Returns once every posted handler has run.
  void join();

  /// The executor whose thread this is (nullptr on other threads): a drain from one of its own
  /// threads would wait for itself.
  static thread_local const PoolExecutor* current;

  boost::asio::thread_pool pool;
  std::vector<std::thread> threads;
  std::once_flag joined;
};

/// One queued event for one observer: a handle on the event's snapshot, shared by every observer
/// of the pool that takes the event (immutable: observers only read it), and its hook. A value,
/// so that queuing allocates nothing per observer.
struct Delivery {
  std::shared_ptr<const void> event;
  void (*hook)(Observer& observer, const void* event) = nullptr;
  std::chrono::steady_clock::time_point published;

  void run(Observer& observer) const {
    observer.published_at_ = published;
    hook(observer, event.get());
  }
};

/// Delivery::hook for events of type E.
template <class E>
void deliver_erased(Observer& observer, const void* event) {
  deliver(observer, *static_cast<const E*>(event));
}

/// One attached observer. Deliveries queue on the publishing thread; a drainer posted to the
/// observer's strand hands them to its hooks in order. The channel is shared by the pool, the bus
/// slots and the posted handlers (shared_from_this is passed as `self`).
///
/// An observer that handles nothing for the stall timeout while it has events (stuck in a hook, or
/// starved of pool threads by one that is) is abandoned: recorded as failed with the reason, its
/// queued events dropped, and nothing delivered to it any more; waits stop waiting for it.
class ObserverChannel {
 public:
  /// `unraised` and `pool_progress` are the pool's: its count of failures not yet raised, and of
  /// events and flushes any of its observers handled (a starved observer is not stalled while
  /// another makes progress).
  ObserverChannel(std::shared_ptr<Observer> observer, ObserverOptions options,
                  std::shared_ptr<PoolExecutor> executor,
                  std::shared_ptr<std::atomic<int>> unraised,
                  std::shared_ptr<std::atomic<uint64_t>> pool_progress,
                  std::chrono::milliseconds stall_timeout);

  /// The channel whose hook (or flush) this thread runs now; nullptr outside them.
  static thread_local const ObserverChannel* running;

  // ---- publishing thread ----

  /// Queues one delivery, waiting for room (at most a stall timeout without progress) or dropping
  /// it when full. A full queue, or a burst, posts the drainer; otherwise the next kick does.
  void enqueue(const std::shared_ptr<ObserverChannel>& self, Delivery delivery);
  /// Marks the channel scheduled if it has deliveries and no drainer; true if the caller must post
  /// one.
  bool claim_drainer();
  /// Undoes claim_drainer() when the drainer could not be posted.
  void release_drainer();
  /// Posts the drainer to the strand; on failure undoes `scheduled` and rethrows.
  void post_drainer(const std::shared_ptr<ObserverChannel>& self);
  /// Posts observer->flush() to the strand if events were handled since the last flush (counted in
  /// flight, so that drains wait for it too). Throws if it cannot post; then nothing changed.
  void post_flush(const std::shared_ptr<ObserverChannel>& self);

  // ---- any thread ----

  /// Waits until everything posted before is handled, or the channel is abandoned. With a stall
  /// timeout, abandons the channel when nothing is handled for that long; false then.
  bool wait_drained(std::optional<std::chrono::milliseconds> stall_timeout);
  /// Records the first failure (kRaise: counted in `unraised` until raised; kDisable: reported
  /// once). With `drop_queued`, also drops what is queued when no drainer will: for a failure
  /// outside the drainer (its drainer could not be posted).
  void fail(std::exception_ptr exception, bool drop_queued = false) noexcept;
  bool closed();
  bool abandoned() const noexcept { return abandoned_.load(); }
  /// Whether a hook or flush of this observer runs now (an abandoned one may never return).
  bool in_hook() const noexcept { return in_hook_.load(); }
  /// Throws the failure if it is recorded and not raised yet (caller holds no channel lock).
  void raise_if_failed();
  /// The message of a failure recorded and never raised, or "" (for reports at shutdown).
  std::string unraised_failure();
  ObserverStats stats();

  const std::string& name() const noexcept { return name_; }
  const ObserverOptions& options() const noexcept { return options_; }
  bool wants_tensors() const noexcept { return wants_tensors_; }
  Observer& observer() noexcept { return *observer_; }

  /// When flush() was last due; the flusher thread only.
  std::chrono::steady_clock::time_point last_flush = std::chrono::steady_clock::now();

 private:
  void drain_queue(const std::shared_ptr<ObserverChannel>& self) noexcept;
  /// Counts `events` the observer selected and will never receive (Observer::events_lost).
  void lose(std::size_t events) noexcept {
    observer_->lost_.fetch_add(events, std::memory_order_relaxed);
  }
  void run_flush() noexcept;
  // Whether a wait that saw `own` and `pool` progress before it timed out saw a stall: none of this
  // observer's own while its hook runs, none of any observer's while it waits for a thread.
  bool stalled(uint64_t own, uint64_t pool) const;
  bool closed_locked() const { return failed_ || disabled_ || abandoned_.load(); }
  // abandon() under the lock; returns the warning to print outside it (kDisable), or "".
  std::string abandon_locked(const std::string& why);
  std::string stall_reason() const;

  // NOTE: the executor outlives the strand (members are destroyed in reverse order), since a bus
  // may release the slots that hold this channel after the pool itself is gone.
  std::shared_ptr<PoolExecutor> executor_;
  boost::asio::strand<boost::asio::thread_pool::executor_type> strand_;
  std::shared_ptr<Observer> observer_;
  const std::string name_;
  const ObserverOptions options_;
  const bool wants_tensors_;
  const std::chrono::milliseconds stall_timeout_;
  std::shared_ptr<std::atomic<int>> unraised_;
  std::shared_ptr<std::atomic<uint64_t>> pool_progress_;

  std::atomic<uint64_t> progress_{0};  // events handled and flushes done: what a stall lacks
  std::atomic<bool> abandoned_{false};
  std::atomic<bool> in_hook_{false};
  std::atomic<bool> dirty_{false};  // events handled since the last flush()
  std::atomic<bool> flush_posted_{false};

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Delivery> queue_;         // deliveries not yet handled, in publish order
  bool scheduled_ = false;             // a drain_queue() is posted or running
  int waiters_ = 0;                    // threads blocked on `changed_` (full, or draining)
  std::size_t in_flight_ = 0;          // queued or running deliveries
  std::size_t flushes_in_flight_ = 0;  // posted or running flush()
  std::size_t peak_in_flight_ = 0;
  uint64_t delivered_ = 0;
  uint64_t dropped_ = 0;
  bool failed_ = false;
  bool disabled_ = false;
  bool raised_ = false;
  std::exception_ptr error_;
  std::string error_message_;
};

}  // namespace trainbus::events::detail
