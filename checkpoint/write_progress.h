#pragma once
/// WriteProgress: a count that every step of a checkpoint's file work advances (a chunk written,
/// a file or directory synced, a link or an entry removed), so that whoever waits for it can tell
/// a slow disk, which moves on, from a stuck one, which does not. No LibTorch.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace trainbus::checkpoint {

/// What a checkpoint writer's save in flight is doing (CheckpointWriter::activity).
enum class WriterPhase : uint8_t {
  kIdle,   ///< no save in flight (none queued, or one ended and the next not started)
  kWrite,  ///< writing it: its file steps advance the count
  /// running its after_commit, a hook of the user's that may take long without a file step (an
  /// upload)
  kAfterCommit,
  /// running its after_commit, made of checkpoint file steps only (ModelCheckpoint's `last` link
  /// or copy: CheckpointJob::after_commit_makes_file_steps), each of which advances the count
  kAfterCommitFileSteps,
  kRemove,  ///< removing its evictions: each removal's steps advance the count
  /// running its on_committed (trainbus's: measuring it for its CheckpointCommitted event), each
  /// file it measures a step. Keep last: the static_assert below checks it fits.
  kCommitted,
};

/// Whether every step of `phase` is a file step that advances the count (note_write_step), so
/// that a count unchanged for long in it means a stuck disk. Not a user's after_commit, which may
/// upload for an hour without one.
constexpr bool makes_file_steps(WriterPhase phase) noexcept {
  return phase == WriterPhase::kWrite || phase == WriterPhase::kAfterCommitFileSteps ||
         phase == WriterPhase::kRemove || phase == WriterPhase::kCommitted;
}

/// One reading of a WriteProgress: its count and the phase, read together.
struct WriteActivity {
  /// Grows with every file step and every phase entered: two readings with the same count saw
  /// the same phase throughout, with no step in between.
  uint64_t count = 0;
  WriterPhase phase = WriterPhase::kIdle;
  bool operator==(const WriteActivity& other) const noexcept {
    return count == other.count && phase == other.phase;
  }
  bool operator!=(const WriteActivity& other) const noexcept { return !(*this == other); }
};

/// Advanced by the file steps of the threads that report to it (ReportWriteProgress) and by the
/// phases its writer enters; read from any thread. Only a change of the count means anything.
class WriteProgress {
 public:
  /// The count and the phase, from one atomic read (never a phase of one moment with the count
  /// of another).
  WriteActivity read() const noexcept {
    const uint64_t state = state_.load(std::memory_order_acquire);
    return {state >> kPhaseBits, static_cast<WriterPhase>(state & kPhaseMask)};
  }
  uint64_t steps() const noexcept { return read().count; }
  /// A file step.
  void advance() noexcept {
    state_.fetch_add(uint64_t{1} << kPhaseBits, std::memory_order_release);
  }
  /// Enters `phase`, which counts as a step.
  void enter(WriterPhase phase) noexcept {
    uint64_t state = state_.load(std::memory_order_relaxed);
    uint64_t next = 0;
    do {
      next = (((state >> kPhaseBits) + 1) << kPhaseBits) | static_cast<uint64_t>(phase);
    } while (!state_.compare_exchange_weak(state, next, std::memory_order_release,
                                           std::memory_order_relaxed));
  }

 private:
  static constexpr unsigned kPhaseBits = 3;
  static constexpr uint64_t kPhaseMask = (uint64_t{1} << kPhaseBits) - 1;
  static_assert(static_cast<uint64_t>(WriterPhase::kCommitted) <= kPhaseMask,
                "every WriterPhase must fit in kPhaseBits");
  std::atomic<uint64_t> state_{0};
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

/// Called after each step of a checkpoint's file work (DurableFile's writes and fsyncs, the
/// directory fsyncs of renames, the links and hard links of `last`, each entry a removal frees):
/// advances the calling thread's WriteProgress, if one is reported to. A thread-local report: the
/// steps count only on the thread that reports (the writer's), not on a thread of a hook's own.
void note_write_step() noexcept;

namespace detail {
/// Runs `hook` on the writing thread before each step of a checkpoint write that writes or syncs a
/// file (not before the sync of a directory after a rename), before the link or each file of a
/// copy of `last`, and before a checkpoint is removed (once per checkpoint), with the path: tests
/// make a disk slow (the hook sleeps) or stuck (it blocks, then may throw, as an I/O error would; a
/// removal that throws is skipped, as removals are best effort). Empty: none. Set it while no
/// write runs.
void simulate_slow_disk(std::function<void(const std::string& path)> hook);
/// Calls the hook simulate_slow_disk set, if any (the file steps call it).
void before_write_step(const std::string& path);
}  // namespace detail

}  // namespace trainbus::checkpoint
