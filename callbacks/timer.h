#pragma once
/// Timer: measures the time spent training, validating and testing, and stops training when a
/// time limit is reached (Lightning's Timer, same options and state; what Trainer max_time uses).

#include <array>
#include <chrono>
#include <optional>
#include <string>

#include "base/arg.h"
#include "base/duration.h"
#include "core/callback.h"

namespace trainbus::callbacks {

/// Lightning's RunningStage, the stages a Timer measures.
enum class RunningStage { kTraining, kSanityChecking, kValidating, kTesting, kPredicting };

/// Lightning's spelling: "train", "sanity_check", "validate", "test", "predict".
const char* to_string(RunningStage stage);

/// Lightning's Timer arguments and defaults.
struct TimerOptions {
  /// How long training may run: "DD:HH:MM:SS", a std::chrono duration or DurationParts; unset:
  /// no limit, the Timer only measures.
  TRAINBUS_ARG(std::optional<Duration>, duration);
  /// When the limit is checked: "step" (after every training batch) or "epoch" (at each training
  /// epoch end).
  TRAINBUS_ARG(std::string, interval) = "step";
  /// Say when the limit stops training.
  TRAINBUS_ARG(bool, verbose) = true;
};

/// Training's elapsed time includes the time trained before a resume (the checkpoint keeps it); a
/// fresh fit starts from 0, and a failed run's clocks stop where it failed. Times are kept per
/// hook, as Lightning's: the sanity check counts as validation ("sanity_check" stays 0).
/// The limit is also checked at on_fit_start, so that a resumed run whose time is used up stops
/// at once. A stop is a request (Trainer::request_stop, reason "Timer: Time limit reached...",
/// once per fit): min_epochs and min_steps still apply. Under DDP without the Trainer's stop
/// agreement after every batch (DDPOptions::stop_agreement_every_batch false), rank 0's clock
/// decides for every rank, as Lightning's Timer: one broadcast per check.
/// Throws MisconfigurationError for an interval other than step or epoch.
class Timer : public Callback {
 public:
  using Clock = std::chrono::steady_clock;

  explicit Timer(TimerOptions options = {});

  /// When `stage` started (steady clock, seconds), or unset before it started.
  std::optional<double> start_time(RunningStage stage = RunningStage::kTraining) const;
  /// When `stage` ended, or unset while it runs or before it started.
  std::optional<double> end_time(RunningStage stage = RunningStage::kTraining) const;
  /// Seconds spent in `stage` (for training, plus the time trained before a resume).
  double time_elapsed(RunningStage stage = RunningStage::kTraining) const;
  /// Seconds left of the duration for `stage`; unset without a duration.
  std::optional<double> time_remaining(RunningStage stage = RunningStage::kTraining) const;
  const TimerOptions& options() const noexcept { return options_; }

  bool stateful() const override { return true; }
  /// {"time_elapsed": {"train": s, "sanity_check": s, "validate": s, "test": s, "predict": s}}
  StateDict state_dict() const override;
  /// Restores training's elapsed time only (as Lightning).
  void load_state_dict(const StateDict& state) override;

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void on_exception(Trainer& trainer, Module& module, const std::exception& error) override;
  void on_train_start(Trainer& trainer, Module& module) override;
  void on_train_end(Trainer& trainer, Module& module) override;
  void on_validation_start(Trainer& trainer, Module& module) override;
  void on_validation_end(Trainer& trainer, Module& module) override;
  void on_test_start(Trainer& trainer, Module& module) override;
  void on_test_end(Trainer& trainer, Module& module) override;
  void on_fit_start(Trainer& trainer, Module& module) override;
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override;
  void on_train_epoch_end(Trainer& trainer, Module& module) override;

 private:
  static constexpr std::size_t kStages = 5;
  static double now();
  void check_time_remaining(Trainer& trainer);

  TimerOptions options_;
  bool check_every_step_;
  std::array<std::optional<double>, kStages> start_{};
  std::array<std::optional<double>, kStages> end_{};
  double offset_ = 0;            // training seconds before a resume
  bool stop_requested_ = false;  // in this fit
};

}  // namespace trainbus::callbacks
