#pragma once
/// MetricsCollector: what Module::log does with a value (Lightning's _ResultCollection,
/// simplified).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/log_options.h"
#include "distributed/strategy.h"
#include "events/common.h"

namespace trainbus {

/// Keeps trainer.callback_metrics, logged_metrics and progress_bar_metrics.
///
/// A value logged with on_step lands at once under its step name; a value logged with on_epoch is
/// accumulated with its reduce_fx (a batch-size-weighted mean, a sum, a max or a min) into the
/// value end_epoch() publishes under its epoch name. With both, the names get `_step` / `_epoch`
/// suffixes and callback_metrics also keeps the plain name (the latest step value, then the epoch
/// value).
///
/// Tensors are not read on the training thread per log: one on the CPU is read at once (that is
/// no device sync), one on another device (CUDA) stays there, detached, and is accumulated there;
/// all of them are read together, in one transfer per device, when a value is needed (the
/// accessors below, an epoch's end). Training thread only.
class MetricsCollector {
 public:
  /// Which results a value belongs to; each is reset at the start of its epoch/loop.
  enum class Results { kTrain, kValidation, kTest };
  /// Data-parallel training: `value` reduced over the ranks with `op` (a collective).
  using ReduceAcrossRanks = std::function<double(double value, distributed::ReduceOp op)>;

  /// Records one value logged from hook or step `fx` (the event name, e.g. "train_batch_end", or
  /// "training_step"). Throws MisconfigurationError when logging is not allowed in `fx`, for a
  /// batch_size < 1, or when `name` was logged before in the epoch with other options (on_step,
  /// on_epoch, reduce_fx, prog_bar, logger, sync_dist), in any hook.
  /// `reduce_across_ranks` (data-parallel training only; a collective) makes a sync_dist step
  /// value the ranks' reduction with reduce_fx's operation, and a value logged in an epoch-level
  /// hook too (in evaluation always, in training with sync_dist).
  void log(std::string_view fx, const std::string& name, double value, const LogOptions& options,
           const ReduceAcrossRanks& reduce_across_ranks = {});
  /// As log(double) for a one-element tensor (any dtype), without reading it where that costs a
  /// device sync (see the class comment).
  void log(std::string_view fx, const std::string& name, const at::Tensor& value,
           const LogOptions& options, const ReduceAcrossRanks& reduce_across_ranks = {});
  /// For tests of the path CUDA tensors take: keep CPU tensors unread until needed as well.
  void set_defer_cpu_reads(bool defer) { defer_cpu_reads_ = defer; }

  /// While one of several val/test loaders runs, its index (Lightning's
  /// _ResultCollection.dataloader_idx): names logged meanwhile get `/dataloader_idx_<i>` unless
  /// logged with add_dataloader_idx=false. Nothing with one loader and between loaders.
  void set_dataloader_idx(std::optional<int64_t> dataloader_idx) {
    dataloader_idx_ = dataloader_idx;
  }
  std::optional<int64_t> dataloader_idx() const noexcept { return dataloader_idx_; }
  /// Weight of values logged without an explicit batch_size, set by the loops at each batch start.
  void set_current_batch_size(int64_t batch_size) { current_batch_size_ = batch_size; }
  /// Forgets the values logged with on_step during the previous batch (see batch_logged()).
  void begin_batch() { batch_logged_.clear(); }
  /// Starts a new epoch of `results`: forgets its accumulated values.
  void reset(Results results) { results_[results].clear(); }
  /// Publishes the epoch values of `results`; returns those sent to loggers, under their epoch
  /// names.
  Metrics end_epoch(Results results);
  /// The current epoch values of `results` sent to loggers, under their epoch names; changes
  /// nothing.
  Metrics epoch_values(Results results) const;
  /// As epoch_values(results), for the values logged while loader `dataloader_idx` ran, or (for
  /// nothing) those logged with one loader or outside the loaders (the epoch-end hooks): what
  /// Lightning returns per dataloader from validate/test, with the latter added to every one.
  Metrics epoch_values(Results results, std::optional<int64_t> dataloader_idx) const;
  /// Forgets everything (start of fit, end of the sanity check).
  void clear();

