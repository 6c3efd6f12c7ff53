#pragma once
/// LogOptions: the keyword arguments of Lightning's self.log.

#include <cstdint>
#include <optional>

namespace trainbus {

/// How a logged value is reduced and where it goes. Field order matches the common call
/// `log("acc", acc, {on_step, on_epoch, prog_bar})`.
struct LogOptions {
  /// Record the value at this step. Default: true in training_step and the training batch hooks,
  /// false elsewhere (as Lightning).
  std::optional<bool> on_step;
  /// Accumulate the value into an epoch mean. Default: the opposite of on_step's default.
  std::optional<bool> on_epoch;
  /// Show it in the progress bar (progress_bar_metrics).
  bool prog_bar = false;
  /// Send it to loggers (logged_metrics).
  bool logger = true;
  /// Weight of this value in the epoch mean; default: the current batch's size.
  std::optional<int64_t> batch_size;
};

}  // namespace trainbus
