#pragma once
/// LogOptions: the keyword arguments of Lightning's self.log.

#include <cstdint>
#include <optional>

#include "base/arg.h"

namespace trainbus {

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
  /// Weight of this value in the epoch mean; default: the current batch's size.
  TRAINBUS_ARG(std::optional<int64_t>, batch_size);
  /// In data-parallel training, the mean across ranks: a step value when it is logged (a
  /// collective: every rank must log it), an epoch value at the epoch's end. A no-op on one
  /// process. Validation and test epoch values are always reduced.
  TRAINBUS_ARG(bool, sync_dist) = false;
};

}  // namespace trainbus
