#include "core/metrics_collector.h"

#include <array>
#include <cmath>
#include <optional>

#include "base/errors.h"

namespace trainbus {
namespace {

struct FxRule {
  std::string_view fx;
  MetricsCollector::Results results;
  bool step_level;  // step-level hooks default to on_step=true, on_epoch=false in training
};

using R = MetricsCollector::Results;

// Where Module::log may be called, and what it means there (Lightning's _FxValidator).
constexpr std::array<FxRule, 23> kRules{{
    {"training_step", R::kTrain, true},
    {"train_batch_start", R::kTrain, true},
    {"train_batch_end", R::kTrain, true},
    {"before_zero_grad", R::kTrain, true},
    {"before_backward", R::kTrain, true},
    {"after_backward", R::kTrain, true},
    {"before_optimizer_step", R::kTrain, true},
    {"after_optimizer_step", R::kTrain, true},
    {"train_start", R::kTrain, false},
    {"train_epoch_start", R::kTrain, false},
    {"train_epoch_end", R::kTrain, false},
    {"validation_step", R::kValidation, true},
    {"validation_batch_start", R::kValidation, true},
    {"validation_batch_end", R::kValidation, true},
    {"validation_start", R::kValidation, false},
    {"validation_epoch_start", R::kValidation, false},
    {"validation_epoch_end", R::kValidation, false},
    {"test_step", R::kTest, true},
    {"test_batch_start", R::kTest, true},
    {"test_batch_end", R::kTest, true},
    {"test_start", R::kTest, false},
    {"test_epoch_start", R::kTest, false},
    {"test_epoch_end", R::kTest, false},
}};

std::optional<FxRule> rule_for(std::string_view fx) {
  for (const FxRule& rule : kRules) {
    if (rule.fx == fx) return rule;
  }
  return std::nullopt;
}

std::string step_name(const std::string& name, bool forked) {
  return forked ? name + "_step" : name;
}
std::string epoch_name(const std::string& name, bool forked) {
  return forked ? name + "_epoch" : name;
}

}  // namespace

void MetricsCollector::log(std::string_view fx, const std::string& name, double value,
                           const LogOptions& options,
                           const std::function<double(double)>& mean_across_ranks) {
  const std::optional<FxRule> rule = rule_for(fx);
  TRAINBUS_CHECK(
      rule.has_value(), "log(\"", name, "\") was called from `",
      fx.empty() ? "outside any hook" : fx,
      "`, where logging is not supported; log from training_step, validation_step, test_step or "
      "a train/validation/test batch or epoch hook");
  const bool training = rule->results == Results::kTrain;
  const bool step_defaults = training && rule->step_level;
  const bool on_step = options.on_step().value_or(step_defaults);
  const bool on_epoch = options.on_epoch().value_or(!step_defaults);
  TRAINBUS_CHECK(!(on_step && !rule->step_level), "log(\"", name, "\", on_step=true) in `", fx,
                 "`: an epoch-level hook has no step; use on_step=false (the default there)");
  const int64_t batch_size =
      options.batch_size().value_or(rule->step_level ? current_batch_size_ : 1);
  TRAINBUS_CHECK(batch_size > 0, "log(\"", name, "\"): batch_size must be > 0, got ", batch_size);

  auto& entries = results_[rule->results];
  auto [it, inserted] = entries.try_emplace(name);
  Entry& entry = it->second;
  if (inserted) {
    entry.on_step = on_step;
    entry.on_epoch = on_epoch;
    entry.prog_bar = options.prog_bar();
    entry.logger = options.logger();
    entry.sync_dist = options.sync_dist();
  } else {
    TRAINBUS_CHECK(entry.on_step == on_step && entry.on_epoch == on_epoch, "log(\"", name,
                   "\") in `", fx, "` with on_step=", on_step, ", on_epoch=", on_epoch,
                   " but it was logged earlier in this epoch with on_step=", entry.on_step,
                   ", on_epoch=", entry.on_epoch, "; log each name with one set of options");
  }
  const bool forked = on_step && on_epoch;

  if (on_step) {
    // As Lightning: a step value is reduced when logged; the epoch mean at the epoch's end.
    const double step_value =
        options.sync_dist() && mean_across_ranks ? mean_across_ranks(value) : value;
    const std::string key = step_name(name, forked);
    if (training) {
      callback_[name] = step_value;
      callback_[key] = step_value;
    }
    if (entry.logger) {
      logged_[key] = step_value;
      batch_logged_[key] = step_value;
    }
    if (entry.prog_bar) progress_bar_[key] = step_value;
  }
  if (on_epoch) {
    // A value logged in an epoch-level hook is final at once (below): under data-parallel
    // training it is the ranks' mean from the start, in evaluation always, in training with
    // sync_dist. Step-level hooks' values are reduced at the epoch's end (synchronize_epoch).
    if (!rule->step_level && mean_across_ranks && (options.sync_dist() || !training))
      value = mean_across_ranks(value);
    entry.weighted_sum += value * static_cast<double>(batch_size);
    entry.weight += static_cast<double>(batch_size);
    // A value logged in an epoch-level hook is final at once, so that callbacks running after it
    // in the same hook (EarlyStopping after the module's on_train_epoch_end) can monitor it.
    if (!rule->step_level) publish_epoch_value(name, entry, nullptr);
  }
}

void MetricsCollector::publish_epoch_value(const std::string& name, const Entry& entry,
                                           Metrics* out) {
  if (!entry.on_epoch || entry.weight <= 0.0) return;
  const double mean = entry.weighted_sum / entry.weight;
  const bool forked = entry.on_step && entry.on_epoch;
  const std::string key = epoch_name(name, forked);
  callback_[name] = mean;
  callback_[key] = mean;
  if (entry.logger) logged_[key] = mean;
  if (entry.prog_bar) progress_bar_[key] = mean;
  if (out && entry.logger) (*out)[key] = mean;
}

void MetricsCollector::synchronize_epoch(
    Results results, bool all,
    const std::function<void(std::vector<double>&, distributed::ReduceOp)>& reduce) {
  std::vector<Entry*> entries;
  std::string names;
  for (auto& [name, entry] : results_[results]) {
    if (!entry.on_epoch || !(all || entry.sync_dist)) continue;
    entries.push_back(&entry);
    names += name;
    names += ' ';
  }
  // Every rank must reduce the same entries in the same order: compare the name lists first
  // (their count and a hash, as exact doubles). One max over the values and their negations
  // gives the largest and the smallest: the lists agree when both are this rank's.
  const double count = static_cast<double>(entries.size());
  const double hash = static_cast<double>(std::hash<std::string>{}(names) >> 12);  // < 2^53
  const std::vector<double> own{count, hash, -count, -hash};
  std::vector<double> extremes = own;
  reduce(extremes, distributed::ReduceOp::kMax);
  TRAINBUS_CHECK(extremes == own,
                 "data-parallel training: the ranks logged different epoch metrics (this rank: ",
                 names.empty() ? std::string("none") : names,
                 "); every rank must log the same names, also in validation");
  if (entries.empty()) return;
  std::vector<double> sums;
  for (const Entry* entry : entries) {
    sums.push_back(entry->weighted_sum);
    sums.push_back(entry->weight);
  }
  reduce(sums, distributed::ReduceOp::kSum);
  for (size_t i = 0; i < entries.size(); ++i) {
    entries[i]->weighted_sum = sums[2 * i];
    entries[i]->weight = sums[2 * i + 1];
  }
}

Metrics MetricsCollector::end_epoch(Results results) {
  Metrics epoch_values;
  for (const auto& [name, entry] : results_[results])
    publish_epoch_value(name, entry, &epoch_values);
  return epoch_values;
}

Metrics MetricsCollector::epoch_values(Results results) const {
  Metrics values;
  const auto found = results_.find(results);
  if (found == results_.end()) return values;
  for (const auto& [name, entry] : found->second) {
    if (entry.on_epoch && entry.logger && entry.weight > 0.0) {
      values[epoch_name(name, entry.on_step && entry.on_epoch)] = entry.weighted_sum / entry.weight;
    }
  }
  return values;
}

void MetricsCollector::clear() {
  results_.clear();
  callback_.clear();
  logged_.clear();
  progress_bar_.clear();
  batch_logged_.clear();
}

void MetricsCollector::replay_step_values(const Metrics& logged) {
  static constexpr std::string_view kStep = "_step";
  for (const auto& [name, value] : logged) {
    logged_[name] = value;
    callback_[name] = value;
    if (name.size() > kStep.size() &&
        name.compare(name.size() - kStep.size(), kStep.size(), kStep) == 0) {
      callback_[name.substr(0, name.size() - kStep.size())] = value;
    }
  }
}

void MetricsCollector::replay_epoch_values(const Metrics& logged) {
  for (const auto& [name, value] : logged) logged_[name] = value;
}

}  // namespace trainbus
