#include "callbacks/timer.h"

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

constexpr RunningStage kAllStages[] = {RunningStage::kTraining, RunningStage::kSanityChecking,
                                       RunningStage::kValidating, RunningStage::kTesting,
                                       RunningStage::kPredicting};

std::size_t index_of(RunningStage stage) { return static_cast<std::size_t>(stage); }

}  // namespace

const char* to_string(RunningStage stage) {
  switch (stage) {
    case RunningStage::kTraining:
      return "train";
    case RunningStage::kSanityChecking:
      return "sanity_check";
    case RunningStage::kValidating:
      return "validate";
    case RunningStage::kTesting:
      return "test";
    case RunningStage::kPredicting:
      return "predict";
  }
  return "?";
}

Timer::Timer(TimerOptions options)
    : options_(std::move(options)), check_every_step_(options_.interval() == "step") {
  TRAINBUS_CHECK(options_.interval() == "step" || options_.interval() == "epoch",
                 "Timer: unsupported interval '", options_.interval(),
                 "'; possible choices are step and epoch");
}

double Timer::now() {
  return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

std::optional<double> Timer::start_time(RunningStage stage) const {
  return start_[index_of(stage)];
}

std::optional<double> Timer::end_time(RunningStage stage) const { return end_[index_of(stage)]; }

double Timer::time_elapsed(RunningStage stage) const {
  const double offset = stage == RunningStage::kTraining ? offset_ : 0.0;
  const auto& start = start_[index_of(stage)];
  const auto& end = end_[index_of(stage)];
  if (!start) return offset;
  if (!end) return now() - *start + offset;
  return *end - *start + offset;
}

std::optional<double> Timer::time_remaining(RunningStage stage) const {
  if (!options_.duration()) return std::nullopt;
  return options_.duration()->seconds() - time_elapsed(stage);
}

StateDict Timer::state_dict() const {
  StateDict elapsed;
  for (const RunningStage stage : kAllStages) elapsed.insert(to_string(stage), time_elapsed(stage));
  StateDict state;
  state.insert("time_elapsed", elapsed);
  return state;
}

void Timer::load_state_dict(const StateDict& state) {
  offset_ = 0;
  if (!state.contains("time_elapsed")) return;
  const StateDict elapsed = state.dict_at("time_elapsed");
  if (elapsed.contains("train")) offset_ = elapsed.at("train").toDouble();
}

void Timer::on_train_start(Trainer&, Module&) {
  start_[index_of(RunningStage::kTraining)] = now();
  end_[index_of(RunningStage::kTraining)].reset();
}

void Timer::on_train_end(Trainer&, Module&) { end_[index_of(RunningStage::kTraining)] = now(); }

// As Lightning's Timer, which keys its times by hook: the sanity check's validation counts as
// validation, and "sanity_check" stays 0.
void Timer::on_validation_start(Trainer&, Module&) {
  start_[index_of(RunningStage::kValidating)] = now();
  end_[index_of(RunningStage::kValidating)].reset();
}

void Timer::on_validation_end(Trainer&, Module&) {
  end_[index_of(RunningStage::kValidating)] = now();
}

void Timer::on_test_start(Trainer&, Module&) {
  start_[index_of(RunningStage::kTesting)] = now();
  end_[index_of(RunningStage::kTesting)].reset();
}

void Timer::on_test_end(Trainer&, Module&) { end_[index_of(RunningStage::kTesting)] = now(); }

void Timer::setup(Trainer&, Module&, Stage stage) {
  // A new fit starts from nothing; a resume restores the offset afterwards (load_state_dict runs
  // after setup), so time trained before it still counts.
  if (stage != Stage::kFit) return;
  offset_ = 0;
  start_[index_of(RunningStage::kTraining)].reset();
  end_[index_of(RunningStage::kTraining)].reset();
  stop_requested_ = false;
}

void Timer::on_exception(Trainer&, Module&, const std::exception&) {
  // The end hooks will not run: stop the clocks of the stages that were running, so that the
  // elapsed times stay what they were when the run failed.
  const double failed_at = now();
  for (std::size_t stage = 0; stage < kStages; ++stage) {
    if (start_[stage] && !end_[stage]) end_[stage] = failed_at;
  }
}

void Timer::on_fit_start(Trainer& trainer, Module&) {
  // After a checkpoint is restored, whatever the interval: a resumed run whose time is used up
  // stops before its first batch.
  if (options_.duration()) check_time_remaining(trainer);
}

void Timer::on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                               int64_t) {
  if (check_every_step_ && options_.duration()) check_time_remaining(trainer);
}

void Timer::on_train_epoch_end(Trainer& trainer, Module&) {
  if (!check_every_step_ && options_.duration()) check_time_remaining(trainer);
}

void Timer::check_time_remaining(Trainer& trainer) {
  // Once per fit: a stop refused for min_epochs stays requested, and one line says why.
  if (stop_requested_ || trainer.replaying()) return;  // a replay's clock is not the run's
  const double elapsed = time_elapsed(RunningStage::kTraining);
  const bool own_time_is_up = elapsed >= options_.duration()->seconds();
  bool time_is_up = own_time_is_up;
  // Without the Trainer's agreement after every batch, the ranks must stop alike by themselves:
  // rank 0's clock decides, as in Lightning's Timer.
  if (trainer.world_size() > 1 && !trainer.strategy().agrees_on_stop_every_batch())
    time_is_up = trainer.strategy().broadcast(time_is_up ? 1 : 0, 0) != 0;
  if (!time_is_up) return;
  const std::string reason =
      own_time_is_up ? "Time limit reached. Elapsed time is " + format_elapsed(elapsed) +
                           ". Signaling Trainer to stop."
                     : std::string("Time limit reached on rank 0. Signaling Trainer to stop.");
  if (options_.verbose()) info(reason);
  stop_requested_ = true;
  trainer.request_stop("Timer: " + reason);
}

}  // namespace trainbus::callbacks
