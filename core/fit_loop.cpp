// Trainer::fit: the fit loop, the training epoch and one training batch (Lightning's FitLoop,
// TrainingEpochLoop and _AutomaticOptimization).
#include <charconv>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>

#include <vector>

#include <torch/utils.h>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "checkpoint/format.h"
#include "core/callback_order.h"
#include "core/detail/duplicate_parameters.h"
#include "core/detail/gradients.h"
#include "core/detail/hparams_text.h"
#include "core/detail/trainer_hooks.h"
#include "core/learning_rates.h"
#include "core/reduce_lr_on_plateau.h"
#include "core/tensor_ref.h"
#include "core/trainer.h"

namespace trainbus {

void Trainer::fit(Module& module, DataModule& data, const FitOptions& options) {
  run_entry_point(Stage::kFit, module, data, [&] { run_fit(options); });
}

void Trainer::reset_fit_progress() {
  checkpoints_.resumed_from_.clear();
  checkpoints_.optimizers_pending_ = false;
  progress_ = FitProgress();
  batches_that_stepped_ = 0;
  train_batch_size_ = 0;
  restarting_ = false;
  should_stop_ = false;
  skip_backward_ = false;
  max_epochs_ = defaulted_max_epochs(options_);  // set_max_epochs lasts one fit
  warned_stop_refused_ = false;
  stop_reasons_.clear();
  accumulate_grad_batches_ = options_.accumulate_grad_batches();
  optimizers_.clear();
  schedulers_.clear();
  configured_schedulers_.clear();
  train_loader_.reset();
  val_loaders_.clear();
  val_batches_per_loader_.clear();
  metrics_.clear();
}

void Trainer::run_fit(const FitOptions& options) {
  reset_fit_progress();
  verify_manual_optimization_support();
  data_->prepare_data();
  module_->prepare_data();
  call_setup_hooks(Stage::kFit);
  module_->configure_model();

  // NOTE: weights are restored after configure_model (Lightning restores before it) so that layers
  // a module builds lazily there exist when their weights are loaded.
  std::unique_ptr<checkpoint::LoadedCheckpoint> checkpoint;
  if (!options.ckpt_path().empty()) {
    checkpoints_.resumed_from_ = checkpoints_.resolve_ckpt_path(options.ckpt_path());
    checkpoint = std::make_unique<checkpoint::LoadedCheckpoint>(
        checkpoint::read_checkpoint(checkpoints_.resumed_from_));
    checkpoints_.restore_modules_and_callbacks(*checkpoint);
  }
  module_->to(device());
  // Before configure_optimizers, as Lightning's strategy.setup: every rank starts from rank 0's
  // weights (those of the checkpoint when resuming: every rank loaded the same).
  if (world_size() > 1) strategy_->setup_module(*module_);
  configure_optimizers();

  load_fit_data();  // unless estimated_stepping_batches() did already
  if (checkpoint) {
    checkpoints_.restore_training_state(*checkpoint);
    // As Lightning's _FitLoop.restarting setter, run when the loops' state is loaded: the fit is
    // restarting only if the saved epoch was unfinished or the training is iteration-based
    // (max_steps set); an epoch saved from on_train_epoch_end on is not restarted.
    restarting_ =
        !checkpoint->data.loops.at("epoch_batches_finished").toBool() || options_.max_steps() != -1;
  }

  call_hooks<events::FitStart>(
      [&](Callback& c) { c.on_fit_start(*this, *module_); }, [](Module& m) { m.on_fit_start(); },
      [&] {
        events::FitStart event{event_progress(), detail::hparams_text(module_->hparams()),
                               num_training_batches_, num_val_batches_};
        event.global_rank = global_rank();
        event.local_rank = local_rank();
        event.world_size = world_size();
        return event;
      });
  if (checkpoint) checkpoints_.restore_optimizers(*checkpoint);
  module_->zero_grad(/*set_to_none=*/true);
  run_sanity_check();
  run_fit_loop();
  phase_ = Phase::kIdle;
  call_hooks<events::FitEnd>([&](Callback& c) { c.on_fit_end(*this, *module_); },
                             [](Module& m) { m.on_fit_end(); },
                             [&] {
                               return events::FitEnd{event_progress(), metrics_.callback_metrics()};
                             });
  call_teardown_hooks(Stage::kFit);
}

void Trainer::load_fit_data() {
  take_fit_data();
  if (fit_data_agreed_) return;
  // Every rank passes here: the split loaders' seeds become rank 0's, also those of loaders that
  // estimated_stepping_batches() took earlier (perhaps on some ranks only).
  const int64_t training_batches = num_training_batches_;
  const std::vector<int64_t> val_batches = val_batches_per_loader_;
  distribute(*train_loader_);
  for (const auto& loader : val_loaders_) distribute(*loader);
  fit_data_agreed_ = true;
  // A loader split a second time must split the whole data again, not its own share: the
  // sizes estimated_stepping_batches() may have reported, and every rank's loops, stand.
  size_fit_loops();
  TRAINBUS_CHECK(
      num_training_batches_ == training_batches && val_batches_per_loader_ == val_batches,
      "a data loader has another number of batches after the Trainer split it again "
      "with the ranks' agreed seeds (training batches: ",
      training_batches, ", then ", num_training_batches_,
      "): DataLoader::set_distributed must split the whole "
      "data each time it is called, not the share an earlier call left");
}

void Trainer::take_fit_data() {
  if (train_loader_) return;
  train_loader_ = require_loader(data_->train_dataloader(), "train_dataloader");
  val_loaders_ = require_loaders(data_->val_dataloaders(), "val_dataloader", false);
  // Split as load_fit_data will, with no collective: estimated_stepping_batches() may run this
  // in a hook on one rank only.
  distribute(*train_loader_, /*agree_on_seeds=*/false);
  for (const auto& loader : val_loaders_) distribute(*loader, /*agree_on_seeds=*/false);
  fit_data_agreed_ = world_size() == 1;
  size_fit_loops();
}

void Trainer::distribute(DataLoader& loader, bool agree_on_seeds) {
  if (world_size() == 1) return;
  // Without agreement (a split no collective may run in), each rank keeps its own seed.
  loader.set_distributed(world_size(), global_rank(), [this, agree_on_seeds](int64_t value) {
    return agree_on_seeds ? strategy_->broadcast(value, 0) : value;
  });
}

void Trainer::agree_on_stop() {
  if (world_size() == 1) return;
  // As Lightning's EarlyStopping (reduce_boolean_decision(all=False)), for every stop: the ranks
  // must leave the loop at the same batch, or the next collective waits for a rank that left.
  if (strategy_->reduce_boolean_decision(should_stop_, /*all=*/false) && !should_stop_)
    request_stop("a stop was requested on another rank");
}

void Trainer::synchronize_epoch_metrics(MetricsCollector::Results results) {
  if (world_size() == 1) return;
  const bool all = results != MetricsCollector::Results::kTrain;
  metrics_.synchronize_epoch(results, all,
                             [this](std::vector<double>& values, distributed::ReduceOp op) {
                               strategy_->all_reduce(values, op);
                             });
}

void Trainer::size_fit_loops() {
  val_batches_per_loader_ =
      size_eval_loaders(val_loaders_, options_.limit_val_batches(), "limit_val_batches");
  set_loop_sizes(
      options_.limit_train_batches().apply(train_loader_->num_batches(), "limit_train_batches"),
      std::accumulate(val_batches_per_loader_.begin(), val_batches_per_loader_.end(), int64_t{0}));
}

void Trainer::reload_dataloaders() {
  require_running_fit("reload_dataloaders");
  TRAINBUS_CHECK(phase_ == Phase::kIdle && current_fx_ != events::FitEnd::kName,
                 "Trainer::reload_dataloaders is called outside the epochs (setup, "
                 "on_fit_start), where no loop is reading the loaders; it was called in ",
                 current_fx_.empty() ? std::string_view("a step") : current_fx_);
  std::shared_ptr<DataLoader> train = require_loader(data_->train_dataloader(), "train_dataloader");
  std::vector<std::shared_ptr<DataLoader>> vals =
      require_loaders(data_->val_dataloaders(), "val_dataloader", false);
  distribute(*train);
  for (const auto& val : vals) distribute(*val);
  if (train_loader_) train->load_state_dict(train_loader_->state_dict());
  for (size_t i = 0; i < vals.size() && i < val_loaders_.size(); ++i)
    vals[i]->load_state_dict(val_loaders_[i]->state_dict());
  train_loader_ = std::move(train);
  val_loaders_ = std::move(vals);
  fit_data_agreed_ = true;
  size_fit_loops();
}

void Trainer::configure_optimizers() {
  OptimizerConfig config = module_->configure_optimizers();
  TRAINBUS_CHECK(!config.optimizers.empty(),
                 "configure_optimizers() returned no optimizer; return at least one, "
                 "e.g. `return std::make_shared<torch::optim::Adam>(parameters(), 1e-3);`");
  for (size_t i = 0; i < config.optimizers.size(); ++i) {
    TRAINBUS_CHECK(config.optimizers[i] != nullptr, "configure_optimizers(): optimizer ", i,
                   " is null");
  }
  if (!module_->automatic_optimization()) ignore_automatic_scheduler_keys(config.lr_schedulers);
  validate_scheduler_configs(config.lr_schedulers, config.optimizers.size(),
                             "configure_optimizers()", module_->automatic_optimization());
  if (is_global_zero()) {  // every rank's optimizers are alike
    for (const auto& warning : detail::duplicate_parameter_warnings(config.optimizers, *module_))
      warn(warning);
  }
  optimizers_ = std::move(config.optimizers);
  schedulers_ = std::move(config.lr_schedulers);
  configured_schedulers_ = schedulers_;
}

void Trainer::run_sanity_check() {
  // As Lightning's _run_sanity_check: not when restarting, "because it would mess up the loaded
  // state" (fit_loop.epoch_loop.val_loop.restarting, which the fit loop's restarting sets).
  if (restarting_ || num_val_batches_ == 0 || options_.num_sanity_val_steps() == 0) return;
  // Per val loader, as Lightning's max_batches during the sanity check.
  const std::optional<int64_t> batches =
      options_.num_sanity_val_steps() == -1
          ? std::nullopt
          : std::optional<int64_t>(options_.num_sanity_val_steps());
  phase_ = Phase::kSanityChecking;
  call_hooks<events::SanityCheckStart>(
      [&](Callback& c) { c.on_sanity_check_start(*this, *module_); }, kNoModuleHook,
      [&] { return events::SanityCheckStart{event_progress()}; });
  run_evaluation(EvalKind::kValidation, batches);
  call_hooks<events::SanityCheckEnd>(
      [&](Callback& c) { c.on_sanity_check_end(*this, *module_); }, kNoModuleHook,
      [&] {
        return events::SanityCheckEnd{event_progress(), metrics_.callback_metrics()};
      });
  // As Lightning: what the sanity check logged does not count.
  metrics_.clear();
  phase_ = Phase::kIdle;
}

bool Trainer::can_stop_early() const {
  const bool met_min_epochs =
      !options_.min_epochs() || progress_.epochs_processed >= *options_.min_epochs();
  const bool met_min_steps =
      !options_.min_steps() || progress_.global_step >= *options_.min_steps();
  return met_min_epochs && met_min_steps;
}

bool Trainer::fit_done() const {
  if (num_training_batches_ == 0) return true;
  if (options_.max_steps() >= 0 && progress_.global_step >= options_.max_steps()) return true;
  if (max_epochs_ >= 0 && progress_.epochs_processed >= max_epochs_) return true;
  return should_stop_ && can_stop_early();
}

void Trainer::run_fit_loop() {
  agree_on_stop();  // a stop asked before training (a Timer at on_fit_start) holds on every rank
  if (fit_done()) {
    if (num_training_batches_ == 0) info("`Trainer.fit` stopped: no training batches.");
    return;
  }
  phase_ = Phase::kTraining;
  call_hooks<events::TrainStart>([&](Callback& c) { c.on_train_start(*this, *module_); },
                                 [](Module& m) { m.on_train_start(); },
                                 [&] { return events::TrainStart{event_progress()}; });
  while (!fit_done()) run_training_epoch();
  phase_ = Phase::kTraining;
  call_hooks<events::TrainEnd>(
      [&](Callback& c) { c.on_train_end(*this, *module_); }, [](Module& m) { m.on_train_end(); },
      [&] {
        return events::TrainEnd{event_progress(), metrics_.callback_metrics()};
      });
}

void Trainer::run_training_epoch() {
  phase_ = Phase::kTraining;
  module_->train();
  metrics_.reset(MetricsCollector::Results::kTrain);
  progress_.epoch_batches_finished = false;
  const int64_t first_batch = std::exchange(progress_.resume_batch_idx, 0);
  progress_.batches_done_in_epoch = first_batch;
  train_loader_->set_epoch(progress_.current_epoch);
  call_hooks<events::TrainEpochStart>([&](Callback& c) { c.on_train_epoch_start(*this, *module_); },
                                      [](Module& m) { m.on_train_epoch_start(); },
                                      [&] {
                                        return events::TrainEpochStart{
                                            event_progress(), num_training_batches_, max_epochs_,
                                            num_val_batches_};
                                      });
  for (int64_t batch_idx = first_batch; batch_idx < num_training_batches_; ++batch_idx) {
    const int64_t steps_before = progress_.global_step;
    if (!run_training_batch(batch_idx)) break;  // on_train_batch_start returned -1
    check_observers();
    // before validates_after_batch: an allowed stop validates first
    if (strategy_->agrees_on_stop_every_batch()) agree_on_stop();
    const bool validate = validates_after_batch(batch_idx);
    ++progress_.total_batch_idx;
    if (validate) {
      run_evaluation(EvalKind::kValidation);
      phase_ = Phase::kTraining;
      agree_on_stop();  // EarlyStopping and the like decide in the validation's hooks
    }
    // As Lightning's on_advance_end: ReduceLROnPlateau on a step interval, after the validation.
    if (!should_accumulate(batch_idx))
      step_schedulers(SchedulerInterval::kStep, batch_idx, /*plateau=*/true);
    // As Lightning's on_advance_end: loggers count the batch's step from here on; once per
    // batch that stepped, however many optimizer steps manual optimization took in it.
    if (progress_.global_step > steps_before) ++batches_that_stepped_;
    if (options_.max_steps() >= 0 && progress_.global_step >= options_.max_steps()) break;
    if (should_stop_) {
      if (can_stop_early()) break;
      if (!warned_stop_refused_) {
        info(detail::concat("Trainer was signaled to stop but the required `min_epochs=",
                            options_.min_epochs().value_or(0),
                            "` or `min_steps=", options_.min_steps().value_or(0),
                            "` has not been met. Training will continue..."));
        warned_stop_refused_ = true;
      }
    }
  }
  progress_.epoch_batches_finished = true;
  ++progress_.epochs_processed;
  synchronize_epoch_metrics(MetricsCollector::Results::kTrain);
  metrics_.end_epoch(MetricsCollector::Results::kTrain);
  call_train_epoch_end_hooks();
  agree_on_stop();  // EarlyStopping and the like decide in the epoch-end hooks
  // As Lightning's fit_loop.on_advance_end: ReduceLROnPlateau on an epoch interval, once the
  // epoch-end hooks (and so the validation and what they log) are done, if the epoch ran through.
  if (progress_.batches_done_in_epoch == num_training_batches_)
    step_schedulers(SchedulerInterval::kEpoch, num_training_batches_ - 1, /*plateau=*/true);
  check_observers();
  ++progress_.current_epoch;
}

void Trainer::call_train_epoch_end_hooks() {
  // As Lightning's fit_loop: callbacks that monitor metrics (EarlyStopping, checkpoints) run after
  // the module's hook, so that they see what it logs.
  FxScope scope(current_fx_, events::TrainEpochEnd::kName);
  for (const auto& callback : callbacks_) {
    if (!runs_after_module_at_epoch_end(*callback)) callback->on_train_epoch_end(*this, *module_);
  }
  module_->on_train_epoch_end();
  for (const auto& callback : callbacks_) {
    if (runs_after_module_at_epoch_end(*callback)) callback->on_train_epoch_end(*this, *module_);
  }
  bus_.publish_lazy<events::TrainEpochEnd>([&] {
    // Including what the epoch-end hooks logged.
    return events::TrainEpochEnd{event_progress(),
                                 metrics_.epoch_values(MetricsCollector::Results::kTrain),
                                 metrics_.callback_metrics(), metrics_.progress_bar_metrics()};
  });
}

bool Trainer::run_training_batch(int64_t batch_idx) {
  const Batch batch = data::to_device(train_loader_->batch(batch_idx), device());
  const events::BatchInfo info{batch_idx, data::batch_size_of(batch), 0};
  metrics_.set_current_batch_size(info.batch_size);
  // A full batch's size, for checkpoints (the epoch's first; a resumed epoch's first until then,
  // unless that is the epoch's short last batch: the save then reads batch 0 instead).
  const bool may_be_short = batch_idx > 0 && batch_idx + 1 == train_loader_->num_batches();
  if (batch_idx == 0 || (train_batch_size_ == 0 && !may_be_short))
    train_batch_size_ = info.batch_size;
  metrics_.begin_batch();

  int response = 0;
  call_hooks<events::TrainBatchStart>(
      [&](Callback& c) { c.on_train_batch_start(*this, *module_, batch, batch_idx); },
      [&](Module& m) { response = m.on_train_batch_start(batch, batch_idx); },
      [&] {
        return events::TrainBatchStart{event_progress(), info};
      });
  // Under DDP with decisions agreed every batch, the ranks skip the rest of the epoch alike: a
  // rank that went on alone would wait in the next collective for one that left.
  bool skip_rest_of_epoch = response == -1;
  if (world_size() > 1 && strategy_->agrees_on_stop_every_batch())
    skip_rest_of_epoch = strategy_->reduce_boolean_decision(skip_rest_of_epoch, /*all=*/false);
  if (skip_rest_of_epoch) return false;

  StepOutput outputs;
  const bool manual = !module_->automatic_optimization();
  // Manual optimization averages at every manual_backward (as Lightning's DDP does: no no_sync).
  strategy_->before_training_step(manual || !should_accumulate(batch_idx));
  training_batch_idx_ = batch_idx;
  {
    FxScope scope(current_fx_, "training_step");
    outputs = module_->training_step(batch, batch_idx);
  }
  if (manual) {
    // As Lightning's ManualResult.from_training_step_output: the step optimized; a loss it
    // returns goes on detached, to on_train_batch_end and the progress bar.
    if (outputs.has_loss()) outputs.set(StepOutput::kLossKey, outputs.loss().detach());
  } else {
    optimize_step_output(outputs, batch_idx);
  }
  progress_.batches_done_in_epoch = batch_idx + 1;

  call_hooks<events::TrainBatchEnd>(
      [&](Callback& c) { c.on_train_batch_end(*this, *module_, outputs, batch, batch_idx); },
      [&](Module& m) { m.on_train_batch_end(outputs, batch, batch_idx); },
      [&] {
        return events::TrainBatchEnd{event_progress(), info,
                                     // Manual optimization may return a loss of any shape
                                     // (Lightning's ManualResult): one value or none.
                                     outputs.has_loss() && outputs.loss().numel() == 1
                                         ? outputs.loss().item<double>()
                                         : std::numeric_limits<double>::quiet_NaN(),
                                     metrics_.batch_logged(), metrics_.progress_bar_metrics(),
                                     make_tensor_ref(outputs)};
      });
  return true;
}

void Trainer::optimize_step_output(StepOutput& outputs, int64_t batch_idx) {
  // As Lightning's ClosureResult.from_training_step_output: the loss divided by
  // accumulate_grad_batches is what backward runs on, and on_train_batch_end gets it detached.
  at::Tensor closure_loss;
  if (outputs.has_loss()) {
    closure_loss =
        accumulate_grad_batches_ > 1 ? outputs.loss() / accumulate_grad_batches_ : outputs.loss();
  }
  optimize(closure_loss, batch_idx);
  if (closure_loss.defined()) outputs.set(StepOutput::kLossKey, closure_loss.detach());
}

bool Trainer::should_accumulate(int64_t batch_idx) const {
  const bool window_done = (batch_idx + 1) % accumulate_grad_batches_ == 0;
  const bool last_batch = batch_idx + 1 == num_training_batches_;
  return !window_done && !last_batch;
}

void Trainer::optimize(const at::Tensor& loss, int64_t batch_idx) {
  if (skip_backward_) return;  // a forward-only epoch (StochasticWeightAveraging's BatchNorm pass)
  if (!loss.defined()) {
    // Under DDP the other ranks' backward waits for this rank's gradients: a skipped batch on one
    // rank would leave them in a collective until the timeout.
    TRAINBUS_CHECK(world_size() == 1, "training_step returned no `loss` on rank ", global_rank(),
                   " of ", world_size(), " (batch ", batch_idx,
                   "): under data-parallel training every rank must return a loss for every "
                   "batch");
    if (!warned_no_loss_) {
      warn(
          "training_step returned no `loss`: such batches are skipped (no backward, no optimizer "
          "step). "
          "If this was not on purpose, return the loss.");
      warned_no_loss_ = true;
    }
    return;
  }
  TRAINBUS_CHECK(loss.numel() == 1, "training_step must return a scalar loss, got shape ",
                 loss.sizes(), "; reduce it (e.g. .mean())");
  TRAINBUS_CHECK(loss.requires_grad(),
                 "training_step's loss does not require grad: it was computed without "
                 "the module's trainable parameters (detached, or under a NoGradGuard)");

  if (batch_idx % accumulate_grad_batches_ == 0) {
    for (size_t i = 0; i < optimizers_.size(); ++i) {
      auto& optimizer = *optimizers_[i];
      call_hooks<events::BeforeZeroGrad>(
          [&](Callback& c) { c.on_before_zero_grad(*this, *module_, optimizer); },
          [&](Module& m) { m.on_before_zero_grad(optimizer); },
          [&] {
            return events::BeforeZeroGrad{event_progress(), static_cast<int64_t>(i)};
          });
      detail::zero_grad_to_none(optimizer);
    }
  }
  call_hooks<events::BeforeBackward>(
      [&](Callback& c) { c.on_before_backward(*this, *module_, loss); },
      [&](Module& m) { m.on_before_backward(loss); },
      [&] {
        return events::BeforeBackward{event_progress(), batch_idx, make_tensor_ref(loss)};
      });
  // Under DDP, on the batch that steps, the gradients are averaged across ranks during backward
  // (while accumulating they stay local, as DDP's no_sync).
  strategy_->backward(loss, !should_accumulate(batch_idx));
  call_hooks<events::AfterBackward>([&](Callback& c) { c.on_after_backward(*this, *module_); },
                                    [](Module& m) { m.on_after_backward(); },
                                    [&] {
                                      return events::AfterBackward{event_progress(), batch_idx};
                                    });
  if (should_accumulate(batch_idx)) return;

  for (size_t i = 0; i < optimizers_.size(); ++i) {
    auto& optimizer = *optimizers_[i];
    call_hooks<events::BeforeOptimizerStep>(
        [&](Callback& c) { c.on_before_optimizer_step(*this, *module_, optimizer); },
        [&](Module& m) { m.on_before_optimizer_step(optimizer); },
        [&] {
          return events::BeforeOptimizerStep{event_progress(), static_cast<int64_t>(i)};
        });
    clip_gradients(optimizer);
    optimizer.step();
  }
  ++progress_.global_step;
  for (size_t i = 0; i < optimizers_.size(); ++i) {
    auto& optimizer = *optimizers_[i];
    call_hooks<events::AfterOptimizerStep>(
        [&](Callback& c) { c.on_after_optimizer_step(*this, *module_, optimizer); },
        [&](Module& m) { m.on_after_optimizer_step(optimizer); },
        [&] {
          return events::AfterOptimizerStep{event_progress(), static_cast<int64_t>(i),
                                            learning_rates(optimizers_, i)};
        });
  }
  // As Lightning: schedulers other than ReduceLROnPlateau step here, the epoch-interval ones with
  // the epoch's last batch, before its on_train_batch_end.
  step_schedulers(SchedulerInterval::kStep, batch_idx, /*plateau=*/false);
  if (batch_idx + 1 == num_training_batches_)
    step_schedulers(SchedulerInterval::kEpoch, batch_idx, /*plateau=*/false);
}

void Trainer::clip_gradients(torch::optim::Optimizer& optimizer) {
  detail::clip_gradients(optimizer, options_.gradient_clip_val().value_or(0.0),
                         options_.gradient_clip_algorithm());
}

void Trainer::step_schedulers(SchedulerInterval interval, int64_t batch_idx, bool plateau) {
  // As Lightning's _update_learning_rates: in manual optimization the module steps them.
  if (!module_->automatic_optimization()) return;
  // Lightning's _update_learning_rates: a step-interval scheduler counts the batches of the epoch
  // (batch_idx + 1), an epoch-interval one the epochs (current_epoch + 1).
  const int64_t counter =
      interval == SchedulerInterval::kStep ? batch_idx + 1 : progress_.current_epoch + 1;
  for (const auto& config : schedulers_) {
    if (reduces_on_plateau(config) != plateau || config.interval != interval ||
        counter % config.frequency != 0) {
      continue;
    }
    if (!plateau) {
      config.scheduler->step();
      continue;
    }
    const auto value = metrics_.callback_metrics().find(config.monitor);
    if (value == metrics_.callback_metrics().end()) {
      std::string available;
      for (const auto& [name, metric] : metrics_.callback_metrics())
        available += (available.empty() ? "" : ", ") + name;
      // Lightning's messages.
      TRAINBUS_CHECK(!config.strict, "ReduceLROnPlateau conditioned on metric ", config.monitor,
                     " which is not available. Available metrics are: [", available,
                     "]. Condition can be set using `monitor` key in lr scheduler dict");
      warn(detail::concat("ReduceLROnPlateau conditioned on metric ", config.monitor,
                          " which is not available but strict is set to `False`. Skipping "
                          "learning rate update."));
      continue;
    }
    static_cast<ReduceLROnPlateau&>(*config.scheduler).step(value->second);
  }
}

bool Trainer::validates_after_batch(int64_t batch_idx) const {
  if (num_val_batches_ == 0) return false;
  if (options_.check_val_every_n_epoch() &&
      (progress_.current_epoch + 1) % *options_.check_val_every_n_epoch() != 0) {
    return false;
  }
  // As Lightning: a stop that is allowed now validates first, so that the last state is validated.
  if (should_stop_ && can_stop_early()) return true;
  const int64_t counter =
      options_.check_val_every_n_epoch() ? batch_idx : progress_.total_batch_idx;
  return (counter + 1) % val_check_batch_ == 0;
}

void Trainer::set_loop_sizes(int64_t num_training_batches, int64_t num_val_batches) {
  num_training_batches_ = num_training_batches;
  num_val_batches_ = num_val_batches;
  if (options_.val_check_interval().is_fraction()) {
    val_check_batch_ =
        std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(num_training_batches_) *
                                                  options_.val_check_interval().fraction()));
  } else {
    val_check_batch_ = options_.val_check_interval().batches();
    TRAINBUS_CHECK(
        !options_.check_val_every_n_epoch() || num_val_batches_ == 0 ||
            val_check_batch_ <= num_training_batches_,
        "`val_check_interval` (", val_check_batch_,
        ") must be less than or equal to the number of training batches (", num_training_batches_,
        "); set `limit_val_batches = 0` to disable validation, or unset `check_val_every_n_epoch` "
        "to validate every N batches across epochs");
  }
}

}  // namespace trainbus
