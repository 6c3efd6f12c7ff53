#pragma once
/// CheckpointWriter: writes checkpoint snapshots on a background thread, one at a time.

#include <atomic>
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

#include "core/checkpoint_snapshot.h"

namespace trainbus {

/// One checkpoint to write, and what to do once it is durable.
struct CheckpointJob {
  std::string path;
  std::unique_ptr<CheckpointSnapshot> snapshot;
  /// Removed once this checkpoint is durable (top-k evictions); carried over to the save that
  /// replaces this one if it never gets written.
  std::vector<std::string> remove_after_commit;
  /// Runs on the writer thread once this checkpoint is durable (e.g. updating `last`); dropped if
  /// the save is replaced. May throw CheckpointError.
  std::function<void(const std::string& path)> after_commit;
  /// Saves of one series that supersede each other (the same path, ModelCheckpoint's "latest" or
  /// its `last`): a newer save of the same non-empty group replaces this one while it is pending.
  /// Any other newer save (or any save, if empty: a top-k member must land) waits until this one
  /// has started.
  std::string replace_group;
};

/// Counters for reports, tests and the benchmark.
struct CheckpointWriterStats {
  uint64_t submitted = 0;
  uint64_t written = 0;
  uint64_t replaced = 0;  ///< pending saves superseded by a newer one before they started
  uint64_t failed = 0;
  uint64_t waited = 0;    ///< submits that waited for a pending save of another group to start
  std::size_t bytes_held = 0;       ///< tensor bytes of the snapshots in flight or pending now
  std::size_t peak_bytes_held = 0;  ///< most ever held at once (at most two snapshots)
  std::size_t bytes_kept = 0;       ///< buffers kept or prepared for the next snapshot to copy into
  uint64_t prepared = 0;            ///< buffer preparations asked for (Trainer::prepare_checkpoint)
  uint64_t fresh_copies = 0;        ///< tensors snapshots copied into new memory (no buffer kept or prepared)
  double last_write_seconds = 0.0;  ///< serialise + write + fsync + rename of the last one written
  double write_cpu_seconds = 0.0;   ///< CPU time of all writes: what they take from training on busy cores
  double prepare_cpu_seconds = 0.0; ///< CPU time of all buffer preparations
};

/// At most one save in flight and one pending, so memory holds at most two snapshots (and the
/// copies of the last one written, kept for reuse: stats().bytes_kept): a newer
/// submit() of the same replace_group replaces the pending one (counted, never written) and the
/// training thread does not wait; a save of another group waits for the pending one to start.
/// Saves are written in submission order on the writer's own thread (an Asio thread_pool of one,
/// which keeps them ordered). A failure is kept and raised on the caller's
/// thread by the next submit(), check() or wait(); the save queued behind it is still attempted.
class CheckpointWriter {
 public:
  CheckpointWriter();
  /// Waits for every submitted save; errors are reported on stderr, not thrown.
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
  /// Throws a failure kept since the last check, without waiting.
  void check();
  /// A relaxed read: whether check() would throw. Cheap enough for every batch.
  bool has_error() const noexcept;
  CheckpointWriterStats stats() const;
  /// Where snapshots for this writer copy their tensors into (see SnapshotBuffers).
  SnapshotBuffers& buffers() noexcept { return buffers_; }
  /// Prepares buffers for a snapshot of `layouts` on the writer's second thread, which only does
  /// this (a write in progress does not delay it); see SnapshotBuffers::request_prepare.
  void prepare_buffers(std::vector<SnapshotBuffers::Layout> layouts);

 private:
  struct Pool;  // the Asio threads, kept out of this header
  void write_in_background(CheckpointJob job) noexcept;
  std::exception_ptr take_error();

  mutable std::mutex mutex_;
  std::condition_variable idle_;
  bool busy_ = false;
  std::optional<CheckpointJob> pending_;
  std::exception_ptr error_;
  std::atomic<bool> has_error_{false};
  CheckpointWriterStats stats_;
  SnapshotBuffers buffers_;
  std::unique_ptr<Pool> pool_;  // last: its thread is joined before the members it uses go
};

}  // namespace trainbus
