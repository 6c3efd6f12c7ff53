#pragma once
/// Private to core/: how the Trainer dispatches one lifecycle point. Not installed.

#include <exception>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus {

/// Names the hook or step running, for Module::log, for the lifetime of the scope.
class FxScope {
 public:
  FxScope(std::string_view& slot, std::string_view fx) : slot_(slot), previous_(slot) {
    slot_ = fx;
  }
  ~FxScope() { slot_ = previous_; }
  FxScope(const FxScope&) = delete;
  FxScope& operator=(const FxScope&) = delete;

 private:
  std::string_view& slot_;
  std::string_view previous_;
};

/// Callbacks in order, then the module, then the bus (which builds the event only if subscribed).
template <class Event, class OnCallback, class OnModule, class MakeEvent>
void Trainer::call_hooks(OnCallback&& on_callback, OnModule&& on_module, MakeEvent&& make_event) {
  FxScope scope(current_fx_, Event::kName);
  for (const auto& callback : callbacks_) on_callback(*callback);
  on_module(*module_);
  bus_.publish_lazy<Event>(std::forward<MakeEvent>(make_event));
}

/// Attaches the module and data, runs `body`; on an exception fires on_exception on every callback
/// and rethrows it unchanged; always detaches, handing the module back to the trainer it had
/// before (a tuner running a Trainer of its own inside another's fit, e.g. at on_fit_start).
template <class Body>
void Trainer::run_entry_point(Stage stage, Module& module, DataModule& data, Body&& body) {
  TRAINBUS_CHECK(status_ != TrainerStatus::kRunning, "Trainer::", to_string(stage),
                 " was called while the trainer is already running ",
                 to_string(fn_.value_or(stage)), "; a Trainer runs one thing at a time");
  TRAINBUS_CHECK(!replaying_, "Trainer::", to_string(stage),
                 " was called on the trainer of a replay (replay::ReplaySession), which has no "
                 "model to run; make a Trainer of its own");
  attach_default_progress_bar();
  Trainer* const previous_trainer = module.trainer_;
  auto detach = [&] {
    strategy_->teardown_module();
    module.trainer_ = previous_trainer;
    module_ = nullptr;
    data_ = nullptr;
    fn_.reset();
    phase_ = Phase::kIdle;
    current_fx_ = {};
  };
  module_ = &module;
  data_ = &data;
  module.trainer_ = this;
  fn_ = stage;
  status_ = TrainerStatus::kRunning;
  try {
    checkpoints_.begin_run();
    apply_run_settings();
    strategy_->connect(device());
    body();
    // Every checkpoint durable (and its CheckpointCommitted published), and everything the run
    // published handled, before it returns; a failure surfaces here at last.
    checkpoints_.finish();
    wait_for_observers();
    report_dropped_events();
    status_ = TrainerStatus::kFinished;
  } catch (...) {
    status_ = TrainerStatus::kInterrupted;
    try {
      throw;
    } catch (const std::exception& error) {
      notify_exception(error);
    } catch (...) {
      notify_exception(std::runtime_error("unknown exception (not derived from std::exception)"));
    }
    // The observers still get (and handle) everything, including the Exception event, and the
    // checkpoints saved so far (OnExceptionCheckpoint's too) are made durable. A stuck observer is
    // reported, not waited for: the original exception must come out.
    if (std::exception_ptr failed = checkpoints_.finish_quietly()) {
      try {
        std::rethrow_exception(failed);
      } catch (const std::exception& e) {
        warn(std::string("also, a checkpoint failed: ") + e.what());
      } catch (...) {
        warn("also, a checkpoint failed: unknown exception");
      }
    }
    report_observer_failures();
    report_dropped_events();
    detach();
    throw;
  }
  detach();
}

/// For the hooks LightningModule does not have (sanity check, exception).
inline constexpr auto kNoModuleHook = [](Module&) {};

}  // namespace trainbus
