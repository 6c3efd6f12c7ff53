#pragma once
/// EMAWeightAveraging: keeps an exponential moving average of the module's weights, used for
/// validation and swapped in when training ends (Lightning's EMAWeightAveraging).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "base/arg.h"
#include "core/callback.h"

namespace trainbus::callbacks {

/// Lightning's EMAWeightAveraging arguments and defaults.
struct EMAWeightAveragingOptions {
  /// average = decay x average + (1 - decay) x weights, at every update.
  TRAINBUS_ARG(double, decay) = 0.999;
  /// Update after every N-th optimizer step (counted from 0).
  TRAINBUS_ARG(int64_t, update_every_n_steps) = 1;
  /// Update only from this optimizer step (0-based) on; unset: from the first.
  TRAINBUS_ARG(std::optional<int64_t>, update_starting_at_step);
  /// Also update at the end of every epoch from this one (0-based) on, as Lightning's (the step
  /// updates do not wait for it); unset: no epoch updates.
  TRAINBUS_ARG(std::optional<int64_t>, update_starting_at_epoch);
  /// Average the buffers (BatchNorm statistics) too; false: they are the module's own.
  TRAINBUS_ARG(bool, use_buffers) = true;
};

/// The average is made at on_fit_start (after configure_model, a checkpoint's restore and the move
/// to the device; on the module's device) as a copy of the weights, which the first update replaces
/// (as PyTorch's AveragedModel). It is updated after each optimizer step that should_update()
/// allows, and at epoch ends from update_starting_at_epoch. Once it has an update, validation in
/// fit runs on it (swapped in at on_validation_epoch_start, back at its end) and at on_train_end it
/// is copied into the module, which keeps it. Integer buffers are copied, not averaged.
///
/// Checkpoints, laid out as Lightning's WeightAveraging lays them out: the checkpoint's state_dict
/// holds the average (what validation scored, so the best checkpoint, validate/test with a
/// ckpt_path and load_from_checkpoint get the averaged model), `extra["current_model_state"]` the
/// weights being trained, and the callback's state its counters. A resumed fit trains on from
/// current_model_state and continues the average exactly. A checkpoint without
/// current_model_state (not saved with this callback, or weights-only) starts the average from its
/// weights; one written before this layout (the average in the callback's state) still resumes.
/// Throws MisconfigurationError for a decay outside [0, 1] or an interval < 1, and when the
/// module's tensors do not match the average (a checkpoint of another model, use_buffers changed).
class EMAWeightAveraging : public Callback {
 public:
  explicit EMAWeightAveraging(EMAWeightAveragingOptions options = {});

  /// Lightning's should_update: for an optimizer step (0-based step_idx) or an epoch end
  /// (epoch_idx); override to update on another schedule.
  virtual bool should_update(const Trainer& trainer, std::optional<int64_t> step_idx,
                             std::optional<int64_t> epoch_idx) const;

  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void on_fit_start(Trainer& trainer, Module& module) override;
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override;
  void on_train_epoch_end(Trainer& trainer, Module& module) override;
  void on_validation_epoch_start(Trainer& trainer, Module& module) override;
  void on_validation_epoch_end(Trainer& trainer, Module& module) override;
  void on_train_end(Trainer& trainer, Module& module) override;
  void on_exception(Trainer& trainer, Module& module, const std::exception& error) override;
  /// Puts the average in checkpoint.state_dict and the trained weights in
  /// extra["current_model_state"].
  void on_save_checkpoint(Trainer& trainer, Module& module, CheckpointData& checkpoint) override;
  /// Loads the module from extra["current_model_state"] and keeps state_dict as the average.
  using Callback::on_load_checkpoint;
  void on_load_checkpoint(Trainer& trainer, Module& module, CheckpointData& checkpoint) override;

  /// Lightning's checkpoint key for the weights being trained.
  static constexpr const char* kCurrentModelState = "current_model_state";

  /// The averaged tensors, in the order of the module's parameters, then its buffers.
  const std::vector<at::Tensor>& average() const noexcept { return average_; }
  /// Updates made so far.
  int64_t num_averaged() const noexcept { return num_averaged_; }
  const EMAWeightAveragingOptions& options() const noexcept { return options_; }

 private:
  std::vector<at::Tensor> averaged_tensors(Module& module) const;
  // Their names in the module's state_dict, in the same order.
  std::vector<std::string> averaged_names(Module& module) const;
  // Throws MisconfigurationError unless `tensors` match the average in number and shapes.
  void check_matches(const std::vector<at::Tensor>& tensors, const char* what) const;
  void update(Module& module);
  void swap_in_out(Module& module);

  EMAWeightAveragingOptions options_;
  std::vector<at::Tensor> average_;
  std::optional<std::vector<at::Tensor>> restored_;  // from a checkpoint, until on_fit_start
  // The weights training ended with, before on_train_end put the average in the module.
  std::optional<std::vector<at::Tensor>> trained_after_end_;
  int64_t num_averaged_ = 0;
  int64_t latest_update_step_ = 0;
  bool swapped_ = false;  // the module holds the average (during validation)
};

}  // namespace trainbus::callbacks
