#pragma once
/// Logger: what a metrics logger does with the trainer's events (Lightning's Logger, as an
/// observer).

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "events/observer.h"

namespace trainbus::observers {

/// Turns lifecycle events into log_metrics calls the way Lightning's logger connector does
/// (and writes what callbacks log through Trainer::loggers(), events::MetricsLogged):
///  - after a training batch whose optimizer step makes (steps before it + 1) a multiple of
///    `log_every_n_steps`, or any once a stop was requested: the values logged on that batch, at
///    the count of steps before it (Lightning's _batches_that_stepped); none while accumulating;
///  - at each training epoch end: the epoch means logged in the epoch;
///  - after each validation (not the sanity check) and test: their epoch means;
///  - at fit start: the module's hyper-parameters, and resume_at(step) when fit resumed from a
///    checkpoint; hyper-parameters logged straight to the loggers (events::HyperparamsLogged) are
///    added to them, as Lightning's loggers update their `hparams`.
/// Rows carry the epoch and Lightning's step: the count of optimizer steps before the batch (the
/// 0-based step of a batch that stepped), global_step - 1 at an epoch end. A subclass only
/// writes, and must write all its files in files_dir(): log_dir() itself on one process and on
/// rank 0, log_dir()/rank_R on a rank R > 0 it was added on with ObserverOptions::every_rank (told
/// as it is attached), so that ranks never write one file; it creates them no earlier than
/// open_files_in or its first write, so that a rank that does not run it writes nothing. Runs on
/// the observer pool (see events::Observer), one logger at a time. One logger runs on one rank:
/// attached on another, it throws (make a logger for each rank).
class Logger : public events::Observer {
 public:
  explicit Logger(int64_t log_every_n_steps = 50);

  void select_events(events::EventSelection& selection) const override;
  bool is_logger() const override { return true; }
  /// Keeps the rank it runs on and has the subclass open its files in files_dir()
  /// (open_files_in), the first time it is attached; attached again on the same rank, nothing.
  /// Throws MisconfigurationError when attached on another rank than the first: its files are that
  /// rank's, written on the pool's threads (make a logger for each rank). Final: a subclass is told
  /// its directory by open_files_in and its rank by global_rank().
  void attached(const events::Placement& placement) final;
  /// Where its files go: log_dir() on one process and on rank 0; log_dir()/rank_R on a rank R > 0
  /// (rank_files_dir). log_dir() itself stays rank 0's on every rank, as Trainer::log_dir() and
  /// the checkpoints under it do. Valid once attached (else rank 0's).
  std::string files_dir() const;

  void on_fit_start(const events::FitStart& event) override;
  void on_sanity_check_start(const events::SanityCheckStart& event) override {
    sanity_checking_ = true;
  }
  void on_sanity_check_end(const events::SanityCheckEnd& event) override {
    sanity_checking_ = false;
  }
  void on_train_batch_end(const events::TrainBatchEnd& event) override;
  void on_stop_requested(const events::StopRequested& event) override { stop_requested_ = true; }
  void on_train_epoch_end(const events::TrainEpochEnd& event) override;
  void on_validation_epoch_end(const events::ValidationEpochEnd& event) override;
  void on_validation_end(const events::ValidationEnd& event) override;
  void on_test_epoch_end(const events::TestEpochEnd& event) override;
  void on_test_end(const events::TestEnd& event) override;
  /// Values logged straight to the loggers (Trainer::loggers(): LearningRateMonitor), for every
  /// logger or this one by name: a row at the given step, without an epoch (as Lightning's).
  void on_metrics_logged(const events::MetricsLogged& event) override;
  /// Hyper-parameters logged straight to the loggers (LoggerHandle::log_hyperparams), for every
  /// logger or this one by name: added to those it has, then log_hyperparams with them all.
  void on_hyperparams_logged(const events::HyperparamsLogged& event) override;
  void on_fit_end(const events::FitEnd& event) override { finalize("success"); }
  void on_exception(const events::Exception& event) override { finalize("failed"); }

  int64_t log_every_n_steps() const noexcept { return log_every_n_steps_; }

 protected:
  /// One row of values at (step, epoch); epoch -1 for values logged straight to the loggers.
  virtual void log_metrics(const Metrics& metrics, int64_t step, int64_t epoch) = 0;
  /// Every hyper-parameter logged so far (the module's at fit start, and those logged straight
  /// to the loggers), each a typed YAML scalar; called whenever one is added.
  virtual void log_hyperparams(const std::map<std::string, std::string>& hparams) {}
  /// Fit resumed from a checkpoint taken at `step`: what was logged after it is stale.
  virtual void resume_at(int64_t step) {}
  /// End of fit ("success") or an exception ("failed"): flush.
  virtual void finalize(const std::string& status) { flush(); }
  /// Opens its files in `dir` (files_dir() of the rank it is attached on), where it writes from
  /// then on: creates the directory, and what it writes from the start (TensorBoardLogger: its
  /// event file) or continues (CsvLogger: metrics.csv's header). Called once, when the logger is
  /// first attached (ObserverPool::attach, Trainer::add_observer), on the attaching thread,
  /// before any event; not for a logger whose hooks are called directly without being attached
  /// (its files are then rank 0's, in log_dir()). May throw (the directory cannot be created):
  /// the logger is then not attached, and attaching it again calls this again. Default: nothing.
  virtual void open_files_in(const std::string& dir) {}
  /// Renamed open_files_in: a subclass that still overrides this name fails to compile instead of
  /// going uncalled (and writing rank 0's files on a rank R > 0).
  virtual void files_moved_to(const std::string&) final {}
  /// The rank it was attached on (0 before it is attached; then for its hooks: Lightning's
  /// rank_zero_only is `if (global_rank() == 0)`).
  int64_t global_rank() const noexcept { return global_rank_; }

 private:
  static int64_t step_of(const events::Progress& progress) {
    return progress.global_step > 0 ? progress.global_step - 1 : 0;
  }

  void add_hyperparams(const std::map<std::string, std::string>& hparams);

  int64_t log_every_n_steps_;
  int64_t global_rank_ = 0;  // where it was attached; set before any event, on the attaching thread
  bool placed_ = false;      // attached once (global_rank_ is then that rank)
  std::map<std::string, std::string> hparams_;  // every one logged so far, as Lightning's
  bool sanity_checking_ = false;
  bool stop_requested_ = false;   // in this fit (Lightning's trainer.should_stop)
  int64_t last_global_step_ = 0;  // at the last training batch (or the fit's start)
  // Training batches that stepped (Lightning's _batches_that_stepped), counted from the events:
  // an observer that drops events (WhenFull::kDrop) can count fewer.
  int64_t batches_stepped_ = 0;
  // Lightning's _batches_that_stepped during the last training batch and the validation after
  // it: the steps before that batch. None outside a training epoch.
  std::optional<int64_t> batch_step_;
};

/// `root/version_N` for the next N not yet used under `root` (Lightning's version folders);
/// `version_0` when there is none.
std::string next_version_dir(const std::string& root);

/// Where a logger of `log_dir` running on `global_rank` writes: `log_dir` itself for rank 0,
/// `log_dir/rank_R` for a rank R > 0, a whole log directory of its own in the same layout (so
/// that TensorBoard shows each rank as a run, and metrics.csv is read alike). Empty when
/// `log_dir` is (a logger that keeps no directory), never a relative rank_R.
std::string rank_files_dir(const std::string& log_dir, int64_t global_rank);

}  // namespace trainbus::observers
