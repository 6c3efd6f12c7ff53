#pragma once
/// LearningRateFinder: the learning rate range test at the start of fit, its suggestion applied
/// to the run (Lightning's callbacks/lr_finder.py).

#include <cstdint>
#include <optional>
#include <string>

#include "base/arg.h"
#include "core/callback.h"
#include "tuner/lr_finder.h"

namespace trainbus::callbacks {

/// Lightning's LearningRateFinder arguments and defaults.
struct LearningRateFinderOptions {
  TRAINBUS_ARG(double, min_lr) = 1e-8;
  TRAINBUS_ARG(double, max_lr) = 1.0;
  /// Learning rates tested: one per optimizer step.
  TRAINBUS_ARG(int64_t, num_training_steps) = 100;
  TRAINBUS_ARG(tuner::LRFinderMode, mode) = tuner::LRFinderMode::kExponential;
  /// Stop once the smoothed loss passes this x the best one so far; unset: never.
  TRAINBUS_ARG(std::optional<double>, early_stop_threshold) = 4.0;
  /// Write the suggestion into the module's "lr" / "learning_rate" hyper-parameter (or
  /// attr_name) and into the fit's optimizer.
  TRAINBUS_ARG(bool, update_attr) = true;
  /// The hyper-parameter updated; "" looks for "lr", then "learning_rate".
  TRAINBUS_ARG(std::string, attr_name);
};

/// At on_fit_start (after a resumed fit's weights are loaded, before training), runs
/// tuner::lr_find on the fit's module and data module with the fit's TrainerOptions, writes the
/// results table (lr_find.txt) and plot (lr_find.svg) into trainer.log_dir(), and, with
/// update_attr and a suggestion, sets it as the module's lr hyper-parameter and as the learning
/// rate of every param group of the fit's optimizer, so that training continues with it. The
/// module's weights, buffers and the random generator are as they were (Lightning's
/// isolate_rng and checkpoint restore); the fit's optimizer keeps its state. Runs before every
/// other callback (a tuner callback, as Lightning's).
///
/// On the training thread. Throws MisconfigurationError for a bad option (constructor), and from
/// fit for more than one optimizer or update_attr without an lr hyper-parameter; a plot or table
/// that cannot be written is warned about, naming the file.
class LearningRateFinder : public Callback {
 public:
  explicit LearningRateFinder(LearningRateFinderOptions options = {});

  CallbackKind kind() const override { return CallbackKind::kTuner; }
  void on_fit_start(Trainer& trainer, Module& module) override;

  /// Runs the range test now and applies it; what on_fit_start calls.
  void lr_find(Trainer& trainer, Module& module);

  /// Lightning's optimal_lr: the suggestion of the last test; unset before one, or when it had
  /// too few points to suggest one.
  std::optional<double> optimal_lr() const noexcept { return optimal_lr_; }
  /// The last test's results; unset until one ran.
  const std::optional<tuner::LRFinder>& lr_finder() const noexcept { return lr_finder_; }
  /// Where the last test's plot and table were written.
  const std::string& plot_path() const noexcept { return plot_path_; }
  const std::string& table_path() const noexcept { return table_path_; }

 private:
  LearningRateFinderOptions options_;
  std::optional<tuner::LRFinder> lr_finder_;
  std::optional<double> optimal_lr_;
  std::string plot_path_, table_path_;
};

}  // namespace trainbus::callbacks
