#pragma once
/// Private to core/: rank 0's watch over its checkpoint writer while every rank waits for it in
/// rounds of a save's agreement (CheckpointConnector::agree_on_save). Not installed.

#include <chrono>
#include <cstdint>
#include <optional>

#include "base/errors.h"

namespace trainbus::detail {

/// Rank 0's error when its writer made no progress for the collective timeout while it waited.
class WriterStuckError : public CheckpointError {
 public:
  using CheckpointError::CheckpointError;
};

/// A wait for the writer fails once the writer's progress (CheckpointWriter::progress) has not
/// changed for `limit`, the collective timeout: a stuck disk then ends the job as a hung rank
/// would, while a slow one that keeps writing is waited for however long it takes.
class WriterStallWatch {
 public:
  using Clock = std::chrono::steady_clock;
  /// `limit`: none for a wait that is never bounded (one process, a strategy without a collective
  /// timeout). `progress`: the writer's when the wait begins, at `now`.
  WriterStallWatch(std::optional<std::chrono::milliseconds> limit, uint64_t progress,
                   Clock::time_point now)
      : limit_(limit), progress_(progress), since_(now) {}

  /// Notes the writer's `progress` at `now`; how long it has not changed, once that is the limit
  /// or more. `writing`: whether the writer is writing (CheckpointWriter::phase() kWrite); a
  /// user's after_commit (an upload) or an eviction has no file steps, and does not count.
  std::optional<Clock::duration> stalled_for(uint64_t progress, Clock::time_point now,
                                             bool writing = true) {
    if (progress != progress_ || !writing) {
      progress_ = progress;
      since_ = now;
    }
    if (!limit_ || now - since_ < *limit_) return std::nullopt;
    return now - since_;
  }

 private:
  std::optional<std::chrono::milliseconds> limit_;
  uint64_t progress_;
  Clock::time_point since_;
};

}  // namespace trainbus::detail
