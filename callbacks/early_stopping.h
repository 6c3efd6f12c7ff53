#pragma once
/// EarlyStopping: stop fit when a monitored metric has stopped improving (Lightning's, same
/// options).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/arg.h"
#include "core/callback.h"

namespace trainbus::callbacks {

/// Lightning's EarlyStopping arguments and defaults.
struct EarlyStoppingOptions {
  /// Key in trainer.callback_metrics, e.g. "val_loss".
  TRAINBUS_ARG(std::string, monitor);
  /// Least change that counts as an improvement.
  TRAINBUS_ARG(double, min_delta) = 0.0;
  /// Checks without improvement before stopping (checks, not epochs: with
  /// check_val_every_n_epoch=10 and patience=3 that is at least 40 epochs).
  TRAINBUS_ARG(int64_t, patience) = 3;
  /// Print why it stops and each improvement.
  TRAINBUS_ARG(bool, verbose) = false;
  /// "min" or "max".
  TRAINBUS_ARG(std::string, mode) = "min";
  /// Throw when `monitor` is missing from callback_metrics; false: skip the check.
  TRAINBUS_ARG(bool, strict) = true;
  /// Stop as soon as the metric is NaN or infinite.
  TRAINBUS_ARG(bool, check_finite) = true;
  /// Stop at once when the metric is better than this.
  TRAINBUS_ARG(std::optional<double>, stopping_threshold);
  /// Stop at once when the metric is worse than this.
  TRAINBUS_ARG(std::optional<double>, divergence_threshold);
  /// Check in on_train_epoch_end (true) or on_validation_end (false). Unset: at the train epoch end
  /// when validation runs once at the end of every epoch, else after each validation.
  TRAINBUS_ARG(std::optional<bool>, check_on_train_epoch_end);
};

/// Why EarlyStopping stopped (Lightning's EarlyStoppingReason).
enum class EarlyStoppingReason {
  kNotStopped,
  kStoppingThreshold,
  kDivergenceThreshold,
  kPatienceExhausted,
  kNonFiniteMetric
};

/// Requests a stop through Trainer::request_stop, which fit honours once min_epochs/min_steps
/// allow. Runs on the training thread as a monitoring callback (its on_train_epoch_end runs after
/// the module's). Throws MisconfigurationError for bad options, and for a missing metric when
/// strict.
class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options);

  /// "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}", as Lightning.
  std::string state_key() const override;
  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;
  CallbackKind kind() const override { return CallbackKind::kMonitoring; }

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void on_train_epoch_end(Trainer& trainer, Module& module) override;
  void on_validation_end(Trainer& trainer, Module& module) override;

  int64_t wait_count() const noexcept { return wait_count_; }
  double best_score() const noexcept { return best_score_; }
  /// Epoch at which it requested the stop; 0 if it has not.
  int64_t stopped_epoch() const noexcept { return stopped_epoch_; }
  EarlyStoppingReason stopping_reason() const noexcept { return stopping_reason_; }
  const std::string& stopping_reason_message() const noexcept { return stopping_reason_message_; }
  const EarlyStoppingOptions& options() const noexcept { return options_; }

 private:
  bool should_skip_check(const Trainer& trainer) const;
  void run_check(Trainer& trainer);
  bool improves(double current, double reference) const;

  EarlyStoppingOptions options_;
  bool check_on_train_epoch_end_ = true;
  int64_t wait_count_ = 0;
  double best_score_;
  int64_t stopped_epoch_ = 0;
  EarlyStoppingReason stopping_reason_ = EarlyStoppingReason::kNotStopped;
  std::string stopping_reason_message_;
};

/// Lightning's trainer.early_stopping_callback: the first EarlyStopping of `trainer`, or nullptr.
EarlyStopping* early_stopping_callback(const Trainer& trainer);
/// Lightning's trainer.early_stopping_callbacks: every EarlyStopping of `trainer`, in its order.
std::vector<EarlyStopping*> early_stopping_callbacks(const Trainer& trainer);

}  // namespace trainbus::callbacks
