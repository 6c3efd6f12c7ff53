#pragma once
/// Module: the LightningModule of trainbus, a torch::nn::Module with steps, hooks and log().

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/nn/module.h>

#include "checkpoint/checkpoint_data.h"
#include "checkpoint/state_dict.h"
#include "core/lightning_optimizer.h"
#include "core/log_options.h"
#include "core/optimizer_config.h"
#include "core/step_output.h"
#include "core/trainer_options.h"
#include "data/batch.h"
#include "events/common.h"

namespace trainbus {

class Trainer;
namespace replay {
class ReplaySession;
}

/// Subclass it, register your layers as with any torch::nn::Module, implement training_step and
/// configure_optimizers, and override the steps and hooks you need. Every hook is a no-op by
/// default.
///
/// Runs on the training thread. A hook that throws fires on_exception on every callback, then the
/// exception leaves fit/validate/test/predict unchanged.
class Module : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  ~Module() override;

  // ---- steps ----

  /// One training batch; return the loss (or {{"loss", loss}, ...}). The trainer runs backward
  /// and the optimizer step. With automatic_optimization(false) the step does those itself
  /// (manual_backward, optimizer().step()) and may return nothing; a returned loss is then only
  /// passed on (detached) to on_train_batch_end and the progress bar.
  virtual StepOutput training_step(const Batch& batch, int64_t batch_idx) = 0;
  /// One validation batch; log metrics with log(). Needed when the data has a val loader.
  virtual StepOutput validation_step(const Batch& batch, int64_t batch_idx);
  /// One batch of val loader `dataloader_idx` (Lightning's third argument): the loops call this
  /// one, which by default calls the two-argument one for every loader alike. Override it when the
  /// data module gives several val loaders (DataModule::val_dataloaders) and they differ; add
  /// `using Module::validation_step;` to your class to keep calling the other one yourself.
  virtual StepOutput validation_step(const Batch& batch, int64_t batch_idx,
                                     int64_t dataloader_idx) {
    (void)dataloader_idx;
    return validation_step(batch, batch_idx);
  }
  /// One test batch; needed by Trainer::test.
  virtual StepOutput test_step(const Batch& batch, int64_t batch_idx);
  /// One batch of test loader `dataloader_idx`; as validation_step's three-argument overload.
  virtual StepOutput test_step(const Batch& batch, int64_t batch_idx, int64_t dataloader_idx) {
    (void)dataloader_idx;
    return test_step(batch, batch_idx);
  }
  /// One prediction batch; needed by Trainer::predict.
  virtual at::Tensor predict_step(const Batch& batch, int64_t batch_idx);
  /// The optimizers (and schedulers) fit uses; called once per fit, after setup and
  /// configure_model.
  virtual OptimizerConfig configure_optimizers() = 0;

  // ---- setup and teardown (in Lightning's order; see Trainer) ----

  virtual void prepare_data() {}
  /// After the callbacks' setup, at the start of fit/validate/test/predict.
  virtual void setup(Stage stage) { (void)stage; }
  /// After setup: build layers lazily here if you like.
  virtual void configure_model() {}
  /// After the callbacks' teardown, at the end of a successful run.
  virtual void teardown(Stage stage) { (void)stage; }

  // ---- fit ----

  virtual void on_fit_start() {}
  virtual void on_fit_end() {}
  virtual void on_train_start() {}
  virtual void on_train_end() {}
  virtual void on_train_epoch_start() {}
  /// After the callbacks' on_train_epoch_end and before the monitoring callbacks' (EarlyStopping,
  /// ModelCheckpoint), so that they can monitor what is logged here.
  virtual void on_train_epoch_end() {}
  /// Return -1 to skip the rest of this epoch (Lightning); anything else continues.
  virtual int on_train_batch_start(const Batch& batch, int64_t batch_idx) {
    (void)batch, (void)batch_idx;
    return 0;
  }
  virtual void on_train_batch_end(const StepOutput& outputs, const Batch& batch,
                                  int64_t batch_idx) {
    (void)outputs, (void)batch, (void)batch_idx;
  }

