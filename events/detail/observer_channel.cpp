#include "events/detail/observer_channel.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "base/post_task.h"

namespace trainbus::events::detail {
namespace {

// Deliveries queued for one observer before the publisher posts its drainer without waiting for a
// kick (at most half the observer's capacity, so that the observer starts while the publisher
// goes on filling the other half). Large: each such post wakes a pool thread from the training
// thread; the flusher's kicks hand over everything else.
constexpr std::size_t kEagerBatch = 512;
// Deliveries a drainer hands to its observer in one turn before it lets other strands have the
// pool's threads and lets a publisher waiting for room in (in_flight_ drops per turn).
constexpr std::size_t kDrainBatch = 64;

// Marks this thread as running `channel`'s observer code for the scope.
class RunningScope {
 public:
  explicit RunningScope(const ObserverChannel* channel) : previous_(ObserverChannel::running) {
    ObserverChannel::running = channel;
  }
  ~RunningScope() { ObserverChannel::running = previous_; }
  RunningScope(const RunningScope&) = delete;
  RunningScope& operator=(const RunningScope&) = delete;

 private:
  const ObserverChannel* previous_;
};

}  // namespace

thread_local const PoolExecutor* PoolExecutor::current = nullptr;
thread_local const ObserverChannel* ObserverChannel::running = nullptr;

PoolExecutor::PoolExecutor(std::size_t count) : pool(0) {
  for (std::size_t i = 0; i < count; ++i) {
    threads.emplace_back([this, i] {
      sched_param param{};
      (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);  // best effort
      // Named, so that top -H, perf and a debugger tell them from LibTorch's and BLAS's threads.
      (void)pthread_setname_np(pthread_self(), ("tb-observer-" + std::to_string(i)).c_str());
      current = this;
      pool.attach();
    });
  }
}

void PoolExecutor::join() {
  std::call_once(joined, [this] {
    // With only attached threads, Boost 1.74's join() does nothing; wait() releases the pool's
    // own work count, so that the threads return once the handlers are done.
    pool.wait();
    for (auto& thread : threads) thread.join();
  });
}

ObserverChannel::ObserverChannel(std::shared_ptr<Observer> observer, ObserverOptions options,
                                 std::shared_ptr<PoolExecutor> executor,
                                 std::shared_ptr<std::atomic<int>> unraised,
                                 std::shared_ptr<std::atomic<uint64_t>> pool_progress,
                                 std::chrono::milliseconds stall_timeout)
    : executor_(std::move(executor)),
      strand_(boost::asio::make_strand(executor_->pool)),
      observer_(std::move(observer)),
      name_(observer_->name()),
      options_(options),
      wants_tensors_(observer_->wants_tensors()),
      stall_timeout_(stall_timeout),
      unraised_(std::move(unraised)),
      pool_progress_(std::move(pool_progress)) {}

void ObserverChannel::enqueue(const std::shared_ptr<ObserverChannel>& self, Delivery delivery) {
  std::string warning;
  bool post = false, stall = false;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (closed_locked()) {
      lose(1);
      return;
    }
    while (in_flight_ >= options_.capacity() && !closed_locked()) {
      if (options_.when_full() == ObserverOptions::WhenFull::kDrop) {
        ++dropped_;
        lose(1);
        return;
      }
      if (!scheduled_) {
        // Full and nothing delivering: waiting for the next kick would wait forever.
        scheduled_ = true;
        lock.unlock();
        post_drainer(self);
        lock.lock();
        continue;
      }
      // Wait for room while observers make progress; a stalled one is abandoned, so that the
      // training thread never waits for ever.
      ++waiters_;
      for (;;) {
        const uint64_t own = progress_.load(), pool = pool_progress_->load();
        if (changed_.wait_for(lock, stall_timeout_, [&] {
              return in_flight_ < options_.capacity() || closed_locked() || !scheduled_;
            })) {
          break;
        }
        if (stalled(own, pool)) {
          stall = true;
          warning =
              abandon_locked(stall_reason() + " while the trainer waited for room in its queue");
          break;
        }
      }
      --waiters_;
    }
    if (!closed_locked()) {
      ++in_flight_;
      peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
      queue_.push_back(std::move(delivery));
      // Waking a pool thread costs the publisher ~9 us here (a cross-CPU wake-up in a VM), so
      // deliveries wait for the next kick unless a burst has built up.
      post = !scheduled_ && queue_.size() >= std::min(kEagerBatch, std::max<std::size_t>(
                                                                       1, options_.capacity() / 2));
      if (post) scheduled_ = true;
    } else {
      lose(1);  // abandoned while it waited for room
    }
  }
  if (stall) changed_.notify_all();  // drains waiting for this channel stop waiting
  if (!warning.empty()) warn(warning);
  if (post) post_drainer(self);
}

