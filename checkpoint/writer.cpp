#include "checkpoint/writer.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include <boost/asio/thread_pool.hpp>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "base/post_task.h"
#include "checkpoint/files.h"

namespace trainbus::checkpoint {

constexpr int kWriterNice = 10;

namespace {

// CPU time of the calling thread: what background work takes from training on a busy machine.
double thread_cpu_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

std::string joined(const std::vector<std::string>& paths) {
  std::string out;
  for (const std::string& path : paths) out += (out.empty() ? "" : ", ") + path;
  return out;
}

}  // namespace

CheckpointPayload::~CheckpointPayload() = default;

struct CheckpointWriter::Threads {
  boost::asio::thread_pool writer{1};
  // Prepares snapshot buffers at normal priority: they are needed by the next save, soon.
  boost::asio::thread_pool preparer{1};
};

CheckpointWriter::CheckpointWriter(const BufferCounters* buffers)
    : buffers_(buffers), threads_(std::make_unique<Threads>()) {
  // The writer yields to the training threads: SCHED_BATCH, and a lower priority (nice), so that
  // on a machine whose cores training keeps busy a save takes longer instead of slowing the steps
  // (bench/README.md). Best effort: an unprivileged process may lower its threads' priority.
  boost::asio::post(threads_->writer, [] {
    sched_param param{};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &param);
    (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kWriterNice);
  });
}

CheckpointWriter::~CheckpointWriter() {
  if (std::exception_ptr error = wait_quietly()) {
    warn("a checkpoint failed and nobody asked for the error before shutdown: " +
         describe_exception(error));
  }
  threads_->writer.join();
  threads_->preparer.join();
}

void CheckpointWriter::prepare_in_background(std::function<void()> task) {
  ::trainbus::detail::post_task(threads_->preparer, [this, task = std::move(task)] {
    const double cpu_start = thread_cpu_seconds();
    try {
      task();
    } catch (const std::exception& e) {
      warn(std::string("preparing checkpoint buffers failed: ") + e.what());
    } catch (...) {
      warn("preparing checkpoint buffers failed: unknown exception");
    }
    const double cpu_seconds = thread_cpu_seconds() - cpu_start;
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.prepare_cpu_seconds += cpu_seconds;
  });
}

std::optional<std::string> CheckpointWriter::submit(CheckpointJob job) {
  TRAINBUS_CHECK(job.payload != nullptr, "CheckpointWriter::submit: the job for ", job.path,
                 " has no payload");
  check();
  const std::size_t bytes = job.payload->bytes();
  std::optional<std::string> replaced;
  std::unique_ptr<CheckpointPayload> superseded;  // destroyed outside the lock
  {
    std::unique_lock<std::mutex> lock(mutex_);
    if (pending_ &&
        (pending_->replace_group.empty() || pending_->replace_group != job.replace_group)) {
      ++stats_.waited;
      idle_.wait(lock, [&] { return !pending_; });
    }
    ++stats_.submitted;
    stats_.bytes_held += bytes;
    if (busy_) {
      if (pending_) {
        // The newer save supersedes the pending one, which never started: its evictions still
        // have to happen once a newer checkpoint is durable.
        ++stats_.replaced;
        replaced = pending_->path;
        stats_.bytes_held -= pending_->payload->bytes();
        job.remove_after_commit.insert(job.remove_after_commit.begin(),
                                       pending_->remove_after_commit.begin(),
                                       pending_->remove_after_commit.end());
        superseded = std::move(pending_->payload);
      }
      stats_.peak_bytes_held = std::max(stats_.peak_bytes_held, stats_.bytes_held);
      pending_ = std::move(job);
      return replaced;
    }
    // Posted under the lock, so that a failed post is undone before any other submit can see the
    // writer busy and queue a job behind one that never starts.
    std::shared_ptr<CheckpointJob> shared;
    try {
      shared = std::make_shared<CheckpointJob>(std::move(job));
      ::trainbus::detail::post_task(threads_->writer,
                                    [this, shared] { write_in_background(std::move(*shared)); });
    } catch (...) {
      --stats_.submitted;
      stats_.bytes_held -= bytes;
      superseded = shared ? std::move(shared->payload) : std::move(job.payload);
      const std::string& path = shared ? shared->path : job.path;
      throw CheckpointError(::trainbus::detail::concat(
          "cannot start writing checkpoint ", path,
          " in the background: ", describe_exception(std::current_exception())));
    }
    busy_ = true;
    stats_.peak_bytes_held = std::max(stats_.peak_bytes_held, stats_.bytes_held);
  }
  return replaced;
}