  // ---- validation, test, predict ----

  virtual void on_validation_start() {}
  virtual void on_validation_end() {}
  virtual void on_validation_epoch_start() {}
  virtual void on_validation_epoch_end() {}
  virtual void on_validation_batch_start(const Batch& batch, int64_t batch_idx) {
    (void)batch, (void)batch_idx;
  }
  /// With the batch's val loader index (Lightning's dataloader_idx); what the loops call. By
  /// default it calls the overload above, for every loader alike.
  virtual void on_validation_batch_start(const Batch& batch, int64_t batch_idx,
                                         int64_t dataloader_idx) {
    (void)dataloader_idx;
    on_validation_batch_start(batch, batch_idx);
  }
  virtual void on_validation_batch_end(const StepOutput& outputs, const Batch& batch,
                                       int64_t batch_idx) {
    (void)outputs, (void)batch, (void)batch_idx;
  }
  /// With dataloader_idx; by default it calls the overload above.
  virtual void on_validation_batch_end(const StepOutput& outputs, const Batch& batch,
                                       int64_t batch_idx, int64_t dataloader_idx) {
    (void)dataloader_idx;
    on_validation_batch_end(outputs, batch, batch_idx);
  }
  virtual void on_test_start() {}
  virtual void on_test_end() {}
  virtual void on_test_epoch_start() {}
  virtual void on_test_epoch_end() {}
  virtual void on_test_batch_start(const Batch& batch, int64_t batch_idx) {
    (void)batch, (void)batch_idx;
  }
  /// With the batch's test loader index; by default it calls the overload above.
  virtual void on_test_batch_start(const Batch& batch, int64_t batch_idx, int64_t dataloader_idx) {
    (void)dataloader_idx;
    on_test_batch_start(batch, batch_idx);
  }
  virtual void on_test_batch_end(const StepOutput& outputs, const Batch& batch, int64_t batch_idx) {
    (void)outputs, (void)batch, (void)batch_idx;
  }
  /// With dataloader_idx; by default it calls the overload above.
  virtual void on_test_batch_end(const StepOutput& outputs, const Batch& batch, int64_t batch_idx,
                                 int64_t dataloader_idx) {
    (void)dataloader_idx;
    on_test_batch_end(outputs, batch, batch_idx);
  }
  virtual void on_predict_start() {}
  virtual void on_predict_end() {}
  virtual void on_predict_epoch_start() {}
  virtual void on_predict_epoch_end() {}
  virtual void on_predict_batch_start(const Batch& batch, int64_t batch_idx) {
    (void)batch, (void)batch_idx;
  }
  virtual void on_predict_batch_end(const at::Tensor& outputs, const Batch& batch,
                                    int64_t batch_idx) {
    (void)outputs, (void)batch, (void)batch_idx;
  }

  // ---- optimization, in the order they fire within a batch ----

  /// After training_step, before zero_grad, on the first batch of each accumulation window. Not in
  /// manual optimization, where the module zeroes the gradients itself (as Lightning).
  virtual void on_before_zero_grad(torch::optim::Optimizer& optimizer) { (void)optimizer; }
  /// Right before loss.backward().
  virtual void on_before_backward(const at::Tensor& loss) { (void)loss; }
  /// After loss.backward() and before optimizers are stepped.
  virtual void on_after_backward() {}
  /// Before gradient clipping and optimizer.step(); in manual optimization inside
  /// LightningOptimizer::step, after its closure.
  virtual void on_before_optimizer_step(torch::optim::Optimizer& optimizer) { (void)optimizer; }
  /// After optimizer.step() (trainbus addition).
  virtual void on_after_optimizer_step(torch::optim::Optimizer& optimizer) { (void)optimizer; }

  // ---- checkpoints ----