bool ObserverChannel::claim_drainer() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (scheduled_ || queue_.empty()) return false;
  scheduled_ = true;
  return true;
}

void ObserverChannel::release_drainer() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    scheduled_ = false;
  }
  changed_.notify_all();  // a publisher waiting for room must post a drainer itself now
}

void ObserverChannel::post_drainer(const std::shared_ptr<ObserverChannel>& self) {
  try {
    trainbus::detail::post_task(strand_, [self] { self->drain_queue(self); });
  } catch (...) {
    release_drainer();
    throw;
  }
}

// Pool thread, on the strand: delivers up to a batch of what is queued, in order, then posts itself
// again to the strand if more is queued, so that the strands of several busy observers take turns
// on the pool's threads. Never lets an exception escape into Asio.
void ObserverChannel::drain_queue(const std::shared_ptr<ObserverChannel>& self) noexcept {
  RunningScope scope(this);
  for (;;) {
    std::deque<Delivery> batch;
    bool skip;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (queue_.empty()) {
        scheduled_ = false;
        return;
      }
      if (queue_.size() <= kDrainBatch) {
        batch.swap(queue_);
      } else {
        for (std::size_t i = 0; i < kDrainBatch; ++i) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      skip = closed_locked();
    }
    uint64_t handled = 0, attempted = 0;
    for (auto& delivery : batch) {
      // NOTE: in_hook_ is set before abandoned_ is read (both seq_cst), and the pool's destructor
      // sets abandoned_ before it reads in_hook_: a hook that starts is always seen by it.
      in_hook_.store(true);
      if (skip || abandoned_.load()) {
        in_hook_.store(false);
        break;
      }
      ++attempted;
      try {
        delivery.run(*observer_);
        ++handled;
        progress_.fetch_add(1);
        pool_progress_->fetch_add(1);
      } catch (...) {
        fail(std::current_exception());
        skip = true;  // failed or disabled: the rest of the batch is not delivered
      }
      in_hook_.store(false);
    }
    if (handled > 0) dirty_.store(true, std::memory_order_relaxed);
    lose(batch.size() - attempted);  // skipped: the observer failed or was abandoned
    const std::size_t done = batch.size();
    batch.clear();  // releases the snapshots outside the lock
    bool wake, more;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_flight_ -= done;
      delivered_ += handled;
      wake = waiters_ > 0;
      more = !queue_.empty();
      if (!more) scheduled_ = false;
    }
    if (wake) changed_.notify_all();
    if (!more) return;
    try {
      trainbus::detail::post_task(
          strand_, [self] { self->drain_queue(self); });  // the rest after the other strands' turn
      return;
    } catch (...) {
      // out of memory posting: go on here instead
    }
  }
}

void ObserverChannel::post_flush(const std::shared_ptr<ObserverChannel>& self) {
  if (!dirty_.load(std::memory_order_relaxed) || flush_posted_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_locked()) {
      flush_posted_.store(false);
      return;
    }
    ++flushes_in_flight_;
  }
  dirty_.store(false, std::memory_order_relaxed);
  try {
    trainbus::detail::post_task(strand_, [self] { self->run_flush(); });
  } catch (...) {
    dirty_.store(true, std::memory_order_relaxed);  // the next round tries again
    {
      std::lock_guard<std::mutex> lock(mutex_);
      --flushes_in_flight_;
    }
    flush_posted_.store(false);
    changed_.notify_all();
    throw;
  }
}

void ObserverChannel::run_flush() noexcept {
  {
    RunningScope scope(this);
    in_hook_.store(true);
    if (!abandoned_.load() && !closed()) {
      try {
        observer_->flush();
      } catch (...) {
        fail(std::current_exception());
      }
    }
    in_hook_.store(false);
  }
  progress_.fetch_add(1);
  pool_progress_->fetch_add(1);
  flush_posted_.store(false);
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --flushes_in_flight_;
    wake = waiters_ > 0;
  }
  if (wake) changed_.notify_all();
}

