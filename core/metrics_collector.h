#pragma once
/// MetricsCollector: what Module::log does with a value (Lightning's _ResultCollection,
/// simplified).

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/log_options.h"
#include "distributed/strategy.h"
#include "events/common.h"

namespace trainbus {

/// Keeps trainer.callback_metrics, logged_metrics and progress_bar_metrics.
///
/// A value logged with on_step lands at once under its step name; a value logged with on_epoch is
/// accumulated into a batch-size-weighted mean that end_epoch() publishes under its epoch name.
/// With both, the names get `_step` / `_epoch` suffixes and callback_metrics also keeps the plain
/// name (the latest step value, then the epoch mean). Training thread only.
class MetricsCollector {
 public:
  /// Which results a value belongs to; each is reset at the start of its epoch/loop.
  enum class Results { kTrain, kValidation, kTest };

  /// Records one value logged from hook or step `fx` (the event name, e.g. "train_batch_end", or
  /// "training_step"). Throws MisconfigurationError when logging is not allowed in `fx`, for a
  /// non-finite weight, or when `name` was logged before with different on_step/on_epoch.
  /// `mean_across_ranks` (data-parallel training only; a collective) makes a sync_dist step value
  /// the ranks' mean, and a value logged in an epoch-level hook too (in evaluation always, in
  /// training with sync_dist).
  void log(std::string_view fx, const std::string& name, double value, const LogOptions& options,
           const std::function<double(double)>& mean_across_ranks = {});

  /// Weight of values logged without an explicit batch_size, set by the loops at each batch start.
  void set_current_batch_size(int64_t batch_size) { current_batch_size_ = batch_size; }
  /// Forgets the values logged with on_step during the previous batch (see batch_logged()).
  void begin_batch() { batch_logged_.clear(); }
  /// Starts a new epoch of `results`: forgets its accumulated values.
  void reset(Results results) { results_[results].clear(); }
  /// Publishes the epoch means of `results`; returns those sent to loggers, under their epoch
  /// names.
  Metrics end_epoch(Results results);
  /// The current epoch means of `results` sent to loggers, under their epoch names; changes
  /// nothing.
  Metrics epoch_values(Results results) const;
  /// Forgets everything (start of fit, end of the sanity check).
  void clear();

  const Metrics& callback_metrics() const noexcept { return callback_; }
  const Metrics& logged_metrics() const noexcept { return logged_; }
  const Metrics& progress_bar_metrics() const noexcept { return progress_bar_; }
  /// Values logged with on_step (and logger=true) since the last begin_batch(), by step name.
  const Metrics& batch_logged() const noexcept { return batch_logged_; }
  /// Sets one callback metric outside log() (Lightning's `trainer.callback_metrics[name] = value`).
  void set_callback_metric(const std::string& name, double value) { callback_[name] = value; }
  /// Restores callback_metrics (resuming from a checkpoint).
  void restore_callback_metrics(Metrics metrics) { callback_ = std::move(metrics); }

  /// Data-parallel training, at an epoch's end, on every rank alike: the epoch entries of
  /// `results` (all, or those logged with sync_dist) become sums over the ranks, so that their
  /// means are over every rank's samples. `reduce(values, op)` reduces across ranks (kSum or
  /// kMax). Throws MisconfigurationError when the ranks logged different names.
  void synchronize_epoch(
      Results results, bool all,
      const std::function<void(std::vector<double>&, distributed::ReduceOp)>& reduce);

  // ---- for a replay (replay::ReplaySession): the recorded values, as the loops left them ----

  /// Values logged with on_step in a batch: into logged_metrics and callback_metrics (a
  /// "<name>_step" value also under the plain name, as log() keeps it there).
  void replay_step_values(const Metrics& logged);
  /// Epoch means sent to loggers: into logged_metrics.
  void replay_epoch_values(const Metrics& logged);
  void replay_progress_bar(Metrics values) { progress_bar_ = std::move(values); }

 private:
  struct Entry {
    bool on_step = false;
    bool on_epoch = false;
    bool prog_bar = false;
    bool logger = true;
    bool sync_dist = false;
    double weighted_sum = 0.0;
    double weight = 0.0;
  };
  void publish_epoch_value(const std::string& name, const Entry& entry, Metrics* out);

  std::map<Results, std::map<std::string, Entry>> results_;
  Metrics callback_, logged_, progress_bar_, batch_logged_;
  int64_t current_batch_size_ = 1;
};

}  // namespace trainbus
