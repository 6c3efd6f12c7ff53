#pragma once
/// Observer: an asynchronous subscriber with the Callback hook vocabulary (see ObserverPool).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "events/all.h"
#include "events/event_filter.h"

namespace trainbus::events {

namespace detail {
struct Delivery;
class ObserverChannel;
}  // namespace detail

/// Where an observer runs: this process's place in its job. It describes the process the
/// observer runs in, not the run its events come from: under replay it is the replaying process
/// (rank 0 of 1) while Setup's fields carry the recorded rank.
struct Placement {
  int64_t global_rank = 0;  ///< this process's rank among all of the job's (0: rank zero)
  int64_t local_rank = 0;   ///< its rank among the job's processes on this machine
  int64_t world_size = 1;   ///< processes in the job (1: one process, no data parallelism)
};

/// The event types (and filters) an observer receives.
class EventSelection {
 public:
  /// Receives every event type.
  EventSelection& all();
  /// Receives E, the occurrences `filter` lets through.
  template <class E>
  EventSelection& add(EventFilter filter = {}) {
    filters_[events::kEventIndex<E>] = filter;
    selected_[events::kEventIndex<E>] = true;
    return *this;
  }
  bool contains(std::size_t index) const noexcept { return selected_[index]; }
  const EventFilter& filter(std::size_t index) const noexcept { return filters_[index]; }

 private:
  bool selected_[events::AllEvents::size] = {};
  EventFilter filters_[events::AllEvents::size];
};

/// An asynchronous observer: the same hooks as Callback, named alike, but each receives an
/// immutable snapshot of its event and no Trainer or Module. Runs on the ObserverPool's threads,
/// on a strand of its own: it sees its events in publish order and never concurrently with itself,
/// while different observers run in parallel. It may be slow (disk, network, serialisation): the
/// training thread only snapshots the event (shared by the pool's observers) and queues it. An
/// exception from a hook is caught on the pool and raised on the training thread as an
/// ObserverError naming this observer (or, with ObserverOptions::on_error = kDisable, reported once
/// and the observer switched off).
class Observer {
 public:
  virtual ~Observer();

  /// Name in errors and stats; default: the class name.
  virtual std::string name() const;
  /// The events to receive, optionally filtered. Default: every event type. Override it to keep
  /// the training thread from copying events this observer ignores.
  virtual void select_events(EventSelection& selection) const;
  /// true: tensor fields (losses, outputs) arrive as detached CPU copies taken on the training
  /// thread; false (default): they arrive empty and cost nothing.
  virtual bool wants_tensors() const { return false; }
  /// true for an observer that writes metrics where people read them (observers::Logger: CSV,
  /// TensorBoard). The Trainer lists such observers in Trainer::loggers(), through which callbacks
  /// log values of their own (events::MetricsLogged). Default: false.
  virtual bool is_logger() const { return false; }
  /// Where a logger writes (Lightning's logger.log_dir); "" for none.
  virtual std::string log_dir() const { return {}; }
  /// true for an observer that draws the run's progress (observers::ProgressBar; Lightning's
  /// ProgressBar callbacks). A Trainer with TrainerOptions::enable_progress_bar attaches a default
  /// one at the start of a run only when none is attached. Default: false.
  virtual bool is_progress_bar() const { return false; }
  /// Hands what the observer buffers to the operating system (an ofstream's buffer, say). Called
  /// on its strand at most ObserverOptions::flush_interval after it handled events, and when the
  /// pool shuts down, so that a crash of the process loses at most that interval. May throw (then
  /// it fails like a hook).
  virtual void flush() {}
  /// Where it runs, told when it is attached (ObserverPool::attach), on the attaching thread,
  /// before it receives any event: Trainer::add_observer passes its rank and world size (also to
  /// an observer added with ObserverOptions::every_rank on a rank other than 0), a pool used
  /// without a Trainer one process's placement unless given another. An observer that writes
  /// files names them by it, so that two ranks never write one file (observers::Logger,
  /// record::Recorder). It cannot wait for Setup, whose rank fields say the same: a callback's
  /// setup hook may log before Setup is published, and a run can fail before it. May throw: the
  /// observer is then not attached and the error reaches the caller of attach (add_observer).
  /// Called once per attach. Default: nothing.
  virtual void attached(const Placement& placement) { (void)placement; }

  // ---- hooks: one per event type, named as Callback's (on_train_batch_end receives a
  // TrainBatchEnd), in the order a fit meets them; each event's struct says when it fires ----
#define TRAINBUS_DETAIL_OBSERVER_HOOK(Type, hook) \
  virtual void hook(const events::Type& event) { (void)event; }
  TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_OBSERVER_HOOK)
#undef TRAINBUS_DETAIL_OBSERVER_HOOK

 protected:
  /// When the event a hook handles now was published (steady clock), stamped on the publishing
  /// thread as it was queued: without the queueing delay before the hook. Valid inside a hook.
  std::chrono::steady_clock::time_point published_at() const noexcept { return published_at_; }
  /// Events this observer selected that the pool never handed to it: dropped when its queue was
  /// full (WhenFull::kDrop), discarded when it was abandoned as stalled or failed. Any thread.
  uint64_t events_lost() const noexcept { return lost_.load(std::memory_order_relaxed); }

 private:
  friend struct detail::Delivery;
  friend class detail::ObserverChannel;
  std::chrono::steady_clock::time_point published_at_{};
  std::atomic<uint64_t> lost_{0};
};

}  // namespace trainbus::events
