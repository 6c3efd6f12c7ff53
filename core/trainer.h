#pragma once
/// Trainer: owns the loop and publishes every lifecycle point to callbacks, the module and the bus.

#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "base/errors.h"
#include "core/callback.h"
#include "core/checkpoint_connector.h"
#include "core/fit_progress.h"
#include "core/logger_handle.h"
#include "core/metrics_collector.h"
#include "core/module.h"
#include "core/optimizer_config.h"
#include "core/trainer_options.h"
#include "data/data_module.h"
#include "events/event_bus.h"
#include "events/observer_pool.h"

namespace trainbus {

namespace replay {
class ReplaySession;
}

/// Where a run is (Lightning's TrainerStatus).
enum class TrainerStatus { kInitializing, kRunning, kFinished, kInterrupted };

/// Runs fit, validate, test and predict on the calling thread (the training thread).
///
/// At each lifecycle point it calls, in order: every callback's hook (tuner callbacks first, then
/// the list order, checkpoint callbacks last), the module's hook, then the bus's subscribers to
/// the matching event type. Hooks fire in the order of Lightning's test_hooks. An exception from a
/// step, hook or subscriber fires every callback's on_exception and an events::Exception, then
/// leaves the entry point unchanged; teardown hooks do not run then (as Lightning).
class Trainer {
 public:
  /// Throws MisconfigurationError for a bad option or two stateful callbacks sharing a state_key.
  explicit Trainer(TrainerOptions options = {},
                   std::vector<std::shared_ptr<Callback>> callbacks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // ---- entry points ----

  /// Trains `module` on `data`'s train loader, validating on its val loader if it has one.
  void fit(Module& module, DataModule& data, const FitOptions& options = {});
  /// One pass over the val loader (over each of DataModule::val_dataloaders in turn); returns the
  /// epoch values logged in it, of every loader (evaluation_results() has them per loader). With a
  /// ckpt_path, the module's weights (and the data module's state) are loaded from that
  /// checkpoint first.
  Metrics validate(Module& module, DataModule& data, const EvaluateOptions& options = {});
  /// One pass over the test loader (each of test_dataloaders in turn); returns the epoch values
  /// logged in it. ckpt_path as validate.
  Metrics test(Module& module, DataModule& data, const EvaluateOptions& options = {});
  /// predict_step over the predict loader; one tensor per batch (none with
  /// PredictOptions().return_predictions(false)).
  std::vector<at::Tensor> predict(Module& module, DataModule& data,
                                  const PredictOptions& options = {});
  /// The predictions kept so far by the running predict, on the CPU (Lightning's
  /// predict_loop.predictions): what callbacks::BasePredictionWriter::write_on_epoch_end gets.
  /// Kept when they are returned or a callback wants_epoch_predictions(); empty outside predict.
  const std::vector<at::Tensor>& predictions() const noexcept { return predictions_; }

  /// Writes a checkpoint of the running fit to the directory `path` (module weights, optimizer
  /// and scheduler state, trainer progress, callback states, RNG state, hyper-parameters, and a
  /// manifest with every part's size and CRC32C), under a temporary name renamed into place.
  /// Runs the on_save_checkpoint hooks first. With `async`, the training thread pays only for a
  /// copy of the state; the rest happens on the checkpoint writer, whose failure is raised at the
  /// next batch, the next save or from fit(). In data-parallel training it is a collective: call
  /// it on every rank (rank 0 writes, all meet at a barrier), as Lightning's.
  void save_checkpoint(const std::string& path, SaveCheckpointOptions options = {});
  /// The checkpoint machinery, for checkpoint callbacks: asynchronous saves with what follows them,
  /// buffers prepared ahead, waiting for the writer, the checkpoint the fit resumed from.
  CheckpointConnector& checkpoints() noexcept { return checkpoints_; }
  const CheckpointConnector& checkpoints() const noexcept { return checkpoints_; }

  // ---- asynchronous observers ----

  /// Runs `observer` on the trainer's observer pool (see events::Observer): every run drains it
  /// before returning, also when it leaves by an exception; a failure in it is raised as
  /// events::ObserverError at the next batch, epoch end or the end of the run, through
  /// on_exception. In data-parallel training only rank 0 runs it, unless options.every_rank().
  /// It is told this trainer's rank as it is attached (events::Observer::attached), so that one
  /// that writes files on every rank writes its own (an error doing so is thrown from here).
  /// A progress bar (events::Observer::is_progress_bar) with enable_progress_bar false is refused,
  /// and so is a second one.
  void add_observer(std::shared_ptr<events::Observer> observer,
                    events::ObserverOptions options = {});
  /// Flush barrier: blocks until every observer has handled every event published so far, then
  /// raises a pending observer failure. Callbacks may call it. An observer that handles no event
  /// for observer_stall_timeout is abandoned and raised as an events::ObserverError naming it,
  /// rather than waited for without end.
  void wait_for_observers();
  /// The pool, for stats; nullptr until an observer is added.
  const events::ObserverPool* observer_pool() const noexcept { return observers_.get(); }

  // ---- loggers (Lightning's trainer.loggers) ----

  /// The observers that are loggers (events::Observer::is_logger: CSV, TensorBoard), in the order
  /// they were added; callbacks log values of their own through them.
  const std::vector<LoggerHandle>& loggers() const noexcept { return loggers_; }
  /// Lightning's trainer.logger: the first logger, or nullptr when there is none.
  const LoggerHandle* logger() const noexcept { return loggers_.empty() ? nullptr : &loggers_[0]; }
  /// Lightning's trainer.log_dir: the first logger's directory, else default_root_dir.
  std::string log_dir() const;
  /// Publishes events::MetricsLogged: `metrics` as a row at `step` in every logger, or only in the
  /// one named `logger`. What LoggerHandle::log_metrics calls.
  void log_metrics(const Metrics& metrics, int64_t step, const std::string& logger = {});
  /// Publishes events::HyperparamsLogged: `params` added to the hyper-parameters of every logger,
  /// or only of the one named `logger`. What LoggerHandle::log_hyperparams calls.
  void log_hyperparams(const StateDict& params, const std::string& logger = {});

  // ---- progress and decisions ----

  /// Lightning's trainer.current_epoch: the epoch being trained, or the number finished after fit.
  int64_t current_epoch() const noexcept { return progress_.current_epoch; }
  /// Optimizer steps taken: batches on which the optimizers stepped; in manual optimization every
  /// LightningOptimizer::step (Lightning's optim_step_progress), so several per batch may count.
  int64_t global_step() const noexcept { return progress_.global_step; }
  /// Lightning's fit_loop.epoch_loop._batches_that_stepped, the step loggers and logging callbacks
  /// use: global_step before the current batch's own step, held through its on_train_batch_end
  /// and the validation that follows it; global_step outside a training batch.
  int64_t batches_that_stepped() const noexcept { return batches_that_stepped_; }
  /// Lightning's _LoggerConnector.should_update_logs: whether the loggers take step values now.
  /// In training, (batches_that_stepped + 1) a multiple of log_every_n_steps; in a validation,
  /// test or prediction loop, the batches it has begun (1-based, 0 before the first) a multiple of
  /// it; either way also once a stop was asked for. True outside any loop.
  bool should_update_logs() const noexcept;
  /// Where the fit is, down to the batch in the epoch.
  const FitProgress& fit_progress() const noexcept { return progress_; }
  /// True once a stop was requested in this run. Honoured when min_epochs/min_steps allow.
  bool should_stop() const noexcept { return should_stop_; }
  /// Asks fit to stop at the next point it may (Lightning's `trainer.should_stop = True`). Requests
  /// accumulate and never cancel each other; `reason` is kept in stop_reasons().
  void request_stop(std::string reason = {});
  const std::vector<std::string>& stop_reasons() const noexcept { return stop_reasons_; }

  TrainerStatus status() const noexcept { return status_; }
  /// The entry point running (fit/validate/test/predict), if any.
  std::optional<Stage> fn() const noexcept { return fn_; }
  bool training() const noexcept { return phase_ == Phase::kTraining; }
  bool validating() const noexcept { return phase_ == Phase::kValidating; }
  bool sanity_checking() const noexcept { return phase_ == Phase::kSanityChecking; }
  bool testing() const noexcept { return phase_ == Phase::kTesting; }
  bool predicting() const noexcept { return phase_ == Phase::kPredicting; }

  // ---- metrics (see Module::log) ----

  const Metrics& callback_metrics() const { return metrics_.callback_metrics(); }
  /// Lightning's `trainer.callback_metrics[name] = value`, for a callback: LearningRateMonitor adds
  /// the rates it logs, so that a checkpoint or early stopping can monitor them.
  void set_callback_metric(const std::string& name, double value) {
    metrics_.set_callback_metric(name, value);
  }
  const Metrics& logged_metrics() const { return metrics_.logged_metrics(); }
  const Metrics& progress_bar_metrics() const { return metrics_.progress_bar_metrics(); }
  /// What the last validation or test (also fit's) logged, one Metrics per loader, as the list
  /// Lightning's trainer.validate / test return: the epoch values logged while that loader ran
  /// (their names end in `/dataloader_idx_<i>` with several loaders) and those logged in the
  /// epoch-end hooks. validate / test return all of them in one Metrics.
  const std::vector<Metrics>& evaluation_results() const noexcept { return evaluation_results_; }

  // ---- loop sizes and settings ----

  int64_t num_training_batches() const noexcept { return num_training_batches_; }
  /// Validation batches of all val loaders together (Lightning's sum(trainer.num_val_batches)).
  int64_t num_val_batches() const noexcept { return num_val_batches_; }
  /// Per val loader, after limit_val_batches (Lightning's trainer.num_val_batches, a list).
  const std::vector<int64_t>& num_val_batches_per_dataloader() const noexcept {
    return val_batches_per_loader_;
  }
  /// Whether validation runs right after training batch `batch_idx` of the current epoch (asked
  /// from on_train_batch_end, e.g. by ModelCheckpoint to wait for fresh validation metrics).
  bool validates_after_batch(int64_t batch_idx) const;
  int64_t num_test_batches() const noexcept { return num_test_batches_; }
  const std::vector<int64_t>& num_test_batches_per_dataloader() const noexcept {
    return test_batches_per_loader_;
  }
  int64_t num_predict_batches() const noexcept { return num_predict_batches_; }
  /// max_epochs after Lightning's defaulting (1000, or -1 when only max_steps is set), or what
  /// set_max_epochs made it for the running fit.
  int64_t max_epochs() const noexcept { return max_epochs_; }
  /// Changes the epoch limit of the running fit (Lightning's `trainer.fit_loop.max_epochs = N`),
  /// checked before each epoch: StochasticWeightAveraging adds its BatchNorm epoch this way. Every
  /// fit starts from TrainerOptions::max_epochs again. Throws MisconfigurationError for a value
  /// < -1.
  void set_max_epochs(int64_t epochs);
  /// Lightning's `trainer.fit_loop._skip_backward`: while true, training batches run
  /// training_step and the batch hooks but no zero_grad, backward, optimizer step or scheduler
  /// step, so global_step does not advance (StochasticWeightAveraging's BatchNorm epoch, a forward
  /// pass in train mode). Every fit starts with it false.
  bool skip_backward() const noexcept { return skip_backward_; }
  /// Like every setter here: from the training thread, during fit only (MisconfigurationError
  /// otherwise). Set on the first batch of an accumulation window, that window's zero_grad is
  /// skipped too: set it at an epoch start, as StochasticWeightAveraging does.
  void set_skip_backward(bool skip);
  int64_t max_steps() const noexcept { return options_.max_steps(); }
  int64_t accumulate_grad_batches() const noexcept { return accumulate_grad_batches_; }
  /// Changes accumulation from the next batch on (GradientAccumulationScheduler does this).
  void set_accumulate_grad_batches(int64_t batches);
  /// Optimizer steps fit will take if nothing stops it early (Lightning's
  /// trainer.estimated_stepping_batches): ceil(num_training_batches / accumulate_grad_batches) *
  /// max(max_epochs, 1), capped by max_steps; max_steps when max_epochs is -1 (so -1 when neither
  /// limits the fit, where Lightning says inf). Right from setup on: asked before the fit has
  /// loaded its data (setup, configure_model, configure_optimizers), it loads the train and val
  /// loaders then, once, as Lightning does.
  int64_t estimated_stepping_batches();
  /// Takes the train and val loaders from the data module again and sizes the loops anew
  /// (Lightning's `_reset_dataloaders`: `fit_loop._combined_loader = None; setup_data()`), after
  /// the data module's batch size changed (the BatchSizeFinder at on_fit_start). Each new loader
  /// takes its predecessor's state_dict (the shuffle seed), so only the batching changes. From
  /// the training thread, during fit, outside the epochs (setup, on_fit_start): throws
  /// MisconfigurationError otherwise.
  void reload_dataloaders();

  // ---- objects ----

  const std::vector<std::shared_ptr<Callback>>& callbacks() const noexcept { return callbacks_; }
  /// The callbacks of type C (or derived from it), in the trainer's order:
  /// `trainer.find_callbacks<callbacks::ModelCheckpoint>()`.
  template <class C>
  std::vector<C*> find_callbacks() const {
    std::vector<C*> found;
    for (const auto& callback : callbacks_) {
      if (auto* typed = dynamic_cast<C*>(callback.get())) found.push_back(typed);
    }
    return found;
  }
  /// The first callback of type C, or nullptr.
  template <class C>
  C* find_callback() const {
    for (const auto& callback : callbacks_) {
      if (auto* typed = dynamic_cast<C*>(callback.get())) return typed;
    }
    return nullptr;
  }
  /// The optimizers of the running fit (after configure_optimizers).
  const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers() const noexcept {
    return optimizers_;
  }
  /// The LR schedulers fit steps: configure_optimizers' until set_lr_scheduler_configs.
  const std::vector<SchedulerConfig>& lr_scheduler_configs() const noexcept { return schedulers_; }
  /// Replaces the LR schedulers the running fit steps (Lightning's assignment to
  /// `trainer.lr_scheduler_configs`), as StochasticWeightAveraging swaps in its SWALR. Checkpoints
  /// keep the step counts of configure_optimizers' schedulers, not of these, so that a resumed
  /// fit's configure_optimizers matches them: the callback that installs a scheduler keeps its
  /// state and installs it again on resume. Throws MisconfigurationError for a null scheduler, a
  /// frequency < 1 or an optimizer_idx without an optimizer.
  void set_lr_scheduler_configs(std::vector<SchedulerConfig> configs);
  /// The module being run; throws outside a run.
  Module& module() const;
  DataModule* datamodule() const noexcept { return data_; }
  /// The running fit's training loader (Lightning's trainer.train_dataloader), from before
  /// on_fit_start on; null outside a fit.
  const std::shared_ptr<DataLoader>& train_dataloader() const noexcept { return train_loader_; }
  /// The val loaders of the running validate, or of the fit (Lightning's trainer.val_dataloaders),
  /// from before on_validation_start on; empty before a run took them.
  const std::vector<std::shared_ptr<DataLoader>>& val_dataloaders() const noexcept {
    return val_loaders_;
  }
  /// The running test's loaders (Lightning's trainer.test_dataloaders), from before on_test_start.
  const std::vector<std::shared_ptr<DataLoader>>& test_dataloaders() const noexcept {
    return test_loaders_;
  }
  /// The running predict's loader (Lightning's trainer.predict_dataloaders), from before
  /// on_predict_start; null outside a predict.
  const std::shared_ptr<DataLoader>& predict_dataloader() const noexcept { return predict_loader_; }
  /// The bus every lifecycle event is published on.
  events::EventBus& bus() noexcept { return bus_; }
  const TrainerOptions& options() const noexcept { return options_; }
  /// The device this rank trains on: TrainerOptions::device, which a strategy may refine (under
  /// DDP, cuda without an index is cuda:LOCAL_RANK).
  c10::Device device() const { return strategy_->root_device(options_.device()); }
  const std::string& default_root_dir() const noexcept { return options_.default_root_dir(); }
  /// How the ranks of a job cooperate (TrainerOptions::strategy; one process by default).
  distributed::Strategy& strategy() const noexcept { return *strategy_; }
  /// This process's rank in a data-parallel job, 0 on one process.
  int global_rank() const noexcept { return strategy_->global_rank(); }
  int local_rank() const noexcept { return strategy_->local_rank(); }
  int node_rank() const noexcept { return strategy_->node_rank(); }
  int world_size() const noexcept { return strategy_->world_size(); }
  bool is_global_zero() const noexcept { return global_rank() == 0; }

  /// True while a replay::ReplaySession drives this trainer through a recording: its state is the
  /// recorded one, the module a stand-in, checkpoint saves are dry runs (nothing is written or
  /// removed; see CheckpointConnector::dry_run_saves) and stop requests are noted, not published.
  bool replaying() const noexcept { return replaying_; }

 private:
  // Throws MisconfigurationError naming `setter` unless a fit is running.
  void require_running_fit(const char* setter) const;
  friend class Module;
  friend class LightningOptimizer;
  friend class CheckpointConnector;
  friend class replay::ReplaySession;
  enum class Phase { kIdle, kTraining, kValidating, kSanityChecking, kTesting, kPredicting };
  enum class EvalKind { kValidation, kTest };

  // Entry-point envelope: attach, run `body`, on_exception on failure, detach.
  template <class Body>
  void run_entry_point(Stage stage, Module& module, DataModule& data, Body&& body);
  void notify_exception(const std::exception& error);
  // On the way out of a failing run: waits for the observers (bounded) and reports their failures
  // as warnings, so that the original exception is the one that leaves.
  void report_observer_failures() noexcept;
  void report_dropped_events();
  void call_setup_hooks(Stage stage);
  void call_teardown_hooks(Stage stage);
  void apply_run_settings();
  // At the start of a run: the progress bar of enable_progress_bar, unless one is attached.
  void attach_default_progress_bar();
  void reset_fit_progress();
  /// Lightning's max_epochs default: 1000, or -1 (no limit) when only max_steps is set.
  static int64_t defaulted_max_epochs(const TrainerOptions& options) noexcept {
    return options.max_epochs().value_or(options.max_steps() == -1 ? 1000 : -1);
  }

  // Fit (core/fit_loop.cpp).
  void run_fit(const FitOptions& options);
  /// Where every rank passes (after configure_optimizers): take_fit_data, then in data-parallel
  /// training the loaders' shuffle seeds become rank 0's (a collective), unless done in this fit.
  void load_fit_data();
  /// Loads the train and val loaders, splits them for this rank without a collective, and sizes
  /// the loops from them, unless done in this fit; for estimated_stepping_batches().
  void take_fit_data();
  /// Batches per training epoch and per validation, and the batch after which validation runs.
  void set_loop_sizes(int64_t num_training_batches, int64_t num_val_batches);
  /// set_loop_sizes from the loaders and the limit_* options.
  void size_fit_loops();
  void configure_optimizers();
  void run_sanity_check();
  void run_fit_loop();
  bool fit_done() const;
  bool can_stop_early() const;
  void run_training_epoch();
  /// Returns false when the module asked to skip the rest of the epoch.
  bool run_training_batch(int64_t batch_idx);
  /// Zero grad, backward on `loss` (undefined: the step returned none) and the optimizer step.
  void optimize(const at::Tensor& loss, int64_t batch_idx);
  /// Automatic optimization of what training_step returned: optimize() on its loss (scaled for
  /// accumulation), which then replaces it, detached, in `outputs`.
  void optimize_step_output(StepOutput& outputs, int64_t batch_idx);
  bool should_accumulate(int64_t batch_idx) const;
  void step_schedulers(SchedulerInterval interval, int64_t batch_idx, bool plateau);
  void call_train_epoch_end_hooks();
  /// In data-parallel training: a stop asked on any rank becomes this rank's too (a collective).
  void agree_on_stop();
  /// In data-parallel training: gives `loader` this rank's share of the data; with
  /// `agree_on_seeds`, its shuffle seed becomes rank 0's (a collective), else it keeps its own.
  void distribute(DataLoader& loader, bool agree_on_seeds = true);
  /// In data-parallel training: the epoch values of `results` become the means over every rank's
  /// samples (all of them in evaluation, those logged with sync_dist in training).
  void synchronize_epoch_metrics(MetricsCollector::Results results);
  void clip_gradients(torch::optim::Optimizer& optimizer);

  // Manual optimization (core/manual_optimization.cpp).
  /// At the start of fit: refuses what manual optimization cannot do (Lightning's
  /// __verify_manual_optimization_support) and warns of scheduler keys it ignores.
  void verify_manual_optimization_support();
  /// Module::manual_backward: the backward hooks around loss.backward().
  void manual_backward(const at::Tensor& loss);
  /// LightningOptimizer::step of optimizer `index`.
  at::Tensor manual_optimizer_step(std::size_t index, const std::function<at::Tensor()>& closure);

  // Evaluation and prediction (core/evaluation_loop.cpp).
  /// One validation or test over all its loaders; the sanity check limits each loader to
  /// `max_batches_per_loader`.
  Metrics run_evaluation(EvalKind kind, std::optional<int64_t> max_batches_per_loader = {});
  template <class Hooks>
  Metrics run_eval_loop(const std::vector<std::shared_ptr<DataLoader>>& loaders,
                        const std::vector<int64_t>& num_batches);
  /// Checks that no loader is null (and, when `required`, that there is one).
  std::vector<std::shared_ptr<DataLoader>> require_loaders(
      std::vector<std::shared_ptr<DataLoader>> loaders, const char* getter, bool required) const;
  /// The batches each loader runs, after the limit_*_batches option `option`.
  std::vector<int64_t> size_eval_loaders(const std::vector<std::shared_ptr<DataLoader>>& loaders,
                                         const BatchLimit& limit, const char* option) const;
  void run_prediction(DataLoader& loader, int64_t num_batches, bool keep_predictions,
                      bool return_predictions);
  std::shared_ptr<DataLoader> require_loader(std::shared_ptr<DataLoader> loader,
                                             const char* getter) const;

  // Hook dispatch (core/trainer_hooks.h).
  template <class Event, class OnCallback, class OnModule, class MakeEvent>
  void call_hooks(OnCallback&& on_callback, OnModule&& on_module, MakeEvent&& make_event);
  events::Progress event_progress() const noexcept {
    return {progress_.current_epoch, progress_.global_step};
  }
  /// Sync point, after every batch and loop: raises the events::ObserverError of an observer that
  /// failed, or the CheckpointError of a background save.
  void check_observers() {
    if (observers_ && observers_->has_failure()) observers_->check();
    checkpoints_.check();
  }

  TrainerOptions options_;
  std::shared_ptr<distributed::Strategy> strategy_;
  int64_t max_epochs_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  events::EventBus bus_;
  // Declared after bus_: destroyed first, while it can still disconnect from the bus.
  std::unique_ptr<events::ObserverPool> observers_;
  std::vector<LoggerHandle> loggers_;
  bool progress_bar_attached_ = false;
  std::map<std::string, uint64_t> dropped_reported_;  // per observer, for report_dropped_events
  // After the callbacks: its writer, whose saves may run callbacks' after_commit, is joined first.
  CheckpointConnector checkpoints_{*this};
  MetricsCollector metrics_;

  Module* module_ = nullptr;
  DataModule* data_ = nullptr;
  std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers_;
  std::vector<SchedulerConfig> schedulers_;             // stepped by the fit
  std::vector<SchedulerConfig> configured_schedulers_;  // configure_optimizers', in checkpoints
  std::shared_ptr<DataLoader> train_loader_;
  std::vector<std::shared_ptr<DataLoader>> val_loaders_, test_loaders_;
  std::shared_ptr<DataLoader> predict_loader_;  // during a predict
  std::vector<int64_t> val_batches_per_loader_, test_batches_per_loader_;
  std::vector<Metrics> evaluation_results_;  // of the last validation or test, per loader
  std::vector<at::Tensor> predictions_;      // of the running predict

  TrainerStatus status_ = TrainerStatus::kInitializing;
  std::optional<Stage> fn_;
  Phase phase_ = Phase::kIdle;
  std::string_view current_fx_;  // hook or step running now, for Module::log

  FitProgress progress_;
  int64_t batches_that_stepped_ = 0;
  int64_t training_batch_idx_ = 0;  // of the running training batch, for manual optimization
  // Size of the running epoch's first training batch (of the first one run, in a resumed epoch);
  // 0 before any. Checkpoints keep it times the ranks, without reading a batch again.
  int64_t train_batch_size_ = 0;
  int64_t eval_batches_begun_ = 0;  // of the running evaluation or prediction loop
  // Lightning's fit_loop.restarting after a resume: from a checkpoint saved mid-epoch, or with
  // max_steps set. Skips the sanity check.
  bool restarting_ = false;
  bool replaying_ = false;
  bool should_stop_ = false;
  bool skip_backward_ = false;
  // Whether the fit's loaders have rank 0's shuffle seeds (load_fit_data), not only their split.
  bool fit_data_agreed_ = false;
  std::vector<std::string> stop_reasons_;
  int64_t accumulate_grad_batches_;
  bool warned_no_loss_ = false;
  bool warned_stop_refused_ = false;

  int64_t num_training_batches_ = 0;
  int64_t num_val_batches_ = 0;
  int64_t num_test_batches_ = 0;
  int64_t num_predict_batches_ = 0;
  int64_t val_check_batch_ = 0;
};

}  // namespace trainbus
