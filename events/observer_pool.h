#pragma once
/// ObserverPool: runs Observers on a Boost.Asio thread pool, one strand each, bounded, errors kept.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "base/arg.h"
#include "events/event_bus.h"
#include "events/observer.h"

namespace trainbus::events {

namespace detail {
class ObserverChannel;
struct FanoutBase;
struct PoolExecutor;
}  // namespace detail

/// How one observer is run.
struct ObserverOptions {
  /// What to do when `capacity` events are already waiting for this observer.
  enum class WhenFull {
    kBlock,  ///< the publishing (training) thread waits for room: nothing is lost (default)
    kDrop,   ///< the event is dropped and counted (ObserverStats::dropped)
  };
  /// What to do when a hook throws.
  enum class OnError {
    kRaise,    ///< raise an ObserverError on the training thread at the next sync point (default)
    kDisable,  ///< report it once on stderr and deliver nothing more to this observer
  };
  /// Events in flight (posted, not yet handled) at most; bounds the memory an observer can hold.
  TRAINBUS_ARG(std::size_t, capacity) = 1024;
  TRAINBUS_ARG(WhenFull, when_full) = WhenFull::kBlock;
  TRAINBUS_ARG(OnError, on_error) = OnError::kRaise;
  /// At most this long after it handled an event, Observer::flush() runs (on its strand), so that
  /// what it buffers reaches the operating system and survives a crash of the process (SIGKILL);
  /// 0: only the observer's own flushes.
  TRAINBUS_ARG(std::chrono::milliseconds, flush_interval){1000};
  /// In data-parallel training, also on the ranks other than 0 (a Recorder of each rank's own
  /// events, say). By default an observer runs on rank 0 only, as Lightning's loggers and
  /// progress bar do; on one process it always runs. The built-in observers that write files
  /// (observers::CsvLogger, observers::TensorBoardLogger, record::Recorder) then write rank R's
  /// own beside rank 0's; another must name its files by the rank it is told in
  /// Observer::attached (an observers::Logger subclass: write in files_dir()), else two ranks
  /// write one file.
  TRAINBUS_ARG(bool, every_rank) = false;
};

/// Counters of one observer, for reports and tests.
struct ObserverStats {
  std::string name;
  uint64_t delivered = 0;     ///< events its hooks handled (or skipped after it failed)
  uint64_t dropped = 0;       ///< events refused because it was full (WhenFull::kDrop)
  std::size_t in_flight = 0;  ///< events posted and not yet handled
  std::size_t peak_in_flight = 0;
  bool failed = false;
  bool disabled = false;
};

/// An observer's hook threw. Raised on the training thread; names the observer and keeps the
/// original exception.
class ObserverError : public std::runtime_error {
 public:
  ObserverError(std::string observer, std::string message, std::exception_ptr original);
  const std::string& observer() const noexcept { return observer_; }
  const std::exception_ptr& original() const noexcept { return original_; }

 private:
  std::string observer_;
  std::exception_ptr original_;
};

/// Owns a boost::asio::thread_pool and the observers attached to it.
///
/// attach() subscribes an observer to a bus: each selected event becomes, on the publishing thread,
/// an immutable snapshot that every observer of the pool taking it shares (tensor fields
/// snapshotted or dropped): the event itself when the Trainer's publish_lazy hands it over
/// (EventBus::keep), else one copy. It is queued for each of them, and nothing more:
/// waking a pool thread would cost the publisher more than everything else together (measured ~9 us
/// in a VM, bench/observers.cpp). A flusher thread of the pool's own hands the queues to the
/// observers' strands every kick interval (10 ms by default: each kick wakes pool threads), as do
/// drain(), a full queue and a burst of 512 events (half the capacity, if less); it also has each
/// observer flush() on its ObserverOptions::flush_interval.
///
/// Nothing here waits for ever on an observer that is stuck: one that handles no event for the
/// stall timeout while the trainer waits on it (for room in its queue, in a drain, at shutdown) is
/// abandoned: its failure is recorded (raised by check() as ObserverError naming it, or reported
/// once with OnError::kDisable), its queued events are dropped and nothing more is delivered to it.
/// A slow observer that makes progress is waited for. All members are called from the training
/// thread; drain(), check() and stats() are also safe from others, but not from an observer's own
/// hook. Nothing posted lets an exception escape into Asio (which would call std::terminate).
class ObserverPool {
 public:
  /// Makes a snapshot of a tensor field for observers that want tensors (detach + clone to CPU;
  /// core installs it, since events/ cannot name torch types). Without one, such fields arrive
  /// empty.
  using TensorSnapshot = std::function<events::TensorRef(const events::TensorRef&)>;

