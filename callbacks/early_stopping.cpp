#include "callbacks/early_stopping.h"

#include <cmath>
#include <iomanip>
#include <limits>
#include <sstream>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

std::string fixed3(double value) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(3) << value;
  return out.str();
}

}  // namespace

EarlyStopping::EarlyStopping(EarlyStoppingOptions options) : options_(std::move(options)) {
  TRAINBUS_CHECK(!options_.monitor().empty(),
                 "EarlyStopping: `monitor` is empty; name the metric to watch, e.g. "
                 "\"val_loss\"");
  TRAINBUS_CHECK(options_.mode() == "min" || options_.mode() == "max",
                 "EarlyStopping: `mode` can be \"min\" or \"max\", got \"", options_.mode(), "\"");
  TRAINBUS_CHECK(options_.patience() >= 0, "EarlyStopping: `patience` must be >= 0, got ",
                 options_.patience());
  TRAINBUS_CHECK(std::isfinite(options_.min_delta()), "EarlyStopping: `min_delta` must be finite");
  const double inf = std::numeric_limits<double>::infinity();
  best_score_ = options_.mode() == "min" ? inf : -inf;
}

bool EarlyStopping::improves(double current, double reference) const {
  return options_.mode() == "min" ? current < reference : current > reference;
}

std::string EarlyStopping::state_key() const {
  return "EarlyStopping{'monitor': '" + options_.monitor() + "', 'mode': '" + options_.mode() +
         "'}";
}

StateDict EarlyStopping::state_dict() const {
  StateDict state;
  state.insert("wait_count", wait_count_);
  state.insert("stopped_epoch", stopped_epoch_);
  state.insert("best_score", best_score_);
  state.insert("patience", options_.patience());
  state.insert("stopping_reason", static_cast<int64_t>(stopping_reason_));
  state.insert("stopping_reason_message", stopping_reason_message_);
  return state;
}

void EarlyStopping::load_state_dict(const StateDict& state) {
  wait_count_ = state.at("wait_count").toInt();
  stopped_epoch_ = state.at("stopped_epoch").toInt();
  best_score_ = state.at("best_score").toDouble();
  options_.patience(state.at("patience").toInt());
  stopping_reason_ = static_cast<EarlyStoppingReason>(state.at("stopping_reason").toInt());
  stopping_reason_message_ = state.at("stopping_reason_message").toStringRef();
}

void EarlyStopping::setup(Trainer& trainer, Module& module, Stage stage) {
  const TrainerOptions& o = trainer.options();
  check_on_train_epoch_end_ = options_.check_on_train_epoch_end().value_or(
      o.val_check_interval().is_fraction() && o.val_check_interval().fraction() == 1.0 &&
      o.check_val_every_n_epoch() == 1);
}

bool EarlyStopping::should_skip_check(const Trainer& trainer) const {
  return trainer.fn() != Stage::kFit || trainer.sanity_checking();
}

void EarlyStopping::on_train_epoch_end(Trainer& trainer, Module& module) {
  if (check_on_train_epoch_end_ && !should_skip_check(trainer)) run_check(trainer);
}

void EarlyStopping::on_validation_end(Trainer& trainer, Module& module) {
  if (!check_on_train_epoch_end_ && !should_skip_check(trainer)) run_check(trainer);
}

void EarlyStopping::run_check(Trainer& trainer) {
  const Metrics& metrics = trainer.callback_metrics();
  auto found = metrics.find(options_.monitor());
  if (found == metrics.end()) {
    std::string available;
    for (const auto& [name, value] : metrics)
      available += (available.empty() ? "`" : ", `") + name + "`";
    const std::string message =
        "Early stopping conditioned on metric `" + options_.monitor() +
        "` which is not available. Pass in or modify your `EarlyStopping` callback to use "
        "any of the following: " +
        (available.empty() ? "(nothing is logged)" : available);
    TRAINBUS_CHECK(!options_.strict(), message);
    if (options_.verbose()) warn(message);
    return;
  }
  const double current = found->second;
  const std::string order = options_.mode() == "min" ? "<" : ">";
  // min_delta counts in the direction of improvement.
  const double signed_delta =
      options_.mode() == "min" ? -options_.min_delta() : options_.min_delta();
  bool stop = false;
  std::string reason;
  if (options_.check_finite() && !std::isfinite(current)) {
    stop = true;
    stopping_reason_ = EarlyStoppingReason::kNonFiniteMetric;
    reason = "Monitored metric " + options_.monitor() + " = " + std::to_string(current) +
             " is not finite. Previous best value was " + fixed3(best_score_) +
             ". Signaling Trainer to stop.";
  } else if (options_.stopping_threshold() && improves(current, *options_.stopping_threshold())) {
    stop = true;
    stopping_reason_ = EarlyStoppingReason::kStoppingThreshold;
    reason = "Stopping threshold reached: " + options_.monitor() + " = " + std::to_string(current) +
             " " + order + " " + std::to_string(*options_.stopping_threshold()) +
             ". Signaling Trainer to stop.";
  } else if (options_.divergence_threshold() &&
             improves(-current, -*options_.divergence_threshold())) {
    stop = true;
    stopping_reason_ = EarlyStoppingReason::kDivergenceThreshold;
    reason = "Divergence threshold reached: " + options_.monitor() + " = " +
             std::to_string(current) + " " + order + " " +
             std::to_string(*options_.divergence_threshold()) + ". Signaling Trainer to stop.";
  } else if (improves(current - signed_delta, best_score_)) {
    reason = std::isfinite(best_score_)
                 ? "Metric " + options_.monitor() + " improved by " +
                       fixed3(std::abs(best_score_ - current)) +
                       " >= min_delta = " + std::to_string(std::abs(options_.min_delta())) +
                       ". New best score: " + fixed3(current)
                 : "Metric " + options_.monitor() + " improved. New best score: " + fixed3(current);
    best_score_ = current;
    wait_count_ = 0;
  } else {
    ++wait_count_;
    if (wait_count_ >= options_.patience()) {
      stop = true;
      stopping_reason_ = EarlyStoppingReason::kPatienceExhausted;
      reason = "Monitored metric " + options_.monitor() + " did not improve in the last " +
               std::to_string(wait_count_) + " records. Best score: " + fixed3(best_score_) +
               ". Signaling Trainer to stop.";
    }
  }
  if (stop) {
    stopped_epoch_ = trainer.current_epoch();
    stopping_reason_message_ = reason;
    trainer.request_stop("EarlyStopping: " + reason);
  }
  if (options_.verbose() && !reason.empty()) info(reason);
}

EarlyStopping* early_stopping_callback(const Trainer& trainer) {
  return trainer.find_callback<EarlyStopping>();
}

std::vector<EarlyStopping*> early_stopping_callbacks(const Trainer& trainer) {
  return trainer.find_callbacks<EarlyStopping>();
}

}  // namespace trainbus::callbacks
