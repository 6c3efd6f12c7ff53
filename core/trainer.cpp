#include "core/trainer.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include <ATen/Context.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <boost/core/demangle.hpp>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "checkpoint/snapshot.h"
#include "core/callback_order.h"
#include "core/default_callbacks.h"
#include "core/detail/hparams_text.h"
#include "core/detail/save_agreement.h"
#include "core/detail/trainer_hooks.h"
#include "core/tensor_ref.h"

namespace trainbus {
namespace {

void check_options(const TrainerOptions& o) {
  TRAINBUS_CHECK(!o.max_epochs() || *o.max_epochs() >= -1,
                 "`max_epochs` must be >= -1 (-1: no limit), got ", *o.max_epochs());
  TRAINBUS_CHECK(!o.min_epochs() || *o.min_epochs() >= 0, "`min_epochs` must be >= 0, got ",
                 *o.min_epochs());
  TRAINBUS_CHECK(o.max_steps() >= -1, "`max_steps` must be >= -1 (-1: no limit), got ",
                 o.max_steps());
  TRAINBUS_CHECK(!o.min_steps() || *o.min_steps() >= 0, "`min_steps` must be >= 0, got ",
                 *o.min_steps());
  o.limit_train_batches().validate("limit_train_batches");
  o.limit_val_batches().validate("limit_val_batches");
  o.limit_test_batches().validate("limit_test_batches");
  o.limit_predict_batches().validate("limit_predict_batches");
  TRAINBUS_CHECK(
      !o.check_val_every_n_epoch() || *o.check_val_every_n_epoch() >= 1,
      "`check_val_every_n_epoch` must be >= 1 (or unset to count batches across epochs), got ",
      *o.check_val_every_n_epoch());
  if (o.val_check_interval().is_fraction()) {
    TRAINBUS_CHECK(
        o.val_check_interval().fraction() > 0.0 && o.val_check_interval().fraction() <= 1.0,
        "`val_check_interval` as a fraction of the epoch must be in (0.0, 1.0], got ",
        o.val_check_interval().fraction());
    TRAINBUS_CHECK(o.check_val_every_n_epoch().has_value(),
                   "`val_check_interval` must be an integer number of batches when "
                   "`check_val_every_n_epoch` is unset, got the fraction ",
                   o.val_check_interval().fraction());
  } else {
    TRAINBUS_CHECK(o.val_check_interval().batches() >= 1,
                   "`val_check_interval` must be >= 1 batch, got ",
                   o.val_check_interval().batches());
  }
  TRAINBUS_CHECK(o.num_sanity_val_steps() >= -1,
                 "`num_sanity_val_steps` must be >= -1 (-1: all), got ", o.num_sanity_val_steps());
  TRAINBUS_CHECK(o.accumulate_grad_batches() >= 1, "`accumulate_grad_batches` must be >= 1, got ",
                 o.accumulate_grad_batches());
  TRAINBUS_CHECK(!o.gradient_clip_val() || *o.gradient_clip_val() >= 0.0,
                 "`gradient_clip_val` must be >= 0, got ", *o.gradient_clip_val());
  TRAINBUS_CHECK(o.log_every_n_steps() >= 1, "`log_every_n_steps` must be >= 1, got ",
                 o.log_every_n_steps());
  TRAINBUS_CHECK(o.observer_threads() >= 1, "`observer_threads` must be >= 1, got ",
                 o.observer_threads());
  TRAINBUS_CHECK(o.observer_kick_interval().count() > 0 &&
                     o.observer_kick_interval() <= std::chrono::seconds(1),
                 "`observer_kick_interval` must be positive and at most 1 s (observers flush no "
                 "more often than the pool is kicked), got ",
                 o.observer_kick_interval().count(), " us");
  TRAINBUS_CHECK(o.observer_stall_timeout().count() > 0,
                 "`observer_stall_timeout` must be positive, got ",
                 o.observer_stall_timeout().count(), " ms");
  TRAINBUS_CHECK(!o.default_root_dir().empty(),
                 "`default_root_dir` must not be empty; use \".\" for the "
                 "current directory");
}

}  // namespace

Trainer::Trainer(TrainerOptions options, std::vector<std::shared_ptr<Callback>> callbacks)
    : options_(std::move(options)),
      strategy_(options_.strategy() ? options_.strategy()
                                    : std::make_shared<distributed::SingleProcessStrategy>()),
      max_epochs_(defaulted_max_epochs(options_)),
      callbacks_(order_callbacks(with_default_callbacks(options_, std::move(callbacks)))),
      accumulate_grad_batches_(options_.accumulate_grad_batches()) {
  check_options(options_);
  // The checkpoint saves' agreement (an all-reduce of doubles) holds ranks up to this many.
  TRAINBUS_CHECK(strategy_->environment().world_size <= detail::kSaveAgreementMaxWorld,
                 "trainbus agrees checkpoint saves across at most ", detail::kSaveAgreementMaxWorld,
                 " ranks; this job has ", strategy_->environment().world_size,
                 ": run fewer ranks (--nnodes x --nproc-per-node)");
}

Trainer::~Trainer() = default;

void Trainer::save_checkpoint(const std::string& path, SaveCheckpointOptions options) {
  checkpoints_.save(path, options);
}

Module& Trainer::module() const {
  TRAINBUS_CHECK(module_ != nullptr, "Trainer::module(): no fit/validate/test/predict is running");
  return *module_;
}

void Trainer::request_stop(std::string reason) {
  should_stop_ = true;
  stop_reasons_.push_back(reason.empty() ? std::string("unspecified") : std::move(reason));
  if (replaying_) return;  // the bus carries the recorded events only; the session notes this
  bus_.publish_lazy<events::StopRequested>([&] {
    return events::StopRequested{event_progress(), stop_reasons_.back(),
                                 current_fx_.empty() ? "none" : std::string(current_fx_)};
  });
}

bool Trainer::should_update_logs() const noexcept {
  // As Lightning's _LoggerConnector.should_update_logs, where the "step" is the active loop's:
  // the fit loop's _batches_that_stepped + 1, or an evaluation or prediction loop's
  // batch_progress.current.ready.
  int64_t step = 0;
  switch (phase_) {
    case Phase::kValidating:
    case Phase::kSanityChecking:
    case Phase::kTesting:
    case Phase::kPredicting:
      step = eval_batches_begun_;
      break;
    case Phase::kTraining:
      step = batches_that_stepped_ + 1;
      break;
    case Phase::kIdle:
      if (fn_ != Stage::kFit) return true;  // no active loop
      step = batches_that_stepped_ + 1;     // a fit between its loops: the fit loop's
      break;
  }
  return step % options_.log_every_n_steps() == 0 || should_stop_;
}

void Trainer::set_accumulate_grad_batches(int64_t batches) {
  TRAINBUS_CHECK(batches >= 1, "Trainer::set_accumulate_grad_batches: must be >= 1, got ", batches);
  // Lightning's GradientAccumulationScheduler refuses manual optimization in the same words.
  TRAINBUS_CHECK(batches == 1 || module_ == nullptr || module_->automatic_optimization(),
                 "Automatic gradient accumulation is not supported for manual optimization: "
                 "Trainer::set_accumulate_grad_batches(",
                 batches,
                 ") (e.g. from a GradientAccumulationScheduler) needs automatic optimization. "
                 "Remove the callback or switch to automatic optimization.");
  accumulate_grad_batches_ = batches;
}

void Trainer::require_running_fit(const char* setter) const {
  // fn_ stays set until the fit returns: on_exception may set these back too.
  TRAINBUS_CHECK(fn_ == Stage::kFit, "Trainer::", setter,
                 " changes the running fit (from a callback or module hook on the training "
                 "thread); every fit starts from TrainerOptions, so outside one it would do "
                 "nothing: set the option instead");
}

void Trainer::set_max_epochs(int64_t epochs) {
  require_running_fit("set_max_epochs");
  TRAINBUS_CHECK(epochs >= -1, "Trainer::set_max_epochs: must be >= -1 (-1: no limit), got ",
                 epochs);
  max_epochs_ = epochs;
}

void Trainer::set_skip_backward(bool skip) {
  require_running_fit("set_skip_backward");
  skip_backward_ = skip;
}

void Trainer::set_lr_scheduler_configs(std::vector<SchedulerConfig> configs) {
  require_running_fit("set_lr_scheduler_configs");
  validate_scheduler_configs(configs, optimizers_.size(), "Trainer::set_lr_scheduler_configs");
  schedulers_ = std::move(configs);
}

int64_t Trainer::estimated_stepping_batches() {
  // As Lightning's Trainer.estimated_stepping_batches.
  if (max_epochs_ == -1) return options_.max_steps();
  // As Lightning, which loads the train dataloader here ("Loading `train_dataloader` to estimate
  // number of stepping batches.") when setup or configure_optimizers asks before the fit has.
  // No collective (a hook may ask on one rank only): the ranks agree on the loaders' seeds later,
  // where every rank passes.
  if (fn_ == Stage::kFit && !replaying_ && data_ != nullptr) take_fit_data();
  const int64_t per_epoch =
      (num_training_batches_ + accumulate_grad_batches_ - 1) / accumulate_grad_batches_;
  const int64_t by_epochs = per_epoch * std::max<int64_t>(max_epochs_, 1);
  return options_.max_steps() == -1 ? by_epochs : std::min(by_epochs, options_.max_steps());
}

void Trainer::add_observer(std::shared_ptr<events::Observer> observer,
                           events::ObserverOptions options) {
  TRAINBUS_CHECK(status_ != TrainerStatus::kRunning,
                 "Trainer::add_observer: add observers before fit/validate/test/predict");
  const bool progress_bar = observer->is_progress_bar();
  if (progress_bar) {
    // As Lightning's _CallbackConnector._configure_progress_bar.
    TRAINBUS_CHECK(options_.enable_progress_bar(),
                   "Trainer was configured with `enable_progress_bar=False` but found `",
                   observer->name(),
                   "` among its observers; do not add it, or leave enable_progress_bar true");
    TRAINBUS_CHECK(!progress_bar_attached_,
                   "Trainer::add_observer: a progress bar is attached already (one added before, "
                   "or the default one enable_progress_bar attached when an earlier run started), "
                   "and `",
                   observer->name(),
                   "` would be a second; only one is supported, as in Lightning: add yours before "
                   "the first run");
  }
  if (!is_global_zero() && !options.every_rank()) {  // logs and bars come from rank 0
    if (progress_bar) progress_bar_attached_ = true;
    return;
  }
  if (!observers_) {
    observers_ = std::make_unique<events::ObserverPool>(
        options_.observer_threads(), snapshot_to_cpu, options_.observer_stall_timeout(),
        options_.observer_kick_interval());
  }
  const bool logger = observer->is_logger();
  const std::string name = observer->name();
  const std::string dir = observer->log_dir();
  // Where it runs: an observer that writes files names them by this rank (observers::Logger,
  // record::Recorder), so that ranks added with every_rank never share one.
  observers_->attach(bus_, std::move(observer), options,
                     events::Placement{global_rank(), local_rank(), world_size()});
  if (progress_bar) progress_bar_attached_ = true;
  if (logger) loggers_.emplace_back(*this, name, dir);
}

void Trainer::attach_default_progress_bar() {
  if (!options_.enable_progress_bar() || progress_bar_attached_) return;
  const DefaultProgressBarFactory factory = installed_default_progress_bar();
  if (factory != nullptr) add_observer(factory());
}

std::string Trainer::log_dir() const {
  // As Lightning's: the first logger's directory, default_root_dir without one (or when that
  // logger keeps no directory), so that nothing lands in a bare relative "checkpoints".
  if (loggers_.empty() || loggers_.front().log_dir().empty()) return options_.default_root_dir();
  return loggers_.front().log_dir();
}

void Trainer::log_metrics(const Metrics& metrics, int64_t step, const std::string& logger) {
  bus_.publish_lazy<events::MetricsLogged>([&] {
    return events::MetricsLogged{event_progress(), metrics, step, logger};
  });
}

void LoggerHandle::log_metrics(const Metrics& metrics, int64_t step) const {
  trainer_->log_metrics(metrics, step, name_);
}

void Trainer::log_hyperparams(const StateDict& params, const std::string& logger) {
  bus_.publish_lazy<events::HyperparamsLogged>([&] {
    return events::HyperparamsLogged{event_progress(), detail::hparams_text(params), logger};
  });
}

void LoggerHandle::log_hyperparams(const StateDict& params) const {
  trainer_->log_hyperparams(params, name_);
}

void Trainer::wait_for_observers() {
  if (!observers_) return;
  // A stalled observer is abandoned, its failure raised here like any other (naming it).
  observers_->drain_unless_stalled(options_.observer_stall_timeout());
  observers_->check();
}

void Trainer::report_observer_failures() noexcept {
  if (!observers_) return;
  try {
    observers_->drain_unless_stalled(options_.observer_stall_timeout());
    for (std::size_t i = 0; i < observers_->size() && observers_->has_failure(); ++i) {
      try {
        observers_->check();
      } catch (const events::ObserverError& e) {
        warn(std::string("also, ") + e.what());
      }
    }
  } catch (const std::exception& e) {
    warn(std::string("also, waiting for the observers failed: ") + e.what());
  }
}

void Trainer::report_dropped_events() {
  if (!observers_) return;
  for (const events::ObserverStats& stats : observers_->stats()) {
    uint64_t& reported = dropped_reported_[stats.name];
    if (stats.dropped > reported) {
      warn(
          "observer `" + stats.name + "` dropped " + std::to_string(stats.dropped - reported) +
          " events in this run (it was full; see events::ObserverOptions::capacity and when_full)");
      reported = stats.dropped;
    }
  }
}

void Trainer::notify_exception(const std::exception& error) {
  // A training_step that threw between toggle_optimizer and untoggle_optimizer must not leave the
  // other optimizers' parameters frozen (a retried fit's toggle would take that as their state).
  module_->restore_toggled_optimizer();
  // Every callback hears of it even if one of them fails; the original exception then continues.
  for (const auto& callback : callbacks_) {
    try {
      callback->on_exception(*this, *module_, error);
    } catch (const std::exception& inner) {
      warn(callback_name(*callback) + "::on_exception threw \"" + inner.what() +
           "\" while handling \"" + error.what() + "\"; the original exception continues");
    }
  }
  try {
    bus_.publish_lazy<events::Exception>([&] {
      return events::Exception{fn_.value_or(Stage::kFit), event_progress(),
                               boost::core::demangle(typeid(error).name()), error.what()};
    });
  } catch (const std::exception& inner) {
    warn(std::string("a subscriber to events::Exception threw \"") + inner.what() + "\"; ignored");
  }
}

void Trainer::apply_run_settings() {
  const c10::Device root = device();
  if (root.is_cuda()) {
    TRAINBUS_CHECK(
        torch::cuda::is_available(), "Trainer: device `", options_.device().str(),
        "` requested, but this LibTorch has no usable CUDA (torch::cuda::is_available() is "
        "false); use device cpu");
    const auto count = static_cast<int64_t>(torch::cuda::device_count());
    const std::string whose = root == options_.device()
                                  ? std::string()
                                  : " (cuda, on local rank " + std::to_string(local_rank()) + ")";
    TRAINBUS_CHECK(!root.has_index() || root.index() < count, "Trainer: device `", root.str(), "`",
                   whose, " requested, but this machine has ", count,
                   " CUDA device(s), cuda:0 to cuda:", count - 1,
                   whose.empty() ? "" : ": start at most that many ranks per machine");
    // As Lightning's CUDAAccelerator.setup_device (torch.cuda.set_device): tensors made without a
    // device index, by NCCL and by the user's code, go to this rank's device.
    if (root.has_index()) c10::impl::getDeviceGuardImpl(root.type())->setDevice(root);
  }
  if (options_.seed()) torch::manual_seed(*options_.seed());
  if (options_.deterministic()) {
    if (*options_.deterministic() && std::getenv("CUBLAS_WORKSPACE_CONFIG") == nullptr) {
      // cuBLAS is deterministic only with a fixed workspace (as Lightning sets it).
      setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    }
    at::globalContext().setDeterministicAlgorithms(*options_.deterministic(), /*warn_only=*/false);
  }
}

void Trainer::call_setup_hooks(Stage stage) {
  data_->setup(stage);
  call_hooks<events::Setup>(
      [&](Callback& c) { c.setup(*this, *module_, stage); }, [&](Module& m) { m.setup(stage); },
      [&] {
        return events::Setup{stage, global_rank(), local_rank(), world_size()};
      });
}

void Trainer::call_teardown_hooks(Stage stage) {
  data_->teardown(stage);
  call_hooks<events::Teardown>([&](Callback& c) { c.teardown(*this, *module_, stage); },
                               [&](Module& m) { m.teardown(stage); },
                               [&] { return events::Teardown{stage}; });
}

std::shared_ptr<DataLoader> Trainer::require_loader(std::shared_ptr<DataLoader> loader,
                                                    const char* getter) const {
  TRAINBUS_CHECK(loader != nullptr, "Trainer::", to_string(fn_.value_or(Stage::kFit)),
                 " needs data: ", boost::core::demangle(typeid(*data_).name()), "::", getter,
                 "() returned null; override it to return a loader");
  return loader;
}

}  // namespace trainbus
