#pragma once
/// CheckpointWriter: writes checkpoints on a background thread, one at a time. No LibTorch: what a
/// checkpoint holds and how it is written is its CheckpointPayload's business, so the queueing
/// below is tested with fake payloads under ThreadSanitizer.

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
#include <string>
#include <vector>

#include "checkpoint/buffer_pool.h"
#include "checkpoint/write_progress.h"

namespace trainbus::checkpoint {

/// What an asynchronous save writes: a snapshot taken on the training thread, private to the save.
/// Written and then destroyed on the writer's thread (also when the write fails, or when a newer
/// save replaces it, then on the thread that submitted the newer one).
class CheckpointPayload {
 public:
  virtual ~CheckpointPayload();
  /// Writes the checkpoint durably to `path` (temporary name, fsync, rename). Throws
  /// CheckpointError naming the path and the cause; whatever was at `path` before stays.
  virtual void write(const std::string& path) = 0;
  /// Memory it holds, for CheckpointWriterStats.
  virtual std::size_t bytes() const = 0;
};

/// One checkpoint to write, and what to do once it is durable.
struct CheckpointJob {
  std::string path;
  std::unique_ptr<CheckpointPayload> payload;
  /// Removed once this checkpoint is durable and after_commit succeeded (top-k evictions); carried
  /// over to the save that replaces this one if it never gets written.
  std::vector<std::string> remove_after_commit;
  /// Runs on the writer thread once this checkpoint is durable (e.g. updating `last`); dropped if
  /// the save is replaced. May throw: the error is raised like a failed write (see below).
  std::function<void(const std::string& path)> after_commit;
  /// after_commit is made of checkpoint file steps only (link_checkpoint, copy_checkpoint_as_links:
  /// ModelCheckpoint's `last`; remove_checkpoint), made on the writer's thread (the steps are
  /// counted per thread), each of which reports progress: then it is watched for a stuck
  /// disk as the write is (WriterPhase::kAfterCommitFileSteps). Leave false for a hook that may
  /// take long without a file step (an upload): it is waited for however long it takes.
  bool after_commit_makes_file_steps = false;
  /// Saves of one series that supersede each other (the same path, ModelCheckpoint's "latest" or
  /// its `last`): a newer save of the same non-empty group replaces this one while it is pending.
  /// Any other newer save (or any save, if empty: a top-k member must land) waits until this one
  /// has started.
  std::string replace_group;
  /// Runs on the writer thread once this checkpoint is durable, after_commit has run and its
  /// evictions are removed, with the paths removed (those of a replaced save included). Must not
  /// throw; dropped if the save is replaced. Runs in WriterPhase::kCommitted, which a wait under
  /// DDP watches as file work: keep it to file steps (the Trainer's measures the checkpoint).
  std::function<void(const std::string& path, const std::vector<std::string>& removed)>
      on_committed;
};

/// Counters for reports, tests and the benchmark.
struct CheckpointWriterStats {
  uint64_t submitted = 0;
  uint64_t written = 0;   ///< checkpoints made durable under their final name
  uint64_t replaced = 0;  ///< pending saves superseded by a newer one before they started
  uint64_t failed = 0;    ///< saves whose write, or whose after_commit, failed
  /// submits that waited in submit() for a pending save of another group to start. The Trainer's
  /// saves wait for that first, in wait_for_room() (not counted), and do not count here.
  uint64_t waited = 0;
  std::size_t bytes_held = 0;       ///< payload bytes of the saves in flight or pending now
  std::size_t peak_bytes_held = 0;  ///< most ever held at once (at most two payloads)
  std::size_t bytes_kept = 0;       ///< buffers kept or prepared for the next snapshot to copy into
  uint64_t prepared = 0;      ///< buffer preparations asked for (trainer.checkpoints().prepare())
  uint64_t fresh_copies = 0;  ///< copies made into new memory (no buffer kept or prepared)
  double last_write_seconds = 0.0;  ///< write + fsync + rename of the last one written
  double write_cpu_seconds =
      0.0;  ///< CPU time of all writes: what they take from training on busy cores
  double prepare_cpu_seconds = 0.0;  ///< CPU time of all buffer preparations
};

/// At most one save in flight and one pending, so memory holds at most two payloads (and the
/// buffers kept for the next snapshot): a newer submit() of the same replace_group replaces the
/// pending one (counted, never written) and the caller does not wait; a save of another group
/// waits for the pending one to start. Saves are written in submission order on the writer's own
/// thread, at a lower priority than training.
///
/// Errors: a failed write, or a failed after_commit (the checkpoint is then on disk, but what
/// should follow it did not happen: its evictions are skipped, so nothing `last` may point at is
/// removed), is kept and raised as CheckpointError on the caller's thread by the next submit(),
/// check() or wait(); the save queued behind it is still attempted. submit() that cannot start
/// the writer (out of memory) leaves nothing half-queued and throws. Thread-safe.
class CheckpointWriter {
 public:
  /// `buffers`, if given, are the snapshot buffers whose counters stats() reports; they must
  /// outlive the writer.
  explicit CheckpointWriter(const BufferCounters* buffers = nullptr);
  /// Waits for every submitted save; a failure nobody asked for is reported on stderr.
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  /// Queues `job`. Returns the path of the pending save it replaced, if any. Throws the
  /// CheckpointError of an earlier save that failed (then `job` is not queued).
  std::optional<std::string> submit(CheckpointJob job);
  /// Blocks until every submitted save is written (or failed), then throws a failure if any.
  void wait();
  /// Like wait(), but returns the failure instead of throwing it.
  std::exception_ptr wait_quietly();
  /// Waits at most `limit` for every submitted save to be written (or failed); returns whether
  /// they are, so that wait() would not block. Throws nothing: wait() or check() raise a failure.
  bool wait_for_idle(std::chrono::milliseconds limit);
  /// Waits at most `limit` until submit() of a job of `replace_group` would queue it at once (no
  /// pending save it would have to wait for); returns whether it would. Throws nothing.
  bool wait_for_room(const std::string& replace_group, std::chrono::milliseconds limit);
  /// Throws a failure kept since the last check, without waiting.
  void check();
  /// A relaxed read: whether check() would throw. Cheap enough for every batch.
  bool has_error() const noexcept;
  CheckpointWriterStats stats() const;
  /// Grows while the writer gets on: with every chunk its saves write, every file they sync (the
  /// file steps of write_progress.h, after_commit's included) and every phase a save enters. The
  /// same value for long, while a save is in flight, means its disk is stuck. Thread-safe, cheap.
  uint64_t progress() const noexcept { return progress_.steps(); }
  /// progress() and what the save in flight is doing, read together: only in a phase made of file
  /// steps (makes_file_steps: the write, an after_commit of file steps, the evictions) does an
  /// unchanged count mean a stuck disk (a user's after_commit, an upload say, has no file steps of
  /// its own). Two readings with the same count saw one phase throughout. Thread-safe, cheap.
  WriteActivity activity() const noexcept { return progress_.read(); }
  /// The path of the save in flight (being written, or running what follows its write), or ""
  /// while none is.
  std::string path_in_flight() const;
  /// path_in_flight() as it was while the writer's activity() was `activity` (read before), or
  /// nullopt if the writer has moved on since: a stuck writer's error names the save it is stuck
  /// in, not one it went on to once its disk came back.
  std::optional<std::string> path_while(WriteActivity activity) const;
  /// Runs `task` on the writer's second thread, which only prepares buffers for the next snapshot
  /// (a write in progress does not delay it). `task` must not throw; if it does, the error is
  /// reported on stderr. Throws if the task cannot be started (out of memory).
  void prepare_in_background(std::function<void()> task);

 private:
  struct Threads;  // the Asio threads, kept out of this header
  void write_in_background(CheckpointJob job) noexcept;
  std::exception_ptr take_error();

  const BufferCounters* buffers_;
  mutable std::mutex mutex_;
  std::condition_variable idle_;
  bool busy_ = false;
  const std::string* in_flight_ = nullptr;  // the path of the save being written
  std::optional<CheckpointJob> pending_;
  std::exception_ptr error_;
  std::atomic<bool> has_error_{false};
  CheckpointWriterStats stats_;
  WriteProgress progress_;
  std::unique_ptr<Threads> threads_;  // last: joined before the members they use go
};

}  // namespace trainbus::checkpoint
