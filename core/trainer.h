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

#include "checkpoint/buffer_pool.h"
#include "core/callback.h"
#include "checkpoint/writer.h"
#include "data/data_module.h"
#include "core/metrics_collector.h"
#include "core/module.h"
#include "core/optimizer_config.h"
#include "core/trainer_options.h"
#include "base/errors.h"
#include "events/event_bus.h"
#include "events/observer_pool.h"

namespace trainbus {

namespace checkpoint {
struct LoadedCheckpoint;
struct TensorBufferTraits;
struct CheckpointSnapshot;
}  // namespace checkpoint

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
  explicit Trainer(TrainerOptions options = {}, std::vector<std::shared_ptr<Callback>> callbacks = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // ---- entry points ----

  /// Trains `module` on `data`'s train loader, validating on its val loader if it has one.
  void fit(Module& module, DataModule& data, const FitOptions& options = {});
  /// One pass over the val loader; returns the epoch values logged in it.
  Metrics validate(Module& module, DataModule& data);
  /// One pass over the test loader; returns the epoch values logged in it.
  Metrics test(Module& module, DataModule& data);
  /// predict_step over the predict loader; one tensor per batch.
  std::vector<at::Tensor> predict(Module& module, DataModule& data);

  /// Writes a checkpoint of the running fit to the directory `path` (module weights, optimizer
  /// and scheduler state, trainer progress, callback states, RNG state, hyper-parameters, and a
  /// manifest with every part's size and CRC32C), under a temporary name renamed into place.
  /// Runs the on_save_checkpoint hooks first. With `async`, the training thread pays only for a
  /// copy of the tensors; the rest happens on the checkpoint writer (see checkpoint::CheckpointWriter), whose
  /// failure is raised at the next batch, the next save or from fit().
  void save_checkpoint(const std::string& path, SaveCheckpointOptions options = {});
  /// For checkpoint callbacks: an asynchronous save that removes `remove_after_commit` and runs
  /// `after_commit` once it is durable. Returns the path of a pending save it replaced (never
  /// written), if any: only a pending save of the same non-empty `replace_group` is replaced; a
  /// save of another group waits for the pending one to start (see checkpoint::CheckpointJob).
  std::optional<std::string> submit_checkpoint(const std::string& path, bool weights_only,
                                               std::vector<std::string> remove_after_commit = {},
                                               std::function<void(const std::string&)> after_commit = {},
                                               std::string replace_group = {});
  /// For checkpoint callbacks: an asynchronous save is expected within about a step. Prepares the
  /// memory its snapshot copies into on a background thread (allocated, every page touched), so
  /// that the copy on the training thread runs at memory speed. Optional: a save without it is the
  /// same checkpoint, only its copy may stall longer. Call it a step or a validation ahead.
  void prepare_checkpoint();
  /// Blocks until every asynchronous save is durable, then raises a failed one as CheckpointError.
  void wait_for_checkpoints();
  /// The checkpoint writer, for stats; nullptr until the first asynchronous save.
  const checkpoint::CheckpointWriter* checkpoint_writer() const noexcept { return checkpoints_.get(); }
  /// The checkpoint the running fit resumed from, or "" (checkpoint callbacks never delete it).
  const std::string& resumed_from() const noexcept { return resumed_from_; }

  // ---- asynchronous observers ----

  /// Runs `observer` on the trainer's observer pool (see events::Observer): every run drains it before
  /// returning, also when it leaves by an exception; a failure in it is raised as events::ObserverError at
  /// the next batch, epoch end or the end of the run, through on_exception.
  void add_observer(std::shared_ptr<events::Observer> observer, events::ObserverOptions options = {});
  /// Flush barrier: blocks until every observer has handled every event published so far, then
  /// raises a pending observer failure. Callbacks may call it. An observer that handles no event
  /// for observer_stall_timeout is abandoned and raised as an events::ObserverError naming it, rather than
  /// waited for without end.
  void wait_for_observers();
  /// The pool, for stats; nullptr until an observer is added.
  const events::ObserverPool* observer_pool() const noexcept { return observers_.get(); }

  // ---- progress and decisions ----

  /// Lightning's trainer.current_epoch: the epoch being trained, or the number finished after fit.
  int64_t current_epoch() const noexcept { return current_epoch_; }
  /// Optimizer steps taken (batches on which the optimizers stepped).
  int64_t global_step() const noexcept { return global_step_; }
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

  const Metrics& callback_metrics() const noexcept { return metrics_.callback_metrics(); }
  const Metrics& logged_metrics() const noexcept { return metrics_.logged_metrics(); }
  const Metrics& progress_bar_metrics() const noexcept { return metrics_.progress_bar_metrics(); }

  // ---- loop sizes and settings ----

  int64_t num_training_batches() const noexcept { return num_training_batches_; }
  int64_t num_val_batches() const noexcept { return num_val_batches_; }
  /// Whether validation runs right after training batch `batch_idx` of the current epoch (asked
  /// from on_train_batch_end, e.g. by ModelCheckpoint to wait for fresh validation metrics).
  bool validates_after_batch(int64_t batch_idx) const;
  int64_t num_test_batches() const noexcept { return num_test_batches_; }
  int64_t num_predict_batches() const noexcept { return num_predict_batches_; }
  /// max_epochs after Lightning's defaulting (1000, or -1 when only max_steps is set).
  int64_t max_epochs() const noexcept { return max_epochs_; }
  int64_t max_steps() const noexcept { return options_.max_steps; }
  int64_t accumulate_grad_batches() const noexcept { return accumulate_grad_batches_; }
  /// Changes accumulation from the next batch on (GradientAccumulationScheduler does this).
  void set_accumulate_grad_batches(int64_t batches);
  /// Optimizer steps fit will take if nothing stops it early.
  int64_t estimated_stepping_batches() const;

  // ---- objects ----

  const std::vector<std::shared_ptr<Callback>>& callbacks() const noexcept { return callbacks_; }
  /// The optimizers of the running fit (after configure_optimizers).
  const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers() const noexcept { return optimizers_; }
  const std::vector<SchedulerConfig>& lr_scheduler_configs() const noexcept { return schedulers_; }
  /// The module being run; throws outside a run.
  Module& module() const;
  DataModule* datamodule() const noexcept { return data_; }
  /// The bus every lifecycle event is published on.
  events::EventBus& bus() noexcept { return bus_; }
  const TrainerOptions& options() const noexcept { return options_; }
  c10::Device device() const noexcept { return options_.device; }
  const std::string& default_root_dir() const noexcept { return options_.default_root_dir; }
  int global_rank() const noexcept { return 0; }
  int world_size() const noexcept { return 1; }
  bool is_global_zero() const noexcept { return global_rank() == 0; }

 private:
  friend class Module;
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
  void reset_fit_progress();

  // Fit (core/fit_loop.cpp).
  void run_fit(const FitOptions& options);
  void configure_optimizers();
  void run_sanity_check();
  void run_fit_loop();
  bool fit_done() const;
  bool can_stop_early() const;
  void run_training_epoch();
  /// Returns false when the module asked to skip the rest of the epoch.
  bool run_training_batch(int64_t batch_idx);
  void optimize(const StepOutput& outputs, int64_t batch_idx);
  bool should_accumulate(int64_t batch_idx) const;
  void step_schedulers(SchedulerInterval interval);
  void call_train_epoch_end_hooks();
  void clip_gradients(torch::optim::Optimizer& optimizer);

  // Evaluation and prediction (core/evaluation_loop.cpp).
  Metrics run_evaluation(EvalKind kind, int64_t num_batches);
  template <class Hooks>
  Metrics run_eval_loop(DataLoader& loader, int64_t num_batches);
  std::vector<at::Tensor> run_prediction(DataLoader& loader, int64_t num_batches);
  std::shared_ptr<DataLoader> require_loader(std::shared_ptr<DataLoader> loader, const char* getter) const;

  // Checkpoints (core/trainer_checkpoint.cpp).
  /// With `copies_into`, the snapshot holds private copies (made in those buffers); without, it
  /// references the live tensors and must be written before training goes on.
  std::unique_ptr<checkpoint::CheckpointSnapshot> take_snapshot(const std::string& path, bool weights_only,
                                                    checkpoint::BufferPool<checkpoint::TensorBufferTraits>* copies_into);
  /// The writer and the buffers its snapshots copy into, made by the first asynchronous save.
  checkpoint::CheckpointWriter& checkpoint_writer_for_saves();
  std::string resolve_ckpt_path(const std::string& ckpt_path) const;
  void check_checkpoints() {
    if (checkpoints_ && checkpoints_->has_error()) checkpoints_->check();
  }
  void restore_modules_and_callbacks(const checkpoint::LoadedCheckpoint& checkpoint);
  void restore_training_state(const checkpoint::LoadedCheckpoint& checkpoint);

  // Hook dispatch (core/trainer_hooks.h).
  template <class Event, class OnCallback, class OnModule, class MakeEvent>
  void call_hooks(OnCallback&& on_callback, OnModule&& on_module, MakeEvent&& make_event);
  events::Progress progress() const noexcept { return {current_epoch_, global_step_}; }
  /// Sync point, after every batch and loop: raises the events::ObserverError of an observer that failed,
  /// or the CheckpointError of a background save.
  void check_observers() {
    if (observers_ && observers_->has_failure()) observers_->check();
    check_checkpoints();
  }

  TrainerOptions options_;
  int64_t max_epochs_;
  std::vector<std::shared_ptr<Callback>> callbacks_;
  events::EventBus bus_;
  // Declared after bus_: destroyed first, while it can still disconnect from the bus.
  std::unique_ptr<events::ObserverPool> observers_;
  std::map<std::string, uint64_t> dropped_reported_;  // per observer, for report_dropped_events
  // Created by the first asynchronous save. The buffers outlive the writer, whose thread gives
  // snapshots' buffers back to them.
  std::unique_ptr<checkpoint::BufferPool<checkpoint::TensorBufferTraits>> snapshot_buffers_;
  std::unique_ptr<checkpoint::CheckpointWriter> checkpoints_;
  std::string resumed_from_;
  MetricsCollector metrics_;

  Module* module_ = nullptr;
  DataModule* data_ = nullptr;
  std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers_;
  std::vector<SchedulerConfig> schedulers_;
  std::shared_ptr<DataLoader> train_loader_, val_loader_, test_loader_;

  TrainerStatus status_ = TrainerStatus::kInitializing;
  std::optional<Stage> fn_;
  Phase phase_ = Phase::kIdle;
  std::string_view current_fx_;  // hook or step running now, for Module::log

  // Progress of fit (Lightning's loop progress counters).
  int64_t current_epoch_ = 0;     // epochs completed
  int64_t epochs_processed_ = 0;  // epochs whose batches are done (increments before on_train_epoch_end)
  int64_t global_step_ = 0;
  int64_t batches_done_in_epoch_ = 0;
  int64_t total_batch_idx_ = 0;   // batches trained in this fit, across epochs
  bool epoch_batches_finished_ = false;
  int64_t resume_batch_idx_ = 0;  // first batch of the first epoch after a mid-epoch resume
  bool restarting_ = false;
  bool should_stop_ = false;
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
