#pragma once
/// ReduceLROnPlateau: PyTorch's scheduler that lowers the learning rate once a monitored metric
/// stops improving, which LibTorch 1.13 lacks. In a SchedulerConfig with `monitor` set, the
/// Trainer steps it with that metric, as Lightning does (core/optimizer_config.h).

#include <cstdint>
#include <string>
#include <vector>

#include <torch/optim/schedulers/lr_scheduler.h>

#include "base/arg.h"
#include "checkpoint/state_dict.h"

namespace trainbus {

/// PyTorch's arguments and defaults (torch.optim.lr_scheduler.ReduceLROnPlateau).
struct ReduceLROnPlateauOptions {
  /// "min": lower the lr when the metric stops decreasing; "max": when it stops increasing.
  TRAINBUS_ARG(std::string, mode) = "min";
  /// new lr = lr x factor; must be < 1.
  TRAINBUS_ARG(double, factor) = 0.1;
  /// Steps without improvement tolerated before the lr is lowered.
  TRAINBUS_ARG(int64_t, patience) = 10;
  /// How much better counts as an improvement, relative ("rel": best x (1 -+ threshold)) or
  /// absolute ("abs": best -+ threshold).
  TRAINBUS_ARG(double, threshold) = 1e-4;
  TRAINBUS_ARG(std::string, threshold_mode) = "rel";
  /// Steps to wait after a reduction before counting bad steps again.
  TRAINBUS_ARG(int64_t, cooldown) = 0;
  /// The lowest lr of every param group; min_lrs, when given, one per group instead.
  TRAINBUS_ARG(double, min_lr) = 0.0;
  TRAINBUS_ARG(std::vector<double>, min_lrs);
  /// A reduction smaller than this is skipped.
  TRAINBUS_ARG(double, eps) = 1e-8;
};

class ReduceLROnPlateau : public torch::optim::LRScheduler {
 public:
  /// Throws MisconfigurationError naming the option for a bad mode, threshold_mode, factor >= 1 or
  /// min_lrs of the wrong length.
  explicit ReduceLROnPlateau(torch::optim::Optimizer& optimizer,
                             ReduceLROnPlateauOptions options = {});

  /// One step with the monitored value (PyTorch's step(metrics)). LRScheduler::step() without a
  /// value changes nothing.
  void step(double metric);
  using torch::optim::LRScheduler::step;

  const ReduceLROnPlateauOptions& options() const noexcept { return options_; }
  double best() const noexcept { return best_; }
  int64_t num_bad_epochs() const noexcept { return num_bad_epochs_; }
  int64_t cooldown_counter() const noexcept { return cooldown_counter_; }
  /// Steps taken (PyTorch's last_epoch).
  int64_t last_epoch() const noexcept { return last_epoch_; }

  /// best, num_bad_epochs, cooldown_counter and last_epoch, kept in checkpoints.
  StateDict state_dict() const;
  /// Throws std::out_of_range naming a missing key.
  void load_state_dict(const StateDict& state);

 protected:
  std::vector<double> get_lrs() override;

 private:
  bool is_better(double value) const;

  ReduceLROnPlateauOptions options_;
  double best_;
  int64_t num_bad_epochs_ = 0;
  int64_t cooldown_counter_ = 0;
  int64_t last_epoch_ = 0;
  std::vector<double> next_lrs_;        // what the step in progress sets; empty: the current lrs
  bool min_lr_for_all_groups_ = false;  // min_lrs came from min_lr: it covers groups added later
};

}  // namespace trainbus