// The writer thread: writes `job`, then whatever became pending meanwhile, until nothing is.
void CheckpointWriter::write_in_background(CheckpointJob job) noexcept {
  const ReportWriteProgress report(progress_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    in_flight_ = &job.path;  // `job` changes only under the lock
  }
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = thread_cpu_seconds();
    bool written = false;
    std::exception_ptr failure;
    try {
      progress_.enter(WriterPhase::kWrite);
      job.payload->write(job.path);
      written = true;
      // `last` first, then the evictions, so that a crash in between never leaves `last` pointing
      // at a removed checkpoint.
      progress_.enter(job.after_commit_makes_file_steps ? WriterPhase::kAfterCommitFileSteps
                                                        : WriterPhase::kAfterCommit);
      if (job.after_commit) job.after_commit(job.path);
      progress_.enter(WriterPhase::kRemove);
      std::vector<std::string> removed;
      for (const std::string& old : job.remove_after_commit) {
        if (old == job.path) continue;
        remove_checkpoint(old);
        removed.push_back(old);
      }
      progress_.enter(WriterPhase::kCommitted);
      if (job.on_committed) job.on_committed(job.path, removed);
    } catch (...) {
      std::string message =
          written ? ::trainbus::detail::concat("checkpoint ", job.path,
                                               " was written, but what follows it failed: ",
                                               describe_exception(std::current_exception()))
                  : describe_exception(std::current_exception());
      if (written && !job.remove_after_commit.empty()) {
        message += "; kept " + joined(job.remove_after_commit) + ", which it would have replaced";
      }
      if (message.find(job.path) == std::string::npos)
        message = "cannot write checkpoint " + job.path + ": " + message;
      failure = std::make_exception_ptr(CheckpointError(message));
    }
    progress_.enter(WriterPhase::kIdle);  // this save has ended
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::size_t bytes = job.payload->bytes();
    job.payload.reset();  // gives a snapshot's buffers back for the next one
    const double cpu_seconds = thread_cpu_seconds() - cpu_start;
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.bytes_held -= bytes;
    stats_.write_cpu_seconds += cpu_seconds;
    if (written) {
      ++stats_.written;
      stats_.last_write_seconds = seconds;
    }
    if (failure) {
      ++stats_.failed;
      // The first failure is the one to fix. NOTE: released under the lock, so that ThreadSanitizer
      // sees the exception freed before any reader of error_ (libstdc++'s count is not
      // instrumented).
      if (!error_) error_ = std::move(failure);
      failure = nullptr;
      has_error_.store(true, std::memory_order_relaxed);
    }
    if (!pending_) {
      busy_ = false;
      in_flight_ = nullptr;
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

bool CheckpointWriter::wait_for_idle(std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(mutex_);
  return idle_.wait_for(lock, limit, [&] { return !busy_; });
}

bool CheckpointWriter::wait_for_room(const std::string& replace_group,
                                     std::chrono::milliseconds limit) {
  std::unique_lock<std::mutex> lock(mutex_);
  // As submit(): a pending save of another group (or of none) must start first.
  return idle_.wait_for(lock, limit, [&] {
    return !pending_ ||
           (!pending_->replace_group.empty() && pending_->replace_group == replace_group);
  });
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

bool CheckpointWriter::has_error() const noexcept {
  return has_error_.load(std::memory_order_relaxed);
}

std::string CheckpointWriter::path_in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_flight_ != nullptr ? *in_flight_ : std::string();
}

std::optional<std::string> CheckpointWriter::path_while(WriteActivity activity) const {
  std::string path = path_in_flight();
  // The path changes only once its save has ended (kIdle entered): the same activity after the
  // read means the path is of the save that activity was read in.
  if (progress_.read() != activity) return std::nullopt;
  return path;
}

CheckpointWriterStats CheckpointWriter::stats() const {
  CheckpointWriterStats stats;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stats = stats_;
  }
  if (buffers_ != nullptr) {
    stats.bytes_kept = buffers_->bytes();
    stats.fresh_copies = buffers_->fresh_copies();
    stats.prepared = buffers_->prepare_requests();
  }
  return stats;
}

}  // namespace trainbus::checkpoint
