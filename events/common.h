#pragma once
/// Value types shared by events: where in the run it happened, which batch, opaque tensor handles.

#include <any>
#include <cstdint>

#include "base/metrics.h"
#include "base/stage.h"

namespace trainbus::events {

/// Where in the run an event happened. `epoch` is Lightning's `trainer.current_epoch`,
/// `global_step` the number of optimizer steps taken so far.
struct Progress {
  int64_t epoch = 0;
  int64_t global_step = 0;

  friend bool operator==(const Progress& a, const Progress& b) {
    return a.epoch == b.epoch && a.global_step == b.global_step;
  }
};

/// Which batch of which loader a batch-level event is about.
struct BatchInfo {
  int64_t batch_idx = 0;
  int64_t batch_size = 0;
  int64_t dataloader_idx = 0;

  friend bool operator==(const BatchInfo& a, const BatchInfo& b) {
    return a.batch_idx == b.batch_idx && a.batch_size == b.batch_size &&
           a.dataloader_idx == b.dataloader_idx;
  }
};

/// A tensor (or a map of them) carried by an event without naming a torch type, so that events/
/// compiles without LibTorch. core/tensor_ref.h puts tensors in and takes them out.
///
/// NOTE: the handle shares storage with the trainer's live tensor. Whoever keeps it past the
/// synchronous publish (an async observer) must snapshot it first (detach + clone to CPU).
class TensorRef {
 public:
  TensorRef() = default;
  explicit TensorRef(std::any value) : value_(std::move(value)) {}

  bool has_value() const noexcept { return value_.has_value(); }
  const std::any& value() const noexcept { return value_; }

 private:
  std::any value_;
};

}  // namespace trainbus::events
