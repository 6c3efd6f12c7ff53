#pragma once
/// Callback: Lightning's Callback with the same hook names and arguments.

#include <cstdint>
#include <exception>
#include <string>

#include <ATen/core/Tensor.h>

#include "checkpoint/checkpoint_data.h"
#include "checkpoint/state_dict.h"
#include "core/step_output.h"
#include "data/batch.h"
#include "events/common.h"

namespace torch::optim {
class Optimizer;
}

namespace trainbus {

class Trainer;
class Module;

/// Where a callback runs relative to the others (Lightning's _reorder_callbacks and its
/// "monitoring callbacks").
enum class CallbackKind {
  kTuner,       ///< runs before all others (BatchSizeFinder, LearningRateFinder)
  kDefault,     ///< in list order
  kMonitoring,  ///< in list order, but on_train_epoch_end after the module's (EarlyStopping)
  kCheckpoint,  ///< after all others, and on_train_epoch_end after the module's (ModelCheckpoint)
};

/// A synchronous callback: runs on the training thread, inside the loop, and may change the
/// trainer's state (request_stop, learning rates, accumulate_grad_batches, freezing layers).
/// Hooks run in the trainer's callback order; every hook is a no-op by default. An exception
/// thrown from a hook fires on_exception on every callback, then leaves fit() unchanged.
class Callback {
 public:
  virtual ~Callback();

  /// Key of this callback's state in checkpoints; default: the class name. Two callbacks with
  /// state must have different keys: refused when the Trainer is built for those that declare
  /// stateful(), and when a checkpoint is saved for every callback whose state is not empty.
  virtual std::string state_key() const;
  /// Declares that state_dict() returns state (Lightning decides this by whether state_dict is
  /// overridden, which C++ cannot see): the Trainer then refuses a second stateful callback with
  /// the same state_key() when it is built, rather than at the first save. Never calls
  /// state_dict().
  virtual bool stateful() const { return false; }
  /// State saved in checkpoints, called when one is saved; saved when not empty (as Lightning).
  virtual StateDict state_dict() const { return {}; }
  /// Restores what state_dict() returned, when fit resumes from a checkpoint.
  virtual void load_state_dict(const StateDict& state) { (void)state; }
  /// Ordering group; see CallbackKind.
  virtual CallbackKind kind() const { return CallbackKind::kDefault; }
  /// Whether it reads trainer.predictions() at on_predict_epoch_end: predict then keeps every
  /// batch's prediction (on the CPU) even when they are not returned (Lightning keeps them for
  /// any callback writing on epoch end). BasePredictionWriter says so for its epoch intervals.
  virtual bool wants_epoch_predictions() const { return false; }

  // ---- setup and teardown ----

  /// At the start of fit/validate/test/predict, after the data module's setup, before the module's.
  virtual void setup(Trainer& trainer, Module& module, Stage stage) {}
  /// At the end of a successful fit/validate/test/predict, before the module's teardown.
  virtual void teardown(Trainer& trainer, Module& module, Stage stage) {}

  // ---- fit ----