  const Metrics& callback_metrics() const { return read(callback_); }
  const Metrics& logged_metrics() const { return read(logged_); }
  const Metrics& progress_bar_metrics() const { return read(progress_bar_); }
  /// Values logged with on_step (and logger=true) since the last begin_batch(), by step name.
  const Metrics& batch_logged() const { return read(batch_logged_); }
  /// Sets one callback metric outside log() (Lightning's `trainer.callback_metrics[name] = value`).
  void set_callback_metric(const std::string& name, double value) { callback_.set(name, value); }
  /// Restores callback_metrics (resuming from a checkpoint).
  void restore_callback_metrics(Metrics metrics);

  /// Data-parallel training, at an epoch's end, on every rank alike: the epoch entries of
  /// `results` (all, or those logged with sync_dist) are reduced over the ranks with their
  /// reduce_fx's operation (means over every rank's samples: their weighted sums and weights are
  /// summed). `reduce(values, op)` reduces across ranks (kSum or kMax). Throws
  /// MisconfigurationError when the ranks logged different names or reduce_fx.
  void synchronize_epoch(
      Results results, bool all,
      const std::function<void(std::vector<double>&, distributed::ReduceOp)>& reduce);

  // ---- for a replay (replay::ReplaySession): the recorded values, as the loops left them ----

  /// Values logged with on_step in a batch: into logged_metrics and callback_metrics (a
  /// "<name>_step" value also under the plain name, as log() keeps it there).
  void replay_step_values(const Metrics& logged);
  /// Epoch values sent to loggers: into logged_metrics.
  void replay_epoch_values(const Metrics& logged);
  void replay_progress_bar(Metrics values);

 private:
  /// Metrics whose latest value may still be a tensor not read yet.
  struct LazyMetrics {
    Metrics values;
    std::map<std::string, at::Tensor> pending;  ///< newer than `values` for their names
    void set(const std::string& key, double value) {
      values[key] = value;
      pending.erase(key);
    }
    void set(const std::string& key, const at::Tensor& value) { pending[key] = value; }
    void clear() {
      values.clear();
      pending.clear();
    }
  };
  struct Entry {
    std::string name;                       ///< as logged
    std::string suffix;                     ///< `/dataloader_idx_<i>`, or empty
    std::optional<int64_t> dataloader_idx;  ///< the loader running when it was first logged
    /// The names it is published under: plain, and forked with _step / _epoch when it is logged
    /// both on_step and on_epoch; the dataloader suffix last, as Lightning's _forked_name.
    std::string plain_name() const { return name + suffix; }
    std::string step_name() const { return name + (on_step && on_epoch ? "_step" : "") + suffix; }
    std::string epoch_name() const { return name + (on_step && on_epoch ? "_epoch" : "") + suffix; }
    bool on_step = false;
    bool on_epoch = false;
    bool prog_bar = false;
    bool logger = true;
    bool sync_dist = false;
    ReduceFx reduce_fx = ReduceFx::kMean;
    /// Logged in an epoch-level hook with a reduction across ranks: already the ranks' value.
    bool reduced_when_logged = false;
    /// The reduction so far: the weighted sum (kMean), the sum, the max or the min.
    double value = 0.0;
    double weight = 0.0;  ///< kMean: the sum of the batch sizes; else the number of values
    /// Values not read yet, reduced on their device the same way (undefined when none).
    at::Tensor device_value;
  };
  /// What log() of either kind has checked and decided.
  struct Logged {
    Entry* entry;
    bool training;
    bool step_level;
    bool on_step;
    bool on_epoch;
    int64_t batch_size;
  };
  Logged check_and_register(std::string_view fx, const std::string& name,
                            const LogOptions& options);
  void set_step_value(const Entry& entry, bool training, const at::Tensor* tensor, double value);
  void publish_epoch_value(const Entry& entry, Metrics* out);
  /// Reads every tensor not read yet (one transfer per device) into the values.
  void read_pending() const;
  const Metrics& read(const LazyMetrics& metrics) const {
    read_pending();
    return metrics.values;
  }

  // mutable: reading the pending tensors changes no value anyone can see.
  mutable std::map<Results, std::map<std::string, Entry>> results_;
  mutable LazyMetrics callback_, logged_, progress_bar_, batch_logged_;
  mutable bool has_pending_ = false;
  int64_t current_batch_size_ = 1;
  std::optional<int64_t> dataloader_idx_;
  bool defer_cpu_reads_ = false;
};

}  // namespace trainbus
