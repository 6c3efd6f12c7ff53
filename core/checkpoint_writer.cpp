#include "core/checkpoint_writer.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <system_error>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "core/checkpoint_io.h"
#include "events/check.h"
#include "events/diagnostics.h"

namespace trainbus {

constexpr int kWriterNice = 10;

namespace {

// CPU time of the calling thread: what background work takes from training on a busy machine.
double thread_cpu_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

}  // namespace

struct CheckpointWriter::Pool {
  boost::asio::thread_pool pool{1};
  // Prepares snapshot buffers at normal priority: they are needed by the next save, soon.
  boost::asio::thread_pool preparer{1};
};

CheckpointWriter::CheckpointWriter() : pool_(std::make_unique<Pool>()) {
  // The writer yields to the training threads: SCHED_BATCH, and a lower priority (nice), so that
  // on a machine whose cores training keeps busy a save takes longer instead of slowing the steps
  // (bench/README.md). Best effort: an unprivileged process may lower its threads' priority.
  boost::asio::post(pool_->pool, [] {
    sched_param param{};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kWriterNice);
  });
}

CheckpointWriter::~CheckpointWriter() {
  if (std::exception_ptr error = wait_quietly()) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      warn(std::string("a checkpoint failed and nobody asked for the error before shutdown: ") + e.what());
    }
  }
  pool_->pool.join();
  pool_->preparer.join();
}

void CheckpointWriter::prepare_buffers(std::vector<SnapshotBuffers::Layout> layouts) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.prepared;
  }
  if (!buffers_.request_prepare(std::move(layouts))) return;
  boost::asio::post(pool_->preparer, [this] {
    const double cpu_start = thread_cpu_seconds();
    buffers_.prepare();
    const double cpu_seconds = thread_cpu_seconds() - cpu_start;
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.prepare_cpu_seconds += cpu_seconds;
  });
}

std::optional<std::string> CheckpointWriter::submit(CheckpointJob job) {
  TRAINBUS_CHECK(job.snapshot != nullptr, "CheckpointWriter::submit: the job for ", job.path, " has no snapshot");
  check();
  std::optional<std::string> replaced;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (pending_ && (pending_->replace_group.empty() || pending_->replace_group != job.replace_group)) {
      ++stats_.waited;
      idle_.wait(lock, [&] { return !pending_; });
    }
    ++stats_.submitted;
    stats_.bytes_held += job.snapshot->tensor_bytes;
    if (!busy_) {
      busy_ = true;
    } else {
      if (pending_) {
        // The newer save supersedes the pending one, which never started: its evictions still
        // have to happen once a newer checkpoint is durable.
        ++stats_.replaced;
        replaced = pending_->path;
        stats_.bytes_held -= pending_->snapshot->tensor_bytes;
        job.remove_after_commit.insert(job.remove_after_commit.begin(), pending_->remove_after_commit.begin(),
                                       pending_->remove_after_commit.end());
      }
      stats_.peak_bytes_held = std::max(stats_.peak_bytes_held, stats_.bytes_held);
      pending_ = std::move(job);
      return replaced;
    }
    stats_.peak_bytes_held = std::max(stats_.peak_bytes_held, stats_.bytes_held);
  }
  auto shared = std::make_shared<CheckpointJob>(std::move(job));
  boost::asio::post(pool_->pool, [this, shared] { write_in_background(std::move(*shared)); });
  return replaced;
}

// The writer thread: writes `job`, then whatever became pending meanwhile, until nothing is.
void CheckpointWriter::write_in_background(CheckpointJob job) noexcept {
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = thread_cpu_seconds();
    bool ok = false;
    std::exception_ptr failure;
    try {
      write_checkpoint(*job.snapshot, job.path);
      ok = true;
      // `last` first, then the evictions, so that a crash in between never leaves `last` pointing
      // at a removed checkpoint.
      if (job.after_commit) job.after_commit(job.path);
      for (const std::string& old : job.remove_after_commit) {
        if (old != job.path) remove_checkpoint(old);
      }
    } catch (const CheckpointError&) {
      failure = std::current_exception();
    } catch (const std::exception& e) {
      failure = std::make_exception_ptr(
          CheckpointError(detail::concat("cannot write checkpoint ", job.path, ": ", e.what())));
    } catch (...) {
      failure = std::make_exception_ptr(
          CheckpointError(detail::concat("cannot write checkpoint ", job.path, ": unknown exception")));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::size_t bytes = job.snapshot->tensor_bytes;
    // The archives go first: then nothing but `copies` holds the tensor copies, and the next
    // snapshot may copy into them.
    job.snapshot->parts.clear();
    buffers_.give_back(std::move(job.snapshot->copies));
    job.snapshot.reset();
    const double cpu_seconds = thread_cpu_seconds() - cpu_start;
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.bytes_held -= bytes;
    stats_.write_cpu_seconds += cpu_seconds;
    if (ok) {
      ++stats_.written;
      stats_.last_write_seconds = seconds;
    } else {
      ++stats_.failed;
      if (!error_) error_ = failure;  // the first failure is the one to fix
      has_error_.store(true, std::memory_order_relaxed);
    }
    if (!pending_) {
      busy_ = false;
      idle_.notify_all();
      return;
    }
    job = std::move(*pending_);
    pending_.reset();
    idle_.notify_all();  // a submit() may wait for the pending slot
  }
}

std::exception_ptr CheckpointWriter::take_error() {
  std::exception_ptr error = std::move(error_);
  error_ = nullptr;
  has_error_.store(false, std::memory_order_relaxed);
  return error;
}

std::exception_ptr CheckpointWriter::wait_quietly() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [&] { return !busy_; });
  return take_error();
}

void CheckpointWriter::wait() {
  if (std::exception_ptr error = wait_quietly()) std::rethrow_exception(error);
}

void CheckpointWriter::check() {
  if (!has_error()) return;
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    error = take_error();
  }
  if (error) std::rethrow_exception(error);
}

bool CheckpointWriter::has_error() const noexcept { return has_error_.load(std::memory_order_relaxed); }

CheckpointWriterStats CheckpointWriter::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  CheckpointWriterStats stats = stats_;
  stats.bytes_kept = buffers_.bytes();
  stats.fresh_copies = buffers_.fresh_copies();
  return stats;
}

}  // namespace trainbus
