#pragma once
/// StochasticWeightAveraging: averages the weights of the last epochs, trained with the SWALR
/// learning rate, and leaves the module with the average (Lightning's StochasticWeightAveraging);
/// SWALR, the scheduler PyTorch has in torch.optim.swa_utils and LibTorch 1.13 lacks.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/Optional.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include "base/arg.h"
#include "core/callback.h"

namespace torch::nn {
class Module;
}

namespace trainbus::callbacks {

/// PyTorch's torch.optim.swa_utils.SWALR: anneals each param group's learning rate from the one
/// it has when the scheduler is made to its swa_lr over `anneal_epochs` steps, then holds it.
/// After step k (made counts as step 0): lr = swa_lr x alpha + lr_0 x (1 - alpha), alpha =
/// anneal(min(1, k / max(1, anneal_epochs))), anneal(t) = (1 - cos(pi t)) / 2 for "cos" and t for
/// "linear"; as PyTorch's, lr_0 is recovered from the group's current rate at each step, and
/// anneal_epochs = 0 jumps to swa_lr when made. Like every PyTorch scheduler it steps once when
/// made. Throws MisconfigurationError for an unknown strategy, anneal_epochs < 0, or swa_lrs that
/// are neither one value (for every group) nor one per param group.
class SWALR : public torch::optim::LRScheduler {
 public:
  SWALR(torch::optim::Optimizer& optimizer, std::vector<double> swa_lrs, int64_t anneal_epochs = 10,
        std::string anneal_strategy = "cos");

  /// Steps taken, the one when made included (PyTorch's `_step_count`).
  int64_t step_count() const noexcept { return static_cast<int64_t>(step_count_); }
  /// Continues from `steps` steps, as PyTorch's load_state_dict (the rates are the optimizer's).
  void set_step_count(int64_t steps);
  /// One per param group.
  const std::vector<double>& swa_lrs() const noexcept { return swa_lrs_; }

 protected:
  std::vector<double> get_lrs() override;

 private:
  double anneal(double t) const;

  std::vector<double> swa_lrs_;
  int64_t anneal_epochs_;
  bool cosine_;
};

/// Lightning's `int | float` swa_epoch_start: an integer N is the N-th epoch (1-based), a
/// floating-point f in [0, 1] the int(f x max_epochs)-th.
class SwaEpochStart {
 public:
  template <class Int,
            std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool>, int> = 0>
  SwaEpochStart(Int epoch)  // NOLINT(google-explicit-constructor)
      : is_fraction_(false), epoch_(static_cast<int64_t>(epoch)) {}
  template <class Float, std::enable_if_t<std::is_floating_point_v<Float>, int> = 0>
  SwaEpochStart(Float fraction)  // NOLINT(google-explicit-constructor)
      : is_fraction_(true), fraction_(static_cast<double>(fraction)) {}

  bool is_fraction() const noexcept { return is_fraction_; }
  double fraction() const noexcept { return fraction_; }
  int64_t epoch() const noexcept { return epoch_; }
  /// The 1-based epoch for a fit of `max_epochs` (Lightning's `int(max_epochs * fraction)`).
  int64_t resolve(int64_t max_epochs) const noexcept;
  std::string to_string() const;

 private:
  bool is_fraction_;
  double fraction_ = 0.0;
  int64_t epoch_ = 0;
};

/// Lightning's avg_fn: the new average from the average, the module's current tensor and the
/// number of updates made so far (>= 1; the first update copies).
using SwaAvgFn = std::function<at::Tensor(const at::Tensor& averaged, const at::Tensor& current,
                                          int64_t num_averaged)>;

/// Lightning's StochasticWeightAveraging arguments and defaults.
struct StochasticWeightAveragingOptions {
  /// The SWA learning rate: one value for every param group of the optimizer, or one per param
  /// group. Required, positive.
  TRAINBUS_ARG(std::vector<double>, swa_lrs);
  /// The first epoch averaged: an integer N >= 1 is the N-th epoch (0-based N - 1), a fraction f
  /// in [0, 1] the int(f x max_epochs)-th (at least the first).
  TRAINBUS_ARG(SwaEpochStart, swa_epoch_start) = 0.8;
  /// Epochs over which SWALR anneals the rate to swa_lrs.
  TRAINBUS_ARG(int64_t, annealing_epochs) = 10;
  /// "cos" or "linear".
  TRAINBUS_ARG(std::string, annealing_strategy) = "cos";
  /// Unset: the equal-weight running mean, average + (current - average) / (n + 1).
  TRAINBUS_ARG(SwaAvgFn, avg_fn);
  /// Where the average is kept; unset: the module's device.
  TRAINBUS_ARG(std::optional<c10::Device>, device) = c10::Device(c10::DeviceType::CPU);
};

/// As Lightning's (epochs 0-based; swa_start = swa_epoch_start - 1, swa_end = max_epochs - 1):
/// at on_train_epoch_start of each epoch from swa_start to swa_end, the module's parameters (the
/// weights the epochs before trained) are added to an equal-weight average; at swa_start an SWALR
/// replaces the module's LR scheduler (Trainer::set_lr_scheduler_configs), stepped every epoch.
/// When training ends after the last epoch the module takes the average. A module with BatchNorm
/// layers gets one more epoch (Trainer::set_max_epochs): at its start the module takes the
/// average, the BatchNorm running statistics are reset with momentum None (a cumulative mean), and
/// the epoch runs training_step in train mode with no backward or optimizer step
/// (Trainer::set_skip_backward), so that the statistics are those of the averaged weights; its
/// validation runs on them. Runs on the training thread; does nothing in a replay.
///
/// Checkpoints: the average, the update counters and the SWALR step count are the callback's
/// state; a resumed run re-installs SWALR and ends with the weights of an uninterrupted one.
/// Throws MisconfigurationError for bad options (naming them), and at fit start for more than one
/// optimizer or LR scheduler, no max_epochs, a swa_epoch_start after max_epochs, swa_lrs that do
/// not match the param groups, or a checkpoint's average that does not match the module.
class StochasticWeightAveraging : public Callback {
 public:
  explicit StochasticWeightAveraging(StochasticWeightAveragingOptions options);

