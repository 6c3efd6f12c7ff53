#pragma once
/// TrainerOptions: the Trainer arguments Lightning users reach for, with Lightning's defaults.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <c10/core/Device.h>

#include "base/arg.h"
#include "base/duration.h"
#include "distributed/strategy.h"

namespace trainbus {

/// Lightning's `int | float` batch limits: an integer is a number of batches, a floating-point
/// value a fraction of the loader. `limit_val_batches = 0` disables validation; `= 0.25` uses a
/// quarter of it; `= 10` ten batches.
class BatchLimit {
 public:
  template <class Int,
            std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool>, int> = 0>
  BatchLimit(Int batches)  // NOLINT(google-explicit-constructor)
      : is_fraction_(false), batches_(static_cast<int64_t>(batches)) {}
  template <class Float, std::enable_if_t<std::is_floating_point_v<Float>, int> = 0>
  BatchLimit(Float fraction)  // NOLINT(google-explicit-constructor)
      : is_fraction_(true), fraction_(static_cast<double>(fraction)) {}

  bool is_fraction() const noexcept { return is_fraction_; }
  double fraction() const noexcept { return fraction_; }
  int64_t batches() const noexcept { return batches_; }

  /// The number of batches to use out of `available`. Throws MisconfigurationError naming
  /// `option` when a non-zero fraction selects less than one batch.
  int64_t apply(int64_t available, std::string_view option) const;
  /// Throws MisconfigurationError naming `option` for a negative count or a fraction outside [0,
  /// 1].
  void validate(std::string_view option) const;
  std::string to_string() const;

 private:
  bool is_fraction_;
  double fraction_ = 1.0;
  int64_t batches_ = 0;
};

enum class GradientClipAlgorithm { kNorm, kValue };

/// Options of a Trainer. Names and defaults are Lightning's; checked when the Trainer is built.
struct TrainerOptions {
  /// Stop after this many epochs. Unset: 1000, or unlimited (-1) when max_steps is set.
  TRAINBUS_ARG(std::optional<int64_t>, max_epochs);
  /// Keep training at least this many epochs even if a callback requests a stop.
  TRAINBUS_ARG(std::optional<int64_t>, min_epochs);
  /// Stop after this many optimizer steps; -1: no limit.
  TRAINBUS_ARG(int64_t, max_steps) = -1;
  /// Keep training at least this many optimizer steps even if a callback requests a stop.
  TRAINBUS_ARG(std::optional<int64_t>, min_steps);
  /// Stop training after this much time ("DD:HH:MM:SS", a std::chrono duration or DurationParts),
  /// checked after every batch, as Lightning's: the Trainer adds callbacks::Timer(duration =
  /// max_time, interval = "step") unless it is given a Timer. Time trained before a resume counts.
  /// min_epochs and min_steps still apply.
  TRAINBUS_ARG(std::optional<Duration>, max_time);

  TRAINBUS_ARG(BatchLimit, limit_train_batches) = 1.0;
  TRAINBUS_ARG(BatchLimit, limit_val_batches) = 1.0;
  TRAINBUS_ARG(BatchLimit, limit_test_batches) = 1.0;
  TRAINBUS_ARG(BatchLimit, limit_predict_batches) = 1.0;

  /// Validate every N training epochs; unset: validation is driven by val_check_interval alone,
  /// counting batches across epochs.
  TRAINBUS_ARG(std::optional<int64_t>, check_val_every_n_epoch) = 1;
  /// How often to validate within an epoch: a fraction of the epoch (1.0: at its end) or a
  /// number of training batches.
  TRAINBUS_ARG(BatchLimit, val_check_interval) = 1.0;
  /// Validation batches run before training as a sanity check; -1: all, 0: none.
  TRAINBUS_ARG(int64_t, num_sanity_val_steps) = 2;

  /// Step the optimizers every N batches, with the loss divided by N.
  TRAINBUS_ARG(int64_t, accumulate_grad_batches) = 1;
  /// Clip gradients before each optimizer step; unset: no clipping.
  TRAINBUS_ARG(std::optional<double>, gradient_clip_val);
  TRAINBUS_ARG(GradientClipAlgorithm, gradient_clip_algorithm) = GradientClipAlgorithm::kNorm;