bool ObserverChannel::stalled(uint64_t own, uint64_t pool) const {
  return in_hook_.load() ? progress_.load() == own : pool_progress_->load() == pool;
}

bool ObserverChannel::wait_drained(std::optional<std::chrono::milliseconds> stall_timeout) {
  std::string warning;
  bool drained = true;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    ++waiters_;
    auto done = [&] { return (in_flight_ == 0 && flushes_in_flight_ == 0) || abandoned_.load(); };
    if (!stall_timeout) {
      changed_.wait(lock, done);
    } else {
      // A slow observer is waited for as long as it handles events; one that handles none for
      // the whole timeout is stuck, and one that gets no thread while no observer makes progress
      // is starved by one that is.
      for (;;) {
        const uint64_t own = progress_.load(), pool = pool_progress_->load();
        if (changed_.wait_for(lock, *stall_timeout, done)) break;
        if (stalled(own, pool)) {
          warning = abandon_locked(stall_reason());
          break;
        }
      }
    }
    --waiters_;
    if (abandoned_.load() && (in_flight_ > 0 || flushes_in_flight_ > 0)) drained = false;
  }
  if (!warning.empty()) warn(warning);
  changed_.notify_all();
  return drained;
}

std::string ObserverChannel::stall_reason() const {
  const std::string timeout = std::to_string(stall_timeout_.count()) + " ms";
  const std::string option = " (TrainerOptions::observer_stall_timeout)";
  if (in_flight_ == 0) {
    return "has not returned from flush() for " + timeout + option +
           ": it is stuck there, and nothing more is "
           "delivered to it";
  }
  const std::string events =
      std::to_string(in_flight_) + " waiting event" + (in_flight_ == 1 ? "" : "s");
  if (in_hook_.load()) {
    return "handled none of its " + events + " for " + timeout + option +
           ": it is stuck in a hook, and nothing more is delivered to it";
  }
  return "got no pool thread for its " + events + " for " + timeout + option +
         " while no observer made progress: another observer holding the threads is stuck; nothing "
         "more is "
         "delivered to it";
}

std::string ObserverChannel::abandon_locked(const std::string& why) {
  if (abandoned_.load()) return {};
  abandoned_.store(true);
  std::string warning;
  if (options_.on_error() == ObserverOptions::OnError::kDisable) {
    if (!disabled_) warning = "observer `" + name_ + "` " + why;
    disabled_ = true;
  } else if (!failed_) {
    failed_ = true;
    error_message_ = why;
    error_ = std::make_exception_ptr(std::runtime_error(why));
    unraised_->fetch_add(1);
  }
  // What is queued will never run: freed now, not when the stuck hook returns (maybe never).
  // A running drainer's own batch is accounted for by it.
  in_flight_ -= queue_.size();
  lose(queue_.size());
  queue_.clear();
  return warning;
}

void ObserverChannel::fail(std::exception_ptr exception, bool drop_queued) noexcept {
  std::string message;
  try {
    message = describe_exception(exception);
  } catch (...) {
    message = "(message unavailable: out of memory)";
  }
  bool report = false;
  std::deque<Delivery> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (options_.on_error() == ObserverOptions::OnError::kDisable) {
      report = !disabled_;
      disabled_ = true;
    } else if (!failed_) {
      failed_ = true;
      error_ = exception;
      error_message_ = message;
      unraised_->fetch_add(1);
    }
    if (drop_queued && !scheduled_) {
      in_flight_ -= queue_.size();
      lose(queue_.size());
      dropped.swap(queue_);
    }
  }
  changed_.notify_all();
  if (report) {
    warn("observer `" + name_ + "` failed: " + message +
         "; it receives no more events (ObserverOptions::on_error = kDisable)");
  }
}

bool ObserverChannel::closed() {
  std::lock_guard<std::mutex> lock(mutex_);
  return closed_locked();
}

void ObserverChannel::raise_if_failed() {
  std::exception_ptr error;
  std::string message;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!failed_ || raised_) return;
    raised_ = true;
    error = error_;
    message = error_message_;
  }
  unraised_->fetch_sub(1);
  throw ObserverError(name_, message, error);
}

std::string ObserverChannel::unraised_failure() {
  std::lock_guard<std::mutex> lock(mutex_);
  return failed_ && !raised_ ? error_message_ : std::string();
}

ObserverStats ObserverChannel::stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  return {name_, delivered_, dropped_, in_flight_, peak_in_flight_, failed_, disabled_};
}

}  // namespace trainbus::events::detail