  explicit ObserverPool(std::size_t threads = 2, TensorSnapshot snapshot = {},
                        std::chrono::milliseconds stall_timeout = std::chrono::seconds(60),
                        std::chrono::microseconds kick_interval = std::chrono::milliseconds(10));
  /// Disconnects, drains, has every observer flush(), then joins the threads; an observer that
  /// stalls on the way is abandoned (see the class comment). A hook that never returns keeps its
  /// pool thread until the process exits; nothing queued behind it runs.
  ~ObserverPool();
  ObserverPool(const ObserverPool&) = delete;
  ObserverPool& operator=(const ObserverPool&) = delete;

  /// Starts delivering the events `observer` selects from `bus`, after telling it where it runs
  /// (Observer::attached with `placement`). The default is rank 0 of 1, one process's; the Trainer
  /// passes its rank. A pool made by hand in a job of several processes must pass
  /// Placement{global_rank, local_rank, world_size} of this process: with the default, an observer
  /// on rank R writes rank 0's files. Keep the bus alive as long as the pool.
  void attach(EventBus& bus, std::shared_ptr<Observer> observer, ObserverOptions options = {},
              Placement placement = {});
  /// Stops delivering new events to every observer (those already posted are still handled).
  void detach_all();

  /// Starts delivering what is queued now rather than at the next kick interval (one pool wake-up
  /// for all observers). Cheap when nothing is queued.
  void kick();
  /// Blocks until every event published before the call has been handled (kicks first), however
  /// long that takes. Throws MisconfigurationError when called from an observer's hook (it would
  /// wait for itself).
  void drain();
  /// drain() that abandons an observer with events left that handles none of them for
  /// `stall_timeout` (a slow one is waited for as long as it makes progress); false if it
  /// abandoned one now or one abandoned before still had events.
  bool drain_unless_stalled(std::chrono::milliseconds stall_timeout);
  /// The stats of the observers with events not yet handled, for messages.
  std::vector<ObserverStats> busy_observers() const;
  /// Throws the ObserverError of the first observer that failed since the last check (kRaise only).
  /// Each failure is raised exactly once, however many fail and whenever they do.
  void check();
  /// A relaxed read: whether check() would throw. Cheap enough for every batch.
  bool has_failure() const noexcept;

  std::vector<ObserverStats> stats() const;
  std::size_t size() const;
  std::size_t threads() const noexcept { return threads_; }
  std::chrono::milliseconds stall_timeout() const noexcept { return stall_timeout_; }

 private:
  template <class E>
  void subscribe(EventBus& bus, const std::shared_ptr<detail::ObserverChannel>& channel,
                 const EventFilter& filter);
  void flush_periodically();
  // Posts flush() to every observer whose flush_interval has passed since its last. Flusher thread.
  void flush_due(std::chrono::steady_clock::time_point now);
  /// drain() and drain_unless_stalled(): kicks, then waits for every channel.
  bool drain_until(std::optional<std::chrono::milliseconds> stall_timeout);

  std::size_t threads_;
  std::shared_ptr<detail::PoolExecutor> executor_;
  std::chrono::milliseconds stall_timeout_;
  std::chrono::microseconds kick_interval_;
  TensorSnapshot snapshot_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<detail::ObserverChannel>> channels_;
  // One bus subscription per event type and bus, for all channels (detail::Fanout).
  struct Subscribed {
    std::shared_ptr<detail::FanoutBase> fanout;
    Subscription subscription;
  };
  std::vector<Subscribed> fanouts_;
  // Failures recorded and not yet raised by check(): a count, so that none is lost when several
  // happen at once (channels increment it under their own lock, check() decrements it).
  std::shared_ptr<std::atomic<int>> unraised_;
  // Events and flushes any observer handled: a starved observer is not stalled while it grows.
  std::shared_ptr<std::atomic<uint64_t>> progress_;
  std::mutex flusher_mutex_;
  std::condition_variable flusher_wake_;
  bool flusher_stop_ = false;
  std::thread flusher_;  // last: started once everything it uses exists
};

}  // namespace trainbus::events
