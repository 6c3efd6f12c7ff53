#pragma once
/// SpikeDetection: stops training with TrainingSpikeException when the loss spikes (Lightning's).

#include <cstdint>
#include <deque>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/arg.h"
#include "core/callback.h"

namespace trainbus::callbacks {

/// Raised from on_train_batch_end when the loss spiked, so that on_exception fires on every
/// callback (an OnExceptionCheckpoint saves) and fit leaves with it.
class TrainingSpikeException : public std::runtime_error {
 public:
  explicit TrainingSpikeException(int64_t batch_idx);
  int64_t batch_idx() const noexcept { return batch_idx_; }

 private:
  int64_t batch_idx_;
};

/// Lightning's SpikeDetection arguments and defaults.
struct SpikeDetectionOptions {
  /// "min": a loss that rises is suspect; "max": one that falls.
  TRAINBUS_ARG(std::string, mode) = "min";
  /// The running mean the loss is compared with covers the last `window` (non-spike) losses.
  TRAINBUS_ARG(int64_t, window) = 10;
  /// Batches of each epoch checked from this batch_idx on.
  TRAINBUS_ARG(int64_t, warmup) = 1;
  /// A spike differs from the running mean by at least this much; unset: no absolute bound.
  TRAINBUS_ARG(std::optional<double>, atol);
  /// ...and by at least rtol x the running mean; unset: no relative bound.
  TRAINBUS_ARG(std::optional<double>, rtol) = 2.0;
  /// The JSON file that lists the batches to skip (a directory gets "skip_batches.json" added);
  /// empty: default_root_dir/skip_batches.json.
  TRAINBUS_ARG(std::string, exclude_batches_path);
  /// A NaN or infinite loss is a spike (true). false: a NaN is never one (and is kept out of the
  /// mean), an infinite loss is judged as any other (in mode min, +inf is a spike and -inf an
  /// improvement), as Lightning's.
  TRAINBUS_ARG(bool, finite_only) = true;
};

/// After every training batch: a loss that did not improve on the previous one (per `mode`) and is
/// beyond both tolerances from the running mean of the last `window` losses, or that is not finite
/// (finite_only), is a spike. On a spike it appends that batch and the one before it to the skip
/// list (JSON, as Lightning's, written under a temporary name and renamed into place) and throws
/// TrainingSpikeException (a skip list that cannot be written is warned about, naming the file;
/// the spike is raised all the same). Reads the loss once per batch (a device sync on CUDA). A
/// fresh fit starts with an empty history; a resumed one restores the window, the last loss and
/// the skip list from the checkpoint (the options stay the constructor's). Throws
/// MisconfigurationError for a bad option, and at on_train_batch_end when training_step returned
/// no loss.
class SpikeDetection : public Callback {
 public:
  explicit SpikeDetection(SpikeDetectionOptions options = {});

  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override;

  /// Batches listed so far: each spike's batch_idx - 1 and batch_idx.
  const std::vector<int64_t>& bad_batches() const noexcept { return bad_batches_; }
  /// The running mean of the window's values that are not NaN; NaN while there are none.
  double running_mean() const;
  /// Where the skip list is written (known once training started).
  const std::string& exclude_batches_path() const noexcept { return path_; }
  const SpikeDetectionOptions& options() const noexcept { return options_; }

 private:
  bool is_spike(double loss) const;
  void update(double loss);
  void write_bad_batches() const;

  SpikeDetectionOptions options_;
  std::deque<double> window_;  // the last `window` losses; a NaN holds its place, out of the mean
  double last_value_ = 0.0;
  std::vector<int64_t> bad_batches_;
  std::string path_;
};

}  // namespace trainbus::callbacks