  /// Seeds LibTorch's generators (and so the data order) at the start of each run; unset: leaves
  /// them as they are.
  TRAINBUS_ARG(std::optional<uint64_t>, seed);
  /// true: only deterministic LibTorch algorithms (torch.use_deterministic_algorithms); false:
  /// allow any; unset: leave LibTorch's setting alone (as Lightning's default None).
  TRAINBUS_ARG(std::optional<bool>, deterministic);
  /// Print a ModelSummary of the module when fit starts (the Trainer adds callbacks::ModelSummary
  /// unless one, or a RichModelSummary, is given), as Lightning's default.
  TRAINBUS_ARG(bool, enable_model_summary) = true;
  /// Save checkpoints, as Lightning's default: the Trainer adds a callbacks::ModelCheckpoint with
  /// its defaults (the newest epoch's end, `epoch=E-step=S.ckpt`, in the first logger's log_dir
  /// /checkpoints, else default_root_dir/checkpoints) unless a checkpoint callback
  /// (CheckpointCallback: ModelCheckpoint, OnExceptionCheckpoint) is given. false with a
  /// checkpoint callback given is refused, as Lightning does.
  TRAINBUS_ARG(bool, enable_checkpointing) = true;
  /// Show a progress bar, as Lightning's default: each fit/validate/test/predict attaches an
  /// observers::ProgressBar (std::cout) unless an observer that is a progress bar
  /// (events::Observer::is_progress_bar) was added. false with one added is refused.
  TRAINBUS_ARG(bool, enable_progress_bar) = true;
  /// Root of logs and checkpoints.
  TRAINBUS_ARG(std::string, default_root_dir) = ".";
  /// Device the module and batches are moved to; CUDA works where LibTorch has it.
  TRAINBUS_ARG(c10::Device, device) = c10::Device(c10::DeviceType::CPU);
  /// How the processes of a job train together (Lightning's strategy): null, one process;
  /// `std::make_shared<distributed::DDPStrategy>()` for data-parallel training with the ranks
  /// torchrun's variables describe (`trainbus fit --nproc-per-node N` sets them). Under DDP every
  /// loader is split across the ranks, gradients are averaged, validation metrics are reduced,
  /// a stop asked on any rank stops all, and only rank 0 writes checkpoints.
  TRAINBUS_ARG(std::shared_ptr<distributed::Strategy>, strategy);
  /// How often loggers get step-level values.
  TRAINBUS_ARG(int64_t, log_every_n_steps) = 50;
  /// Threads of the pool that runs asynchronous observers (Trainer::add_observer).
  TRAINBUS_ARG(std::size_t, observer_threads) = 2;
  /// How long the trainer waits on an observer that handles no event (for room in its queue, at
  /// the end of every run, in wait_for_observers(), in the destructor) before it abandons it and
  /// raises an events::ObserverError naming it. A slow observer that makes progress is waited for;
  /// raise this for one whose single hooks legitimately take longer (an upload, say).
  TRAINBUS_ARG(std::chrono::milliseconds, observer_stall_timeout){60000};
  /// How often the observer pool hands what was published to the observers (sooner when a run
  /// drains, a queue fills up or 512 events pile up), and so also how late an observer's failure
  /// or an ObserverOptions::flush_interval can come; at most 1 s. Each hand-over wakes pool
  /// threads, about 20 us of CPU in a VM, taken from training where no core is spare: shorter
  /// shows events to observers sooner at that price (bench/README.md: with the fit's four
  /// observers, the pool's threads ran 2.2 to 3.0% of a 2.3 ms step at 1 ms, 0.6 to 0.9% at 10 ms).
  TRAINBUS_ARG(std::chrono::microseconds, observer_kick_interval){10000};
};

/// Arguments of one Trainer::fit call.
struct FitOptions {
  /// Checkpoint to resume from: a checkpoint directory written by Trainer::save_checkpoint, or
  /// "last" (the newest complete checkpoint a checkpoint callback finds in its directory) or
  /// "best" (its best_model_path); empty: start fresh.
  TRAINBUS_ARG(std::string, ckpt_path);
};

/// Arguments of one Trainer::validate or Trainer::test call.
struct EvaluateOptions {
  /// Weights to evaluate (Lightning's ckpt_path): a checkpoint directory, "best" (a checkpoint
  /// callback's best_model_path, e.g. after fit) or "last" (the newest complete checkpoint it
  /// finds); empty: the module's weights as they are.
  TRAINBUS_ARG(std::string, ckpt_path);
};

/// Arguments of one Trainer::predict call.
struct PredictOptions {
  /// Weights to predict with, as EvaluateOptions::ckpt_path.
  TRAINBUS_ARG(std::string, ckpt_path);
  /// Keep every batch's prediction and return them (Lightning's return_predictions); false: keep
  /// none, for predictions written by a callback (callbacks::BasePredictionWriter) that would not
  /// fit in memory.
  TRAINBUS_ARG(bool, return_predictions) = true;
};

/// How Trainer::save_checkpoint writes.
struct SaveCheckpointOptions {
  /// Only the model's weights and buffers (Lightning's save_weights_only): cannot resume training.
  TRAINBUS_ARG(bool, weights_only) = false;
  /// Write in the background; the call returns once the tensors are copied.
  TRAINBUS_ARG(bool, async) = false;
  /// Under DDP, what names this save alike on every rank in the ranks' agreement. By default
  /// "save_checkpoint" for every such save: the ranks' file names may differ (a timestamp, a
  /// hostname, a metric not reduced) and rank 0's is written, as in Lightning. A name of one's
  /// own (the file name, say) makes ranks that save under different names fail at once.
  TRAINBUS_ARG(std::string, agreement_name);
};

}  // namespace trainbus
