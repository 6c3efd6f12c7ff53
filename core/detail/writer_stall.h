#pragma once
/// Private to core/: rank 0's watch over its checkpoint writer while it waits for it under DDP
/// (in rounds of a save's agreement, or at the end of a run). Not installed.

#include <chrono>
#include <optional>

#include "checkpoint/write_progress.h"

namespace trainbus::detail {

/// A wait for the writer fails once the writer's activity (CheckpointWriter::activity) has stayed
/// the same, in a phase made of file steps (checkpoint::makes_file_steps: the write, trainbus's
/// own after_commit such as ModelCheckpoint's `last`, the evictions), for `limit` (the collective
/// timeout): a stuck disk then ends the job as a hung rank would, while a slow one that keeps
/// making steps is waited for however long it takes, and so is a user's after_commit (an
/// upload), which has no file steps to show.
///
/// Each reading is the count and the phase read together, and every phase the writer enters
/// counts: the same reading twice means the writer stayed in that one phase, with no step, all
/// the time in between. So no reading of the phase is used past the next one that differs.
class WriterStallWatch {
 public:
  using Clock = std::chrono::steady_clock;
  /// `limit`: none for a wait that is never bounded (one process, a strategy without a collective
  /// timeout). `activity`: the writer's when the wait begins, at `now`.
  WriterStallWatch(std::optional<std::chrono::milliseconds> limit,
                   checkpoint::WriteActivity activity, Clock::time_point now)
      : limit_(limit), seen_(activity), since_(now) {}

  /// Notes the writer's `activity` at `now` (read just before); how long it has stayed the same
  /// in a phase of file steps, once that is the limit or more. A change, or a phase without file
  /// steps (a user's after_commit, idle), restarts the clock.
  std::optional<Clock::duration> stalled_for(checkpoint::WriteActivity activity,
                                             Clock::time_point now) {
    if (activity != seen_ || !checkpoint::makes_file_steps(activity.phase)) {
      seen_ = activity;
      since_ = now;
    }
    if (!limit_ || now - since_ < *limit_) return std::nullopt;
    return now - since_;
  }

 private:
  std::optional<std::chrono::milliseconds> limit_;
  checkpoint::WriteActivity seen_;
  Clock::time_point since_;
};

}  // namespace trainbus::detail