  /// After configure_optimizers (and after restoring a checkpoint).
  virtual void on_fit_start(Trainer& trainer, Module& module) {}
  virtual void on_fit_end(Trainer& trainer, Module& module) {}
  virtual void on_sanity_check_start(Trainer& trainer, Module& module) {}
  virtual void on_sanity_check_end(Trainer& trainer, Module& module) {}
  virtual void on_train_start(Trainer& trainer, Module& module) {}
  virtual void on_train_end(Trainer& trainer, Module& module) {}
  virtual void on_train_epoch_start(Trainer& trainer, Module& module) {}
  /// After validation that is due at the epoch end. Epoch metrics are in callback_metrics.
  virtual void on_train_epoch_end(Trainer& trainer, Module& module) {}
  /// After the batch is on the device, before training_step.
  virtual void on_train_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                    int64_t batch_idx) {}
  /// After the optimizer step (or accumulation) of the batch; `outputs` is training_step's return.
  virtual void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                                  const Batch& batch, int64_t batch_idx) {}

  // ---- validation, test, predict ----

  virtual void on_validation_start(Trainer& trainer, Module& module) {}
  /// After the validation epoch's metrics are in callback_metrics.
  virtual void on_validation_end(Trainer& trainer, Module& module) {}
  virtual void on_validation_epoch_start(Trainer& trainer, Module& module) {}
  virtual void on_validation_epoch_end(Trainer& trainer, Module& module) {}
  virtual void on_validation_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                         int64_t batch_idx) {}
  /// With the batch's val loader index (Lightning's dataloader_idx, 0 with one loader); what the
  /// loops call. By default it calls the overload above, for every loader alike.
  virtual void on_validation_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                         int64_t batch_idx, int64_t dataloader_idx) {
    on_validation_batch_start(trainer, module, batch, batch_idx);
  }
  virtual void on_validation_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                                       const Batch& batch, int64_t batch_idx) {}
  /// With dataloader_idx; by default it calls the overload above.
  virtual void on_validation_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                                       const Batch& batch, int64_t batch_idx,
                                       int64_t dataloader_idx) {
    on_validation_batch_end(trainer, module, outputs, batch, batch_idx);
  }
  virtual void on_test_start(Trainer& trainer, Module& module) {}
  virtual void on_test_end(Trainer& trainer, Module& module) {}
  virtual void on_test_epoch_start(Trainer& trainer, Module& module) {}
  virtual void on_test_epoch_end(Trainer& trainer, Module& module) {}
  virtual void on_test_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                   int64_t batch_idx) {}
  /// With the batch's test loader index; by default it calls the overload above.
  virtual void on_test_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                   int64_t batch_idx, int64_t dataloader_idx) {
    on_test_batch_start(trainer, module, batch, batch_idx);
  }
  virtual void on_test_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                                 const Batch& batch, int64_t batch_idx) {}
  /// With dataloader_idx; by default it calls the overload above.
  virtual void on_test_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                                 const Batch& batch, int64_t batch_idx, int64_t dataloader_idx) {
    on_test_batch_end(trainer, module, outputs, batch, batch_idx);
  }
  virtual void on_predict_start(Trainer& trainer, Module& module) {}
  virtual void on_predict_end(Trainer& trainer, Module& module) {}
  virtual void on_predict_epoch_start(Trainer& trainer, Module& module) {}
  virtual void on_predict_epoch_end(Trainer& trainer, Module& module) {}
  virtual void on_predict_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                                      int64_t batch_idx) {}
  virtual void on_predict_batch_end(Trainer& trainer, Module& module, const at::Tensor& outputs,
                                    const Batch& batch, int64_t batch_idx) {}

  // ---- optimization, in the order they fire within a batch ----

  /// After training_step, before optimizer.zero_grad(), on the first batch of each accumulation
  /// window.
  virtual void on_before_zero_grad(Trainer& trainer, Module& module,
                                   torch::optim::Optimizer& optimizer) {}
  /// Right before loss.backward(); `loss` is divided by accumulate_grad_batches.
  virtual void on_before_backward(Trainer& trainer, Module& module, const at::Tensor& loss) {}
  /// After loss.backward() and before optimizers are stepped.
  virtual void on_after_backward(Trainer& trainer, Module& module) {}
  /// Before gradient clipping and optimizer.step(); gradients are final here.
  virtual void on_before_optimizer_step(Trainer& trainer, Module& module,
                                        torch::optim::Optimizer& optimizer) {}
  /// After optimizer.step(); trainer.global_step() already counts it. (trainbus addition)
  virtual void on_after_optimizer_step(Trainer& trainer, Module& module,
                                       torch::optim::Optimizer& optimizer) {}

  // ---- checkpoints and errors ----

  /// When a checkpoint is assembled (weights, optimizer states, loops, every callback's
  /// state_dict()), before the module's on_save_checkpoint: may change any of it, and put entries
  /// of its own in `extra`, before it is written. Replace a tensor rather than change it in place.
  virtual void on_save_checkpoint(Trainer& trainer, Module& module, CheckpointData& checkpoint) {}
  /// When fit resumes: after the module's on_load_checkpoint and its weights are loaded, before
  /// the callbacks' load_state_dict, the loops' progress and the optimizer states: may change
  /// those before they are applied (as Lightning's). By default it calls the read-only overload.
  virtual void on_load_checkpoint(Trainer& trainer, Module& module, CheckpointData& checkpoint) {
    on_load_checkpoint(trainer, module, static_cast<const CheckpointData&>(checkpoint));
  }
  /// The read-only form that earlier versions had, kept so that overrides of it still compile
  /// and run; override the one above in new code.
  virtual void on_load_checkpoint(Trainer& trainer, Module& module,
                                  const CheckpointData& checkpoint) {}
  /// When an exception leaves a step, a hook or the loop; then it leaves fit() unchanged.
  /// Exceptions that are not std::exception arrive as std::runtime_error("unknown exception").
  virtual void on_exception(Trainer& trainer, Module& module, const std::exception& error) {}
};

}  // namespace trainbus
