#include "callbacks/gradient_accumulation_scheduler.h"

#include <string>

#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

std::string schedule_text(const std::map<int64_t, int64_t>& scheduling) {
  std::string text;
  for (const auto& [epoch, factor] : scheduling) {
    text += (text.empty() ? "{" : ", ") + std::to_string(epoch) + ": " + std::to_string(factor);
  }
  return text.empty() ? "{}" : text + "}";
}

}  // namespace

GradientAccumulationScheduler::GradientAccumulationScheduler(std::map<int64_t, int64_t> scheduling)
    : scheduling_(std::move(scheduling)) {
  TRAINBUS_CHECK(!scheduling_.empty(),
                 "GradientAccumulationScheduler: the scheduling is empty; give {epoch: factor}, "
                 "e.g. {{4, 2}} to accumulate 2 batches from epoch 4 (0-based)");
  for (const auto& [epoch, factor] : scheduling_) {
    TRAINBUS_CHECK(epoch >= 0,
                   "GradientAccumulationScheduler: epochs are 0-based and must be >= 0; got ",
                   schedule_text(scheduling_));
    TRAINBUS_CHECK(factor >= 1,
                   "GradientAccumulationScheduler: an accumulation factor must be >= 1; got ",
                   schedule_text(scheduling_));
  }
  scheduling_.emplace(0, 1);  // kept if epoch 0 is scheduled
}

int64_t GradientAccumulationScheduler::accumulate_grad_batches(int64_t epoch) const {
  auto after = scheduling_.upper_bound(epoch);  // the first epoch later than `epoch`
  return after == scheduling_.begin() ? 1 : std::prev(after)->second;
}

bool GradientAccumulationScheduler::going_to_accumulate_grad_batches() const {
  for (const auto& entry : scheduling_) {
    if (entry.second > 1) return true;
  }
  return false;
}

void GradientAccumulationScheduler::on_train_start(Trainer& trainer, Module& module) {
  // As Lightning's on_train_start: refused for a manual module whatever the schedule, not when a
  // factor above 1 first takes effect, epochs later.
  TRAINBUS_CHECK(module.automatic_optimization(),
                 "Automatic gradient accumulation and the `GradientAccumulationScheduler` is not "
                 "supported for manual optimization. Please remove the callback or switch to "
                 "automatic optimization.");
  TRAINBUS_CHECK(trainer.options().accumulate_grad_batches() == 1,
                 "You have set `accumulate_grad_batches` (",
                 trainer.options().accumulate_grad_batches(),
                 ") and are using the GradientAccumulationScheduler callback. Either remove "
                 "`accumulate_grad_batches` from the Trainer or remove the callback");
}

void GradientAccumulationScheduler::on_train_epoch_start(Trainer& trainer, Module&) {
  trainer.set_accumulate_grad_batches(accumulate_grad_batches(trainer.current_epoch()));
}

}  // namespace trainbus::callbacks