  /// After the callbacks' on_save_checkpoint, with the whole checkpoint assembled (weights,
  /// optimizer states, loops, callback states, hyper-parameters): may change any of it, and put
  /// entries of its own in `checkpoint.extra`, before it is written. Replace a tensor rather than
  /// change it in place: at a save they are the module's and optimizers' own.
  virtual void on_save_checkpoint(CheckpointData& checkpoint) { (void)checkpoint; }
  /// Before the weights are loaded (fit resuming, before the callbacks' on_load_checkpoint;
  /// validate/test/predict with a ckpt_path; load_from_checkpoint): may change the checkpoint
  /// before it is applied, as Lightning's, e.g. rename the weights of a renamed layer:
  /// `checkpoint.state_dict.insert("head.weight", checkpoint.state_dict.pop("fc.weight"))`.
  /// By default it calls the read-only overload below.
  virtual void on_load_checkpoint(CheckpointData& checkpoint) {
    on_load_checkpoint(static_cast<const CheckpointData&>(checkpoint));
  }
  /// The read-only form that earlier versions had, kept so that overrides of it still compile
  /// and run; override the one above in new code.
  virtual void on_load_checkpoint(const CheckpointData& checkpoint) { (void)checkpoint; }

  // ---- logging ----

  /// Logs `value` under `name` into trainer.callback_metrics / logged_metrics /
  /// progress_bar_metrics, as Lightning's self.log: epoch values are reduced with reduce_fx (a
  /// batch-size-weighted mean by default); with both on_step and on_epoch the names get `_step` /
  /// `_epoch` suffixes. Allowed in steps and the train, validation and test hooks; elsewhere it
  /// throws, naming the hook.
  void log(const std::string& name, double value, const LogOptions& options = {});
  /// As log(name, double); the tensor must hold one element. It is not read per call where that
  /// costs a device sync: a tensor on the GPU stays there, detached, until a value is needed.
  void log(const std::string& name, const at::Tensor& value, const LogOptions& options = {});
  /// log() for each entry, with the same options (Lightning's log_dict).
  void log_dict(const Metrics& values, const LogOptions& options = {});
  void log_dict(const std::map<std::string, at::Tensor>& values, const LogOptions& options = {});

  // ---- access ----

  /// The trainer running this module; throws if none is.
  Trainer& trainer() const;
  bool has_trainer() const noexcept { return trainer_ != nullptr; }
  /// Handles to the optimizers configure_optimizers returned, in its order (during fit): what
  /// manual optimization steps. Lightning's self.optimizers() returns a list, or the optimizer
  /// itself when there is one: here optimizers() is always the list and optimizer() the one.
  /// `handle.optimizer()` is the torch optimizer (Trainer::optimizers() has them all).
  std::vector<LightningOptimizer> optimizers() const;
  /// The handle to the only optimizer; throws MisconfigurationError, naming how many there are,
  /// when configure_optimizers returned several (use optimizers()[i]).
  LightningOptimizer optimizer() const;
  /// The LR schedulers of the running fit (Lightning's self.lr_schedulers(), always a list here;
  /// empty when there are none). In manual optimization the trainer does not step them: call
  /// `step()` yourself (a trainbus::ReduceLROnPlateau with `step(value)`).
  std::vector<std::shared_ptr<torch::optim::LRScheduler>> lr_schedulers() const;
  /// Device of the first parameter (CPU if there are none).
  c10::Device device() const;

  // ---- example input, for the model summary ----

  /// What the module computes from an input (Lightning's forward), for the model summary only: the
  /// loops never call it (the steps compute what they need).
  using ExampleForward = std::function<at::Tensor(const at::Tensor&)>;
  /// Lightning's example_input_array: an input (a small batch) and the function that computes
  /// the module's output from it, usually the module's own forward:
  /// `set_example_input_array(torch::zeros({1, 784}), [this](const at::Tensor& x) { return
  /// forward(x); })`. ModelSummary then shows In sizes and Out sizes (callbacks::layer_sizes). A
  /// function, not a virtual `forward` here, so that a module's own forward may take and return
  /// whatever it likes. Throws MisconfigurationError for a defined example without a function.
  void set_example_input_array(at::Tensor example, ExampleForward forward);
  const at::Tensor& example_input_array() const noexcept { return example_input_array_; }
  /// The function given with example_input_array (empty when none).
  const ExampleForward& example_forward() const noexcept { return example_forward_; }

