#include "core/reduce_lr_on_plateau.h"

#include <algorithm>
#include <limits>

#include "base/errors.h"

namespace trainbus {

ReduceLROnPlateau::ReduceLROnPlateau(torch::optim::Optimizer& optimizer,
                                     ReduceLROnPlateauOptions options)
    : LRScheduler(optimizer), options_(std::move(options)) {
  TRAINBUS_CHECK(options_.mode() == "min" || options_.mode() == "max",
                 "ReduceLROnPlateau: mode must be \"min\" or \"max\", got \"", options_.mode(),
                 "\"");
  TRAINBUS_CHECK(options_.threshold_mode() == "rel" || options_.threshold_mode() == "abs",
                 "ReduceLROnPlateau: threshold_mode must be \"rel\" or \"abs\", got \"",
                 options_.threshold_mode(), "\"");
  TRAINBUS_CHECK(options_.factor() < 1.0, "ReduceLROnPlateau: factor must be < 1.0, got ",
                 options_.factor());
  const std::size_t groups = optimizer.param_groups().size();
  if (options_.min_lrs().empty()) {
    min_lr_for_all_groups_ = true;
    options_.min_lrs(std::vector<double>(groups, options_.min_lr()));
  } else {
    TRAINBUS_CHECK(options_.min_lrs().size() == groups, "ReduceLROnPlateau: expected ", groups,
                   " min_lrs (one per param group), got ", options_.min_lrs().size());
  }
  best_ = options_.mode() == "min" ? std::numeric_limits<double>::infinity()
                                   : -std::numeric_limits<double>::infinity();
}

bool ReduceLROnPlateau::is_better(double value) const {
  const bool relative = options_.threshold_mode() == "rel";
  const double threshold = options_.threshold();
  if (options_.mode() == "min")
    return relative ? value < best_ * (1.0 - threshold) : value < best_ - threshold;
  return relative ? value > best_ * (threshold + 1.0) : value > best_ + threshold;
}

void ReduceLROnPlateau::step(double metric) {
  // PyTorch's order: count the step, then cooldown, then reduce.
  ++last_epoch_;
  if (is_better(metric)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    ++num_bad_epochs_;
  }
  if (cooldown_counter_ > 0) {
    --cooldown_counter_;
    num_bad_epochs_ = 0;  // bad steps during a cooldown do not count
  }
  if (num_bad_epochs_ > options_.patience()) {
    next_lrs_ = get_current_lrs();
    // A param group added since (BaseFinetuning's unfreeze), as PyTorch 2's _reduce_lr: a single
    // min_lr covers it, per-group min_lrs cannot.
    if (next_lrs_.size() != options_.min_lrs().size()) {
      TRAINBUS_CHECK(min_lr_for_all_groups_, "ReduceLROnPlateau: the optimizer has ",
                     next_lrs_.size(), " param groups but min_lrs has ", options_.min_lrs().size(),
                     "; give min_lr (one for every group) or as many min_lrs as groups");
      options_.min_lrs(std::vector<double>(next_lrs_.size(), options_.min_lr()));
    }
    for (std::size_t i = 0; i < next_lrs_.size(); ++i) {
      const double lowered = std::max(next_lrs_[i] * options_.factor(), options_.min_lrs()[i]);
      if (next_lrs_[i] - lowered > options_.eps()) next_lrs_[i] = lowered;
    }
    cooldown_counter_ = options_.cooldown();
    num_bad_epochs_ = 0;
  }
  LRScheduler::step();  // sets get_lrs() and counts the step
  next_lrs_.clear();
}

std::vector<double> ReduceLROnPlateau::get_lrs() {
  return next_lrs_.empty() ? get_current_lrs() : next_lrs_;
}

StateDict ReduceLROnPlateau::state_dict() const {
  StateDict state;
  state.insert("best", best_);
  state.insert("num_bad_epochs", num_bad_epochs_);
  state.insert("cooldown_counter", cooldown_counter_);
  state.insert("last_epoch", last_epoch_);
  return state;
}

void ReduceLROnPlateau::load_state_dict(const StateDict& state) {
  best_ = state.at("best").toDouble();
  num_bad_epochs_ = state.at("num_bad_epochs").toInt();
  cooldown_counter_ = state.at("cooldown_counter").toInt();
  last_epoch_ = state.at("last_epoch").toInt();
}

}  // namespace trainbus
