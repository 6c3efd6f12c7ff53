#pragma once
/// WriteProgress: a count that every step of a checkpoint write advances (a chunk written, a file
/// or directory synced), so that whoever waits for the write can tell a slow disk, which moves on,
/// from a stuck one, which does not. No LibTorch.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace trainbus::checkpoint {

/// Advanced by the file steps of the threads that report to it (ReportWriteProgress); read from
/// any thread. Only a change of steps() means anything.
class WriteProgress {
 public:
  uint64_t steps() const noexcept { return steps_.load(std::memory_order_relaxed); }
  void advance() noexcept { steps_.fetch_add(1, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> steps_{0};
};

/// While it lives, the file steps of the calling thread (note_write_step) advance `progress`.
/// Nests: the previous one reports again after it.
class ReportWriteProgress {
 public:
  explicit ReportWriteProgress(WriteProgress& progress) noexcept;
  ~ReportWriteProgress();
  ReportWriteProgress(const ReportWriteProgress&) = delete;
  ReportWriteProgress& operator=(const ReportWriteProgress&) = delete;

 private:
  WriteProgress* previous_;
};

/// Called after each step of a checkpoint write (DurableFile's writes and fsyncs, the directory
/// fsyncs of renames): advances the calling thread's WriteProgress, if one is reported to.
void note_write_step() noexcept;

/// While it lives, the calling thread's checkpoint write is given up once `abandoned` is set:
/// its next file step (and throw_if_abandoned) throws CheckpointError naming the file. Nests.
class AbandonWriteWhen {
 public:
  explicit AbandonWriteWhen(const std::atomic<bool>* abandoned) noexcept;
  ~AbandonWriteWhen();
  AbandonWriteWhen(const AbandonWriteWhen&) = delete;
  AbandonWriteWhen& operator=(const AbandonWriteWhen&) = delete;

 private:
  const std::atomic<bool>* previous_;
};

/// Throws CheckpointError naming `path` if the calling thread's write was given up
/// (AbandonWriteWhen): called before each file step and before a checkpoint's final rename.
void throw_if_abandoned(const std::string& path);

namespace detail {
/// Runs `hook` on the writing thread before each step of a checkpoint write, with the file's
/// path: tests make a disk slow (the hook sleeps) or stuck (it blocks, then may throw, as an I/O
/// error would). Empty: none. Set it while no write runs.
void simulate_slow_disk(std::function<void(const std::string& path)> hook);
/// Calls the hook simulate_slow_disk set, if any (the file steps call it).
void before_write_step(const std::string& path);
}  // namespace detail

}  // namespace trainbus::checkpoint