  // ---- manual optimization (Lightning's automatic_optimization = False) ----

  /// Whether the trainer optimizes (true, the default): zero_grad, backward on the loss
  /// training_step returns, gradient clipping, optimizer and scheduler steps. Set it to false
  /// (before fit, e.g. in the constructor) to do these in training_step with manual_backward,
  /// optimizer()/optimizers(), clip_gradients and lr_schedulers(). Trainer options that need the
  /// trainer's own steps (gradient_clip_val, accumulate_grad_batches > 1) are refused then.
  bool automatic_optimization() const noexcept { return automatic_optimization_; }
  void automatic_optimization(bool automatic) noexcept { automatic_optimization_ = automatic; }
  /// `loss.backward()` for manual optimization, between the on_before_backward and
  /// on_after_backward hooks (callbacks, then the module, as Lightning's). Only in training_step
  /// with automatic_optimization(false); throws MisconfigurationError otherwise.
  void manual_backward(const at::Tensor& loss);
  /// Sets requires_grad to false on every parameter of the fit's optimizers that `optimizer` does
  /// not hold, so that a backward only computes `optimizer`'s gradients (Lightning's
  /// toggle_optimizer, e.g. the generator's step of a GAN). untoggle_optimizer puts them back.
  void toggle_optimizer(torch::optim::Optimizer& optimizer);
  void toggle_optimizer(const LightningOptimizer& optimizer) {
    toggle_optimizer(optimizer.optimizer());
  }
  /// Gives the parameters toggle_optimizer turned off their requires_grad from before it.
  void untoggle_optimizer(torch::optim::Optimizer& optimizer);
  void untoggle_optimizer(const LightningOptimizer& optimizer) {
    untoggle_optimizer(optimizer.optimizer());
  }
  /// Clips the gradients of `optimizer`'s parameters (Lightning's clip_gradients; in manual
  /// optimization call it between manual_backward and step()). `gradient_clip_val` defaults to
  /// the trainer's (none: no clipping), `gradient_clip_algorithm` to the trainer's. Throws
  /// MisconfigurationError when both the trainer's gradient_clip_val and another value are given.
  void clip_gradients(torch::optim::Optimizer& optimizer,
                      std::optional<double> gradient_clip_val = std::nullopt,
                      std::optional<GradientClipAlgorithm> gradient_clip_algorithm = std::nullopt);
  void clip_gradients(const LightningOptimizer& optimizer,
                      std::optional<double> gradient_clip_val = std::nullopt,
                      std::optional<GradientClipAlgorithm> gradient_clip_algorithm = std::nullopt) {
    clip_gradients(optimizer.optimizer(), gradient_clip_val, gradient_clip_algorithm);
  }

  /// Hyper-parameters kept in checkpoints (Lightning's save_hyperparameters).
  void save_hyperparameters(StateDict hparams) { hparams_ = std::move(hparams); }
  const StateDict& hparams() const noexcept { return hparams_; }

 private:
  friend class Trainer;
  friend class replay::ReplaySession;  // attaches its stand-in module to the replaying trainer
  Trainer* trainer_ = nullptr;
  StateDict hparams_;
  at::Tensor example_input_array_;
  ExampleForward example_forward_;
  bool automatic_optimization_ = true;
  // Puts back every parameter toggle_optimizer changed, when a run fails before
  // untoggle_optimizer (the Trainer's exception path).
  void restore_toggled_optimizer() noexcept;
  // What toggle_optimizer found, per parameter (by its TensorImpl), for untoggle_optimizer.
  std::unordered_map<const void*, std::pair<at::Tensor, bool>> requires_grad_state_;
};

}  // namespace trainbus