  /// Lightning's pl_module_contains_batch_norm: a BatchNorm{1,2,3}d layer that tracks running
  /// statistics.
  static bool contains_batch_norm(const torch::nn::Module& module);

  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void on_fit_start(Trainer& trainer, Module& module) override;
  void on_train_epoch_start(Trainer& trainer, Module& module) override;
  void on_train_epoch_end(Trainer& trainer, Module& module) override;
  void on_train_end(Trainer& trainer, Module& module) override;
  void on_fit_end(Trainer& trainer, Module& module) override;
  void on_exception(Trainer& trainer, Module& module, const std::exception& error) override;

  /// The first and last epoch averaged (0-based), once fit has started.
  int64_t swa_start() const noexcept { return std::max<int64_t>(epoch_start_ - 1, 0); }
  int64_t swa_end() const noexcept { return max_epochs_ - 1; }
  /// The averaged parameters, in the order of module.parameters(); empty before the first update.
  const std::vector<at::Tensor>& average() const noexcept { return average_; }
  /// Updates made so far (Lightning's n_averaged).
  int64_t n_averaged() const noexcept { return n_averaged_; }
  /// The SWALR stepping the optimizer, once swa_start is reached; nullptr before.
  const SWALR* swa_scheduler() const noexcept { return swa_scheduler_.get(); }
  const StochasticWeightAveragingOptions& options() const noexcept { return options_; }

 protected:
  /// Lightning's update_parameters: adds the module's parameters to the average.
  virtual void update_parameters(Module& module);
  /// Lightning's transfer_weights: copies the average into the module's parameters.
  virtual void transfer_weights(Module& module);
  /// Resets the BatchNorm running statistics and sets momentum None, keeping the momenta.
  void reset_batch_norm_and_save_state(Module& module);
  /// Gives the BatchNorm layers their momenta back.
  void reset_momenta();

 private:
  // Throws MisconfigurationError unless `tensors` match the average in number and shapes.
  void check_matches(const std::vector<at::Tensor>& tensors, const char* what) const;
  // Undoes what the BatchNorm epoch changed in the trainer and the module, if it still is.
  void restore_trainer(Trainer& trainer);

  struct Momentum {
    std::shared_ptr<torch::nn::Module> layer;  // keeps `momentum` alive
    c10::optional<double>* momentum;
    c10::optional<double> saved;
  };

  StochasticWeightAveragingOptions options_;
  int64_t epoch_start_ = 1;  // 1-based, resolved at on_fit_start
  int64_t max_epochs_ = 0;   // the fit's, without the BatchNorm epoch
  bool contains_batch_norm_ = false;
  bool added_epoch_ = false;  // max_epochs is one more for the BatchNorm epoch
  bool skipping_ = false;     // this callback set the trainer's skip_backward
  bool initialized_ = false;  // SWALR installed in this fit
  std::vector<at::Tensor> average_;
  int64_t n_averaged_ = 0;
  int64_t latest_update_epoch_ = -1;
  std::shared_ptr<SWALR> swa_scheduler_;
  std::vector<Momentum> momenta_;
  // From a checkpoint, until on_fit_start / the SWALR is made.
  std::optional<std::vector<at::Tensor>> restored_average_;
  std::optional<int64_t> restored_scheduler_steps_;
  bool restored_ = false;
};

}  // namespace trainbus::callbacks
