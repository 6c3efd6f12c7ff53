#pragma once
/// EMAWeightAveraging: keeps an exponential moving average of the module's weights, used for
/// validation and swapped in when training ends (Lightning's EMAWeightAveraging).

#include <cstdint>
#include <optional>
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
  /// Update only from this epoch (0-based) on; unset: from the first.
  TRAINBUS_ARG(std::optional<int64_t>, update_starting_at_epoch);
  /// Average the buffers (BatchNorm statistics) too; false: they are the module's own.
  TRAINBUS_ARG(bool, use_buffers) = true;
};

/// The average starts as a copy of the module's weights at setup (the first update replaces it
/// with the weights then, as PyTorch's AveragedModel) and is updated after each optimizer step that
/// should_update() allows. Validation runs on the averaged weights (swapped in at
/// on_validation_epoch_start, swapped back at its end); at on_train_end they are copied into the
/// module, which keeps them. The average and its counters are kept in the callback's checkpoint
/// state, so a resumed run continues it exactly (Lightning stores the average as the checkpoint's
/// model weights instead; here the model part keeps the weights being trained). Throws
/// MisconfigurationError for a decay outside [0, 1] or an interval < 1.
class EMAWeightAveraging : public Callback {
 public:
  explicit EMAWeightAveraging(EMAWeightAveragingOptions options = {});

  /// Lightning's WeightAveraging.should_update for an optimizer step (0-based): override to
  /// update on another schedule.
  virtual bool should_update(const Trainer& trainer, int64_t step_idx) const;

  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override;
  void on_validation_epoch_start(Trainer& trainer, Module& module) override;
  void on_validation_epoch_end(Trainer& trainer, Module& module) override;
  void on_train_end(Trainer& trainer, Module& module) override;
  void on_exception(Trainer& trainer, Module& module, const std::exception& error) override;

  /// The averaged tensors, in the order of the module's parameters, then its buffers.
  const std::vector<at::Tensor>& average() const noexcept { return average_; }
  /// Updates made so far.
  int64_t num_averaged() const noexcept { return num_averaged_; }
  const EMAWeightAveragingOptions& options() const noexcept { return options_; }

 private:
  std::vector<at::Tensor> averaged_tensors(Module& module) const;
  void update(Module& module);
  void swap_in_out(Module& module);

  EMAWeightAveragingOptions options_;
  std::vector<at::Tensor> average_;
  int64_t num_averaged_ = 0;
  int64_t latest_update_step_ = 0;
  bool swapped_ = false;  // the module holds the average (during validation)
};

}  // namespace trainbus::callbacks
