#pragma once
/// LogOptions: the keyword arguments of Lightning's self.log.

#include <cstdint>
#include <optional>

#include "base/arg.h"

namespace trainbus {

/// How an on_epoch value's epoch value is made from the values logged in the epoch (Lightning's
/// reduce_fx: "mean", "sum", "max", "min").
enum class ReduceFx {
  kMean,  ///< the mean, weighted by each value's batch_size
  kSum,   ///< the sum (batch_size is not used)
  kMax,   ///< the largest (batch_size is not used)
  kMin,   ///< the smallest (batch_size is not used)
};

/// "mean", "sum", "max", "min".
inline const char* to_string(ReduceFx reduce_fx) {
  switch (reduce_fx) {
    case ReduceFx::kSum:
      return "sum";
    case ReduceFx::kMax:
      return "max";
    case ReduceFx::kMin:
      return "min";
    case ReduceFx::kMean:
      break;
  }
  return "mean";
}

/// How a logged value is reduced and where it goes, as Lightning's keyword arguments:
/// `log("acc", acc, LogOptions().on_epoch(true).prog_bar(true))`.
struct LogOptions {
  /// Record the value at this step. Default: true in training_step and the training batch hooks,
  /// false elsewhere (as Lightning).
  TRAINBUS_ARG(std::optional<bool>, on_step);
  /// Accumulate the value into an epoch mean. Default: the opposite of on_step's default.
  TRAINBUS_ARG(std::optional<bool>, on_epoch);
  /// Show it in the progress bar (progress_bar_metrics).
  TRAINBUS_ARG(bool, prog_bar) = false;
  /// Send it to loggers (logged_metrics).
  TRAINBUS_ARG(bool, logger) = true;
  /// How the epoch value is reduced from the epoch's values: their batch-size-weighted mean
  /// (default), sum, max or min, as Lightning's reduce_fx.
  TRAINBUS_ARG(ReduceFx, reduce_fx) = ReduceFx::kMean;
  /// Weight of this value in the epoch mean (reduce_fx kMean only, as Lightning); default: the
  /// current batch's size in a step or batch hook, 1 in an epoch hook.
  TRAINBUS_ARG(std::optional<int64_t>, batch_size);
  /// In data-parallel training, reduce across ranks with reduce_fx's operation (the mean, sum, max
  /// or min over the ranks): a step value when it is logged (a collective: every rank must log
  /// it), an epoch value at the epoch's end. A no-op on one process. Validation and test epoch
  /// values are always reduced.
  TRAINBUS_ARG(bool, sync_dist) = false;
  /// Lightning appends `/dataloader_idx_N` to names logged while one of several val/test loaders
  /// runs; trainbus has one val and one test loader, so this is accepted and has no effect yet.
  TRAINBUS_ARG(bool, add_dataloader_idx) = true;
};

}  // namespace trainbus
