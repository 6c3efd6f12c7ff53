#pragma once
/// The learning rate range test (Lightning's Tuner.lr_find and _LRFinder): a short training run
/// whose learning rate grows step by step from min_lr to max_lr, the smoothed loss at each step,
/// and a suggestion where the loss falls fastest.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/arg.h"

namespace trainbus {
class Module;
struct TrainerOptions;
namespace data {
class DataModule;
}
}  // namespace trainbus

namespace trainbus::tuner {

/// How the learning rate grows from one step to the next.
enum class LRFinderMode { kExponential, kLinear };

/// "exponential" or "linear"; throws MisconfigurationError naming both otherwise.
LRFinderMode parse_lr_finder_mode(const std::string& text);

/// Lightning's lr_find arguments and defaults.
struct LRFinderOptions {
  TRAINBUS_ARG(double, min_lr) = 1e-8;
  TRAINBUS_ARG(double, max_lr) = 1.0;
  /// Learning rates tested: one per optimizer step.
  TRAINBUS_ARG(int64_t, num_training) = 100;
  TRAINBUS_ARG(LRFinderMode, mode) = LRFinderMode::kExponential;
  /// Stop once the smoothed loss passes this x the best one so far; unset: never.
  TRAINBUS_ARG(std::optional<double>, early_stop_threshold) = 4.0;
  /// Write the suggestion into the module's hyper-parameters (hparams()[attr_name]), which its
  /// configure_optimizers reads as Lightning modules read `self.hparams.lr`.
  TRAINBUS_ARG(bool, update_attr) = false;
  /// The hyper-parameter updated; "" looks for "lr", then "learning_rate".
  TRAINBUS_ARG(std::string, attr_name);
};

/// The range test's results (Lightning's _LRFinder): lrs()[i] is the learning rate of the i-th
/// optimizer step, losses()[i] the smoothed loss after it (NaN when the step returned no loss).
class LRFinder {
 public:
  LRFinder(LRFinderMode mode, double min_lr, double max_lr, int64_t num_training);
  /// Results kept elsewhere (a table, a recording), to ask for a suggestion or a plot again.
  /// Throws MisconfigurationError when lrs and losses differ in length.
  static LRFinder from_results(LRFinderMode mode, double min_lr, double max_lr,
                               int64_t num_training, std::vector<double> lrs,
                               std::vector<double> losses);

  /// The learning rate of optimizer step `step` (0-based), as Lightning's _ExponentialLR and
  /// _LinearLR give it: min_lr at step 0, then min_lr x (max_lr / min_lr)^((step + 1) /
  /// num_training) (linear: min_lr + (step + 1) / num_training x (max_lr - min_lr)).
  double lr_at(int64_t step) const;

  /// Adds one step's learning rate and raw loss; returns the smoothed loss (Lightning's running
  /// average with beta 0.98 and its bias correction) and whether the test should stop there.
  struct Added {
    double smoothed_loss;
    bool diverged;
  };
  Added add(double lr, double loss, int64_t global_step,
            std::optional<double> early_stop_threshold);
  /// A step without a loss: NaN, left out of the suggestion.
  void add_missing(double lr);

  /// The lr where the loss falls fastest (the most negative gradient of the loss over the lr,
  /// torch.gradient with the lrs as spacing), among the finite losses after skipping `skip_begin`
  /// and `skip_end` points; unset when fewer than two are left.
  std::optional<double> suggestion(int64_t skip_begin = 10, int64_t skip_end = 1) const;
  /// The index of the suggestion in lrs() and losses(), once suggestion() found one.
  std::optional<std::size_t> optimal_index() const noexcept { return optimal_index_; }

  /// The results as a table: step, lr, smoothed loss, the suggestion marked.
  std::string table() const;
  /// Writes the plot (loss over lr, a log axis in exponential mode, the suggestion as a red
  /// point) as an SVG file; throws std::runtime_error naming the path when it cannot.
  void write_plot(const std::string& path, bool suggest = true) const;

  const std::vector<double>& lrs() const noexcept { return lrs_; }
  const std::vector<double>& losses() const noexcept { return losses_; }
  LRFinderMode mode() const noexcept { return mode_; }
  double min_lr() const noexcept { return min_lr_; }
  double max_lr() const noexcept { return max_lr_; }
  int64_t num_training() const noexcept { return num_training_; }

 private:
  LRFinderMode mode_;
  double min_lr_, max_lr_;
  int64_t num_training_;
  std::vector<double> lrs_, losses_;
  double avg_loss_ = 0.0, best_loss_ = 0.0;
  mutable std::optional<std::size_t> optimal_index_;
};

/// Runs the range test on `module` with `data`, as Lightning's Tuner(trainer).lr_find: a Trainer
/// with `options` trains for num_training optimizer steps (no validation, no sanity check, no
/// callbacks or observers but the finder's), each at the finder's learning rate (every param
/// group of the one optimizer; the module's schedulers are overridden), and stops early when the
/// loss diverges. The module's weights and buffers are restored afterwards; with update_attr the
/// suggestion is written into its hyper-parameters. Throws MisconfigurationError for bad options,
/// more than one optimizer, or update_attr without an "lr"/"learning_rate" hyper-parameter.
LRFinder lr_find(const TrainerOptions& options, Module& module, data::DataModule& data,
                 const LRFinderOptions& finder = {});

/// Checks min_lr, max_lr and num_training; throws MisconfigurationError naming the option.
void check_lr_finder_options(const LRFinderOptions& finder);

}  // namespace trainbus::tuner
