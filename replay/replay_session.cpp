#include "replay/replay_session.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <set>
#include <utility>

#include <torch/optim/sgd.h>
#include <torch/types.h>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "checkpoint/format.h"
#include "core/callback_order.h"
#include "record/event_codec.h"
#include "record/record_file.h"

namespace trainbus::replay {

// The module replayed callbacks receive: no layers, no data; what needs a model says so.
class ReplaySession::StandInModule final : public Module {
 public:
  explicit StandInModule(const std::string& hook) : hook_(hook) {}
  StepOutput training_step(const Batch&, int64_t) override { refuse("training_step"); }
  StepOutput validation_step(const Batch&, int64_t) override { refuse("validation_step"); }
  StepOutput test_step(const Batch&, int64_t) override { refuse("test_step"); }
  at::Tensor predict_step(const Batch&, int64_t) override { refuse("predict_step"); }
  OptimizerConfig configure_optimizers() override { refuse("configure_optimizers"); }

 private:
  [[noreturn]] void refuse(const char* what) const {
    throw ReplayError(std::string("a replay has no model: ") + what + " cannot run (called from " +
                      (hook_.empty() ? "outside a hook" : hook_) +
                      "); a callback that needs the model cannot be replayed");
  }
  const std::string& hook_;
};

namespace {

Batch stand_in_batch(const events::BatchInfo& batch) {
  const int64_t size = std::max<int64_t>(batch.batch_size, 0);
  return Batch(torch::empty({size, 0}), torch::empty({size}, torch::kLong));
}

// Whether a recorded stop held from the moment it was asked (in a step), rather than once the
// hooks of the next event had run. Asked in a hook, the next event is that hook's; asked outside
// both ("none": prepare_data, on_exception), holding it from the next event on keeps it past the
// stage start (which clears stops) and lets a replayed callback asking the same not repeat it;
// recordings made before StopRequested said where it was asked (asked_in "") hold it that way too.
bool asked_in_step(const events::StopRequested& event) {
  static const std::set<std::string> kSteps = {"training_step", "validation_step", "test_step",
                                               "predict_step"};
  return kSteps.count(event.asked_in) > 0;
}

}  // namespace

ReplaySession::ReplaySession(TrainerOptions options,
                             std::vector<std::shared_ptr<Callback>> callbacks)
    : trainer_(std::move(options), std::move(callbacks)),
      module_(std::make_unique<StandInModule>(current_hook_)),
      optimizer_(std::make_shared<torch::optim::SGD>(std::vector<torch::Tensor>{},
                                                     torch::optim::SGDOptions(0.0))) {
  trainer_.replaying_ = true;
  for (const auto& callback : trainer_.callbacks()) {
    if (!runs_after_module_at_epoch_end(*callback)) epoch_end_order_.push_back(callback);
  }
  for (const auto& callback : trainer_.callbacks()) {
    if (runs_after_module_at_epoch_end(*callback)) epoch_end_order_.push_back(callback);
  }
}

ReplaySession::~ReplaySession() {
  try {
    finish();
  } catch (const std::exception& e) {
    warn(std::string("replay: ") + e.what());
  }
}

void ReplaySession::finish() {
  Trainer& t = trainer_;
  if (!attached_) {
    t.wait_for_observers();  // a recording without a Setup still reached the observers
    return;
  }
  attached_ = false;
  auto detach = [&] {
    module_->trainer_ = nullptr;
    t.module_ = nullptr;
    t.fn_.reset();
    t.phase_ = Trainer::Phase::kIdle;
    t.status_ = TrainerStatus::kFinished;
    t.optimizers_.clear();
  };
  try {
    t.wait_for_observers();
  } catch (...) {
    detach();
    throw;
  }
  detach();
}

uint64_t ReplaySession::replay(record::RecordingReader& reader) {
  const uint64_t before = events_;
  val_batches_unrecorded_ = reader.header().format_version() < 2;
  record::EventDecoder decoder;
  while (const record::v1::Envelope* envelope = reader.next()) {
    decoder.visit(*envelope, [&](const auto& event) { replay(event); });
  }
  return events_ - before;
}

std::vector<Decision> ReplaySession::decisions() const {
  std::vector<Decision> all;
  const std::vector<DryRunSave>& saves = trainer_.checkpoints().dry_run_saves();
  std::size_t next_save = 0;
  auto add_saves_until = [&](std::size_t end) {
    for (; next_save < end && next_save < saves.size(); ++next_save) {
      const DryRunSave& save = saves[next_save];
      all.push_back({Decision::Kind::kSave, save.progress, save.path, save.monitor, save.score});
      for (const std::string& removed : save.removes)
        all.push_back({Decision::Kind::kRemove, save.progress, removed});
    }
  };
  for (const auto& [saves_before, stop] : stops_) {
    add_saves_until(saves_before);
    all.push_back(stop);
  }
  add_saves_until(saves.size());
  return all;
}

void ReplaySession::set_progress(const events::Progress& progress) {
  trainer_.progress_.current_epoch = progress.epoch;
  trainer_.progress_.global_step = progress.global_step;
  // Events carry global_step only: at a batch end this is one ahead of the live value.
  trainer_.batches_that_stepped_ = progress.global_step;
}

void ReplaySession::begin_stage(Stage stage) {
  Trainer& t = trainer_;
  if (!attached_) {
    attached_ = true;
    module_->trainer_ = &t;
    t.module_ = module_.get();
  }
  t.status_ = TrainerStatus::kRunning;
  t.fn_ = stage;
  t.phase_ = Trainer::Phase::kIdle;
  if (stage == Stage::kFit) {
    t.progress_ = FitProgress();
    t.should_stop_ = false;
    t.stop_reasons_.clear();
    t.checkpoints_.resumed_from_.clear();
    t.optimizers_ = {optimizer_};  // trainer.optimizers()[0] is the stand-in, at the recorded lr
  }
  t.metrics_.clear();
}

// Calls `hook(callback)` on every callback in the trainer's order, then publishes `event` on the
// trainer's bus; notes the stop requests the callbacks made meanwhile.
template <class Event, class Hook>
void ReplaySession::dispatch(const Event& event, const char* hook_name, Hook&& hook,
                             const std::vector<std::shared_ptr<Callback>>* order) {
  Trainer& t = trainer_;
  const std::size_t stops_before = t.stop_reasons_.size();
  current_hook_ = hook_name;
  try {
    for (const auto& callback : order ? *order : t.callbacks_) hook(*callback);
  } catch (const std::exception& e) {
    current_hook_.clear();
    throw ReplayError(::trainbus::detail::concat(
        "replaying record ", events_ + 1, " (", Event::kName, ", epoch ", t.progress_.current_epoch,
        ", step ", t.progress_.global_step, "): ", hook_name, ": ", e.what()));
  }
  current_hook_.clear();
  for (std::size_t i = stops_before; i < t.stop_reasons_.size(); ++i) {
    stops_.emplace_back(t.checkpoints().dry_run_saves().size(),
                        Decision{Decision::Kind::kStop, t.event_progress(), t.stop_reasons_[i]});
  }
  // A stop the live run requested during these hooks (its event came before this one's) holds
  // from here on, as it did live; unless a replayed callback just asked for the same.
  for (std::string& reason : pending_stops_) {
    const auto first_new = t.stop_reasons_.begin() + static_cast<std::ptrdiff_t>(stops_before);
    if (std::find(first_new, t.stop_reasons_.end(), reason) == t.stop_reasons_.end()) {
      t.should_stop_ = true;
      t.stop_reasons_.push_back(std::move(reason));
    }
  }
  pending_stops_.clear();
  publish(event);
}

// A recorded decision or checkpoint event: no callback hook; observers and subscribers get it.
template <class Event>
void ReplaySession::publish(const Event& event) {
  ++events_;
  trainer_.bus_.publish(event);
}

// ---- run envelope ----

void ReplaySession::replay(const events::Setup& event) {
  begin_stage(event.stage);
  dispatch(event, "setup", [&](Callback& c) { c.setup(trainer_, *module_, event.stage); });
}

void ReplaySession::replay(const events::Teardown& event) {
  dispatch(event, "teardown", [&](Callback& c) { c.teardown(trainer_, *module_, event.stage); });
  trainer_.fn_.reset();
  trainer_.phase_ = Trainer::Phase::kIdle;
}

void ReplaySession::replay(const events::FitStart& event) {
  set_progress(event.progress);
  trainer_.set_loop_sizes(event.num_batches, event.num_val_batches);
  dispatch(event, "on_fit_start", [&](Callback& c) { c.on_fit_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::FitEnd& event) {
  set_progress(event.progress);
  trainer_.metrics_.restore_callback_metrics(event.callback_metrics);
  dispatch(event, "on_fit_end", [&](Callback& c) { c.on_fit_end(trainer_, *module_); });
}

void ReplaySession::replay(const events::SanityCheckStart& event) {
  set_progress(event.progress);
  trainer_.phase_ = Trainer::Phase::kSanityChecking;
  dispatch(event, "on_sanity_check_start",
           [&](Callback& c) { c.on_sanity_check_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::SanityCheckEnd& event) {
  set_progress(event.progress);
  dispatch(event, "on_sanity_check_end",
           [&](Callback& c) { c.on_sanity_check_end(trainer_, *module_); });
  trainer_.metrics_.clear();  // as the live loop: the sanity check's values are discarded
  trainer_.phase_ = Trainer::Phase::kIdle;
}

// ---- training ----

void ReplaySession::replay(const events::TrainStart& event) {
  set_progress(event.progress);
  trainer_.phase_ = Trainer::Phase::kTraining;
  dispatch(event, "on_train_start", [&](Callback& c) { c.on_train_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::TrainEnd& event) {
  set_progress(event.progress);
  trainer_.phase_ = Trainer::Phase::kTraining;
  trainer_.metrics_.restore_callback_metrics(event.callback_metrics);
  dispatch(event, "on_train_end", [&](Callback& c) { c.on_train_end(trainer_, *module_); });
}

void ReplaySession::replay(const events::TrainEpochStart& event) {
  Trainer& t = trainer_;
  set_progress(event.progress);
  t.phase_ = Trainer::Phase::kTraining;
  t.max_epochs_ = event.max_epochs;
  const bool unrecorded = val_batches_unrecorded_ && event.num_val_batches == 0;
  t.set_loop_sizes(event.num_batches, unrecorded ? t.num_val_batches_ : event.num_val_batches);
  t.progress_.batches_done_in_epoch = 0;
  t.progress_.epoch_batches_finished = false;
  dispatch(event, "on_train_epoch_start",
           [&](Callback& c) { c.on_train_epoch_start(t, *module_); });
}

void ReplaySession::replay(const events::TrainEpochEnd& event) {
  Trainer& t = trainer_;
  set_progress(event.progress);
  t.phase_ = Trainer::Phase::kTraining;
  t.progress_.epoch_batches_finished = true;  // as the live loop, before the epoch-end hooks
  ++t.progress_.epochs_processed;
  t.metrics_.replay_epoch_values(event.metrics);
  t.metrics_.restore_callback_metrics(event.callback_metrics);
  t.metrics_.replay_progress_bar(event.progress_bar);
  // As Trainer::call_train_epoch_end_hooks: monitoring and checkpoint callbacks last.
  dispatch(
      event, "on_train_epoch_end", [&](Callback& c) { c.on_train_epoch_end(t, *module_); },
      &epoch_end_order_);
}

void ReplaySession::replay(const events::TrainBatchStart& event) {
  set_progress(event.progress);
  const Batch batch = stand_in_batch(event.batch);
  dispatch(event, "on_train_batch_start", [&](Callback& c) {
    c.on_train_batch_start(trainer_, *module_, batch, event.batch.batch_idx);
  });
}

void ReplaySession::replay(const events::TrainBatchEnd& event) {
  Trainer& t = trainer_;
  set_progress(event.progress);
  t.metrics_.replay_step_values(event.metrics);
  t.metrics_.replay_progress_bar(event.progress_bar);
  t.progress_.batches_done_in_epoch = event.batch.batch_idx + 1;
  const Batch batch = stand_in_batch(event.batch);
  const StepOutput outputs(torch::tensor(event.loss, torch::kDouble));
  dispatch(event, "on_train_batch_end", [&](Callback& c) {
    c.on_train_batch_end(t, *module_, outputs, batch, event.batch.batch_idx);
  });
  ++t.progress_.total_batch_idx;  // after the hook, as the live loop (validates_after_batch)
}

void ReplaySession::replay(const events::BeforeZeroGrad& event) {
  set_progress(event.progress);
  dispatch(event, "on_before_zero_grad",
           [&](Callback& c) { c.on_before_zero_grad(trainer_, *module_, *optimizer_); });
}

void ReplaySession::replay(const events::BeforeBackward& event) {
  set_progress(event.progress);
  const at::Tensor loss = torch::tensor(std::nan(""), torch::kDouble);  // not recorded
  dispatch(event, "on_before_backward",
           [&](Callback& c) { c.on_before_backward(trainer_, *module_, loss); });
}

void ReplaySession::replay(const events::AfterBackward& event) {
  set_progress(event.progress);
  dispatch(event, "on_after_backward",
           [&](Callback& c) { c.on_after_backward(trainer_, *module_); });
}

void ReplaySession::replay(const events::BeforeOptimizerStep& event) {
  set_progress(event.progress);
  dispatch(event, "on_before_optimizer_step",
           [&](Callback& c) { c.on_before_optimizer_step(trainer_, *module_, *optimizer_); });
}

void ReplaySession::replay(const events::AfterOptimizerStep& event) {
  set_progress(event.progress);
  // The stand-in steps at the recorded learning rate (its first param group's).
  for (const auto& [name, lr] : event.learning_rates) {
    if (name.rfind("lr-", 0) != 0 || name.find("-momentum") != std::string::npos) continue;
    optimizer_->param_groups()[0].options().set_lr(lr);
    break;
  }
  dispatch(event, "on_after_optimizer_step",
           [&](Callback& c) { c.on_after_optimizer_step(trainer_, *module_, *optimizer_); });
}

// ---- validation, test, predict ----

void ReplaySession::replay(const events::ValidationStart& event) {
  set_progress(event.progress);
  if (!trainer_.sanity_checking()) trainer_.phase_ = Trainer::Phase::kValidating;
  dispatch(event, "on_validation_start",
           [&](Callback& c) { c.on_validation_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::ValidationEpochStart& event) {
  set_progress(event.progress);
  if (trainer_.fn_ == Stage::kValidate) trainer_.num_val_batches_ = event.num_batches;
  if (val_batches_unrecorded_ && trainer_.fn_ == Stage::kFit && !trainer_.sanity_checking() &&
      trainer_.num_val_batches_ == 0) {
    trainer_.num_val_batches_ = event.num_batches;
  }
  dispatch(event, "on_validation_epoch_start",
           [&](Callback& c) { c.on_validation_epoch_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::ValidationBatchStart& event) {
  set_progress(event.progress);
  const Batch batch = stand_in_batch(event.batch);
  dispatch(event, "on_validation_batch_start", [&](Callback& c) {
    c.on_validation_batch_start(trainer_, *module_, batch, event.batch.batch_idx,
                                event.batch.dataloader_idx);
  });
}

void ReplaySession::replay(const events::ValidationBatchEnd& event) {
  set_progress(event.progress);
  trainer_.metrics_.replay_step_values(event.metrics);
  const Batch batch = stand_in_batch(event.batch);
  const StepOutput outputs;
  dispatch(event, "on_validation_batch_end", [&](Callback& c) {
    c.on_validation_batch_end(trainer_, *module_, outputs, batch, event.batch.batch_idx,
                              event.batch.dataloader_idx);
  });
}

void ReplaySession::replay(const events::ValidationEpochEnd& event) {
  set_progress(event.progress);
  trainer_.metrics_.replay_epoch_values(event.metrics);
  dispatch(event, "on_validation_epoch_end",
           [&](Callback& c) { c.on_validation_epoch_end(trainer_, *module_); });
}

void ReplaySession::replay(const events::ValidationEnd& event) {
  Trainer& t = trainer_;
  set_progress(event.progress);
  t.metrics_.restore_callback_metrics(event.callback_metrics);
  dispatch(event, "on_validation_end", [&](Callback& c) { c.on_validation_end(t, *module_); });
  if (!t.sanity_checking()) {
    t.phase_ = t.fn_ == Stage::kFit ? Trainer::Phase::kTraining : Trainer::Phase::kIdle;
  }
}

void ReplaySession::replay(const events::TestStart& event) {
  set_progress(event.progress);
  trainer_.phase_ = Trainer::Phase::kTesting;
  dispatch(event, "on_test_start", [&](Callback& c) { c.on_test_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::TestEpochStart& event) {
  set_progress(event.progress);
  trainer_.num_test_batches_ = event.num_batches;
  dispatch(event, "on_test_epoch_start",
           [&](Callback& c) { c.on_test_epoch_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::TestBatchStart& event) {
  set_progress(event.progress);
  const Batch batch = stand_in_batch(event.batch);
  dispatch(event, "on_test_batch_start", [&](Callback& c) {
    c.on_test_batch_start(trainer_, *module_, batch, event.batch.batch_idx,
                          event.batch.dataloader_idx);
  });
}

void ReplaySession::replay(const events::TestBatchEnd& event) {
  set_progress(event.progress);
  trainer_.metrics_.replay_step_values(event.metrics);
  const Batch batch = stand_in_batch(event.batch);
  const StepOutput outputs;
  dispatch(event, "on_test_batch_end", [&](Callback& c) {
    c.on_test_batch_end(trainer_, *module_, outputs, batch, event.batch.batch_idx,
                        event.batch.dataloader_idx);
  });
}

void ReplaySession::replay(const events::TestEpochEnd& event) {
  set_progress(event.progress);
  trainer_.metrics_.replay_epoch_values(event.metrics);
  dispatch(event, "on_test_epoch_end",
           [&](Callback& c) { c.on_test_epoch_end(trainer_, *module_); });
}

void ReplaySession::replay(const events::TestEnd& event) {
  set_progress(event.progress);
  trainer_.metrics_.restore_callback_metrics(event.callback_metrics);
  dispatch(event, "on_test_end", [&](Callback& c) { c.on_test_end(trainer_, *module_); });
  trainer_.phase_ = Trainer::Phase::kIdle;
}

void ReplaySession::replay(const events::PredictStart& event) {
  set_progress(event.progress);
  trainer_.phase_ = Trainer::Phase::kPredicting;
  dispatch(event, "on_predict_start", [&](Callback& c) { c.on_predict_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::PredictEpochStart& event) {
  set_progress(event.progress);
  trainer_.num_predict_batches_ = event.num_batches;
  dispatch(event, "on_predict_epoch_start",
           [&](Callback& c) { c.on_predict_epoch_start(trainer_, *module_); });
}

void ReplaySession::replay(const events::PredictBatchStart& event) {
  set_progress(event.progress);
  const Batch batch = stand_in_batch(event.batch);
  dispatch(event, "on_predict_batch_start", [&](Callback& c) {
    c.on_predict_batch_start(trainer_, *module_, batch, event.batch.batch_idx);
  });
}

void ReplaySession::replay(const events::PredictBatchEnd& event) {
  set_progress(event.progress);
  const Batch batch = stand_in_batch(event.batch);
  const at::Tensor outputs = torch::empty({std::max<int64_t>(event.batch.batch_size, 0), 0});
  dispatch(event, "on_predict_batch_end", [&](Callback& c) {
    c.on_predict_batch_end(trainer_, *module_, outputs, batch, event.batch.batch_idx);
  });
}

void ReplaySession::replay(const events::PredictEpochEnd& event) {
  set_progress(event.progress);
  dispatch(event, "on_predict_epoch_end",
           [&](Callback& c) { c.on_predict_epoch_end(trainer_, *module_); });
}

void ReplaySession::replay(const events::PredictEnd& event) {
  set_progress(event.progress);
  dispatch(event, "on_predict_end", [&](Callback& c) { c.on_predict_end(trainer_, *module_); });
  trainer_.phase_ = Trainer::Phase::kIdle;
}

// ---- checkpoints, decisions, errors ----

void ReplaySession::replay(const events::SaveCheckpoint& event) {
  // on_save_checkpoint needs the checkpoint being assembled, which a replay does not have.
  set_progress(event.progress);
  publish(event);
}

void ReplaySession::replay(const events::CheckpointCommitted& event) {
  recorded_.push_back(
      {Decision::Kind::kSave, event.progress, event.path, event.monitor, event.score});
  publish(event);
}

void ReplaySession::replay(const events::CheckpointRemoved& event) {
  recorded_.push_back({Decision::Kind::kRemove, event.progress, event.path});
  publish(event);
}

void ReplaySession::replay(const events::LoadCheckpoint& event) {
  set_progress(event.progress);
  restore_callbacks_from(event.path);
  publish(event);
}

void ReplaySession::replay(const events::StopRequested& event) {
  set_progress(event.progress);
  recorded_.push_back({Decision::Kind::kStop, event.progress, event.reason});
  if (asked_in_step(event)) {
    // Asked in a step: the next event's hooks saw it live, so they do here.
    trainer_.should_stop_ = true;
    trainer_.stop_reasons_.push_back(event.reason);
  } else {
    // Published live from inside a hook of the next event (or outside any): it holds once that
    // event's hooks ran.
    pending_stops_.push_back(event.reason);
  }
  publish(event);
}

void ReplaySession::replay(const events::MetricsLogged& event) {
  // The recorded values reach the observers (regenerated logs keep a LearningRateMonitor's
  // columns); no callback hook runs for it.
  set_progress(event.progress);
  publish(event);
}

void ReplaySession::replay(const events::HyperparamsLogged& event) {
  // As MetricsLogged: the recorded values reach the observers; no callback hook runs for it.
  set_progress(event.progress);
  publish(event);
}

void ReplaySession::replay(const events::Exception& event) {
  set_progress(event.progress);
  const std::runtime_error error(event.type + ": " + event.message);
  // As live: every callback hears of it even if one of them fails.
  dispatch(event, "on_exception", [&](Callback& c) {
    try {
      c.on_exception(trainer_, *module_, error);
    } catch (const std::exception& inner) {
      warn("replay: " + callback_name(c) + "::on_exception threw \"" + inner.what() +
           "\" while handling \"" + error.what() + "\"");
    }
  });
}

void ReplaySession::restore_callbacks_from(const std::string& checkpoint_path) {
  Trainer& t = trainer_;
  try {
    const checkpoint::LoadedCheckpoint loaded = checkpoint::read_checkpoint(checkpoint_path);
    for (const auto& callback : t.callbacks_) {
      auto found = loaded.data.callbacks.find(callback->state_key());
      if (found != loaded.data.callbacks.end()) callback->load_state_dict(found->second);
    }
    t.metrics_.restore_callback_metrics(loaded.data.callback_metrics);
    // As the live run: its progress down to the batch, and the checkpoint nobody removes.
    t.progress_ = FitProgress::resumed_from(loaded.data.loops);
    t.accumulate_grad_batches_ = loaded.data.loops.at("accumulate_grad_batches").toInt();
    t.checkpoints_.resumed_from_ = checkpoint_path;
  } catch (const std::exception& e) {
    warn("replay: the recorded run resumed from " + checkpoint_path +
         ", whose callback states cannot be read (" + e.what() +
         "); the replayed callbacks start fresh there, so their decisions may differ from the "
         "live run's");
  }
}

}  // namespace trainbus::replay
