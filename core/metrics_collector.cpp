#include "core/metrics_collector.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

#include <ATen/ATen.h>

#include "base/errors.h"

namespace trainbus {
namespace {

struct FxRule {
  std::string_view fx;
  MetricsCollector::Results results;
  bool step_level;  // step-level hooks default to on_step=true, on_epoch=false in training
};

// Lightning's defaults: on_step in training's step-level hooks, on_epoch everywhere else.
bool step_defaults(const FxRule& rule) {
  return rule.results == MetricsCollector::Results::kTrain && rule.step_level;
}

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

distributed::ReduceOp op_of(ReduceFx reduce_fx) {
  switch (reduce_fx) {
    case ReduceFx::kSum:
      return distributed::ReduceOp::kSum;
    case ReduceFx::kMax:
      return distributed::ReduceOp::kMax;
    case ReduceFx::kMin:
      return distributed::ReduceOp::kMin;
    case ReduceFx::kMean:
      break;
  }
  return distributed::ReduceOp::kMean;
}

// Lightning's _ResultMetric starts a max at -inf and a min at +inf.
double identity_of(ReduceFx reduce_fx) {
  switch (reduce_fx) {
    case ReduceFx::kMax:
      return -std::numeric_limits<double>::infinity();
    case ReduceFx::kMin:
      return std::numeric_limits<double>::infinity();
    case ReduceFx::kMean:
    case ReduceFx::kSum:
      break;
  }
  return 0.0;
}

// torch.maximum / torch.minimum on doubles: a NaN wins, as it does there.
double reduce_two(ReduceFx reduce_fx, double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  return reduce_fx == ReduceFx::kMax ? std::max(a, b) : std::min(a, b);
}

double epoch_value(ReduceFx reduce_fx, double value, double weight) {
  return reduce_fx == ReduceFx::kMean ? value / weight : value;
}

// The values of one-element double tensors, read with one transfer per device; a tensor given
// twice is read once.
std::vector<double> read_all(const std::vector<at::Tensor>& tensors) {
  std::vector<double> values(tensors.size());
  std::vector<bool> done(tensors.size(), false);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (done[i]) continue;
    const c10::Device device = tensors[i].device();
    std::vector<size_t> group;
    std::vector<at::Tensor> unique;
    std::map<const void*, size_t> position;  // TensorImpl -> index in `unique`
    std::vector<size_t> slot;
    for (size_t j = i; j < tensors.size(); ++j) {
      if (done[j] || tensors[j].device() != device) continue;
      done[j] = true;
      group.push_back(j);
      auto [it, inserted] = position.emplace(tensors[j].unsafeGetTensorImpl(), unique.size());
      if (inserted) unique.push_back(tensors[j].reshape({}));
      slot.push_back(it->second);
    }
    const at::Tensor host = at::stack(unique).to(at::kCPU).contiguous();
    const double* data = host.data_ptr<double>();
    for (size_t k = 0; k < group.size(); ++k) values[group[k]] = data[slot[k]];
  }
  return values;
}

}  // namespace

MetricsCollector::Logged MetricsCollector::check_and_register(std::string_view fx,
                                                              const std::string& name,
                                                              const LogOptions& options) {
  const std::optional<FxRule> rule = rule_for(fx);
  TRAINBUS_CHECK(
      rule.has_value(), "log(\"", name, "\") was called from `",
      fx.empty() ? "outside any hook" : fx,
      "`, where logging is not supported; log from training_step, validation_step, test_step or "
      "a train/validation/test batch or epoch hook");
  const bool training = rule->results == Results::kTrain;
  const bool on_step = options.on_step().value_or(step_defaults(*rule));
  const bool on_epoch = options.on_epoch().value_or(!step_defaults(*rule));
  TRAINBUS_CHECK(!(on_step && !rule->step_level), "log(\"", name, "\", on_step=true) in `", fx,
                 "`: an epoch-level hook has no step; use on_step=false (the default there)");
  const int64_t batch_size =
      options.batch_size().value_or(rule->step_level ? current_batch_size_ : 1);
  TRAINBUS_CHECK(batch_size > 0, "log(\"", name, "\"): batch_size must be > 0, got ", batch_size);

  // As Lightning's _ResultCollection.log: the loader's index goes into the stored key, and into
  // the published names as `/dataloader_idx_<i>` (_forked_name), unless add_dataloader_idx=false.
  const bool suffixed = options.add_dataloader_idx() && dataloader_idx_.has_value();
  const std::string suffix =
      suffixed ? "/dataloader_idx_" + std::to_string(*dataloader_idx_) : std::string();
  auto& entries = results_[rule->results];
  auto [it, inserted] = entries.try_emplace(name + suffix);
  Entry& entry = it->second;
  if (inserted) {
    entry.name = name;
    entry.suffix = suffix;
    entry.dataloader_idx = dataloader_idx_;
    entry.on_step = on_step;
    entry.on_epoch = on_epoch;
    entry.prog_bar = options.prog_bar();
    entry.logger = options.logger();
    entry.sync_dist = options.sync_dist();
    entry.reduce_fx = options.reduce_fx();
    entry.value = identity_of(entry.reduce_fx);
  } else {
    // As Lightning refuses other options for a name logged again in one hook; trainbus keeps one
    // value per name (not per hook and name), so it refuses them across hooks too.
    const bool same_options =
        entry.on_step == on_step && entry.on_epoch == on_epoch &&
        entry.reduce_fx == options.reduce_fx() && entry.prog_bar == options.prog_bar() &&
        entry.logger == options.logger() && entry.sync_dist == options.sync_dist();
    TRAINBUS_CHECK(same_options, "log(\"", name, "\") in `", fx, "` with on_step=", on_step,
                   ", on_epoch=", on_epoch, ", reduce_fx=", to_string(options.reduce_fx()),
                   ", prog_bar=", options.prog_bar(), ", logger=", options.logger(),
                   ", sync_dist=", options.sync_dist(),
                   " but it was logged earlier in this epoch with on_step=", entry.on_step,
                   ", on_epoch=", entry.on_epoch, ", reduce_fx=", to_string(entry.reduce_fx),
                   ", prog_bar=", entry.prog_bar, ", logger=", entry.logger,
                   ", sync_dist=", entry.sync_dist, "; log each name with one set of options");
    // Lightning refuses this too (the metadata's dataloader_idx differs).
    TRAINBUS_CHECK(
        entry.dataloader_idx == dataloader_idx_, "log(\"", name,
        "\", add_dataloader_idx=false) in `", fx, "` while ",
        dataloader_idx_ ? detail::concat("loader ", *dataloader_idx_) : std::string("no loader"),
        " runs, but it was logged while ",
        entry.dataloader_idx ? detail::concat("loader ", *entry.dataloader_idx)
                             : std::string("no loader"),
        " ran; with several val/test loaders give each loader's value its own name, or "
        "keep add_dataloader_idx=true (names get `/dataloader_idx_<i>`)");
  }
  return Logged{&entry, training, rule->step_level, on_step, on_epoch, batch_size};
}

void MetricsCollector::log(std::string_view fx, const std::string& name, double value,
                           const LogOptions& options,
                           const ReduceAcrossRanks& reduce_across_ranks) {
  const Logged logged = check_and_register(fx, name, options);
  Entry& entry = *logged.entry;
  const distributed::ReduceOp op = op_of(entry.reduce_fx);
  if (logged.on_step) {
    // As Lightning: a step value is reduced when logged; the epoch value at the epoch's end.
    const double step_value =
        options.sync_dist() && reduce_across_ranks ? reduce_across_ranks(value, op) : value;
    set_step_value(entry, logged.training, nullptr, step_value);
  }
  if (logged.on_epoch) {
    // A value logged in an epoch-level hook is final at once (below): under data-parallel
    // training it is the ranks' reduction from the start, in evaluation always, in training with
    // sync_dist. Step-level hooks' values are reduced at the epoch's end (synchronize_epoch).
    if (!logged.step_level && reduce_across_ranks && (options.sync_dist() || !logged.training)) {
      value = reduce_across_ranks(value, op);
      entry.reduced_when_logged = true;
    }
    // As Lightning's _ResultMetric.update: batch_size weighs a mean only.
    switch (entry.reduce_fx) {
      case ReduceFx::kMean:
        entry.value += value * static_cast<double>(logged.batch_size);
        entry.weight += static_cast<double>(logged.batch_size);
        break;
      case ReduceFx::kSum:
        entry.value += value;
        entry.weight += 1.0;
        break;
      case ReduceFx::kMax:
      case ReduceFx::kMin:
        entry.value = reduce_two(entry.reduce_fx, entry.value, value);
        entry.weight += 1.0;
        break;
    }
    // A value logged in an epoch-level hook is final at once, so that callbacks running after it
    // in the same hook (EarlyStopping after the module's on_train_epoch_end) can monitor it.
    if (!logged.step_level) {
      read_pending();
      publish_epoch_value(entry, nullptr);
    }
  }
}

void MetricsCollector::log(std::string_view fx, const std::string& name, const at::Tensor& value,
                           const LogOptions& options,
                           const ReduceAcrossRanks& reduce_across_ranks) {
  const std::optional<FxRule> rule = rule_for(fx);
  // Read at once: a CPU tensor (no device sync), a step value reduced across ranks now (a
  // collective anyway), and what an epoch-level hook logs (final at once, once an epoch).
  const bool read_now = (value.device().is_cpu() && !defer_cpu_reads_) || !rule.has_value() ||
                        !rule->step_level ||
                        (options.sync_dist() && reduce_across_ranks &&
                         options.on_step().value_or(step_defaults(*rule)));
  if (read_now) return log(fx, name, value.item<double>(), options, reduce_across_ranks);

  const Logged logged = check_and_register(fx, name, options);
  Entry& entry = *logged.entry;
  // A copy (also of a float64 tensor, which to() would return as it is): the value logged is the
  // value it had, whatever the caller does with its tensor afterwards.
  const at::Tensor tensor =
      value.detach().reshape({}).to(at::kDouble, /*non_blocking=*/false, /*copy=*/true);
  if (logged.on_step) set_step_value(entry, logged.training, &tensor, 0.0);
  if (logged.on_epoch) {
    at::Tensor& pending = entry.device_value;
    switch (entry.reduce_fx) {
      case ReduceFx::kMean: {
        const at::Tensor weighted = tensor * static_cast<double>(logged.batch_size);
        pending = pending.defined() ? pending + weighted : weighted;
        entry.weight += static_cast<double>(logged.batch_size);
        break;
      }
      case ReduceFx::kSum:
        pending = pending.defined() ? pending + tensor : tensor;
        entry.weight += 1.0;
        break;
      case ReduceFx::kMax:
        pending = pending.defined() ? at::maximum(pending, tensor) : tensor;
        entry.weight += 1.0;
        break;
      case ReduceFx::kMin:
        pending = pending.defined() ? at::minimum(pending, tensor) : tensor;
        entry.weight += 1.0;
        break;
    }
    has_pending_ = true;
  }
}

void MetricsCollector::set_step_value(const Entry& entry, bool training, const at::Tensor* tensor,
                                      double value) {
  const std::string name = entry.plain_name();
  const std::string key = entry.step_name();
  const auto put = [&](LazyMetrics& metrics, const std::string& where) {
    if (tensor != nullptr) {
      metrics.set(where, *tensor);
    } else {
      metrics.set(where, value);
    }
  };
  if (training) {
    put(callback_, name);
    put(callback_, key);
  }
  if (entry.logger) {
    put(logged_, key);
    put(batch_logged_, key);
  }
  if (entry.prog_bar) put(progress_bar_, key);
  if (tensor != nullptr) has_pending_ = true;
}

void MetricsCollector::read_pending() const {
  if (!has_pending_) return;
  LazyMetrics* const all[] = {&callback_, &logged_, &progress_bar_, &batch_logged_};
  std::vector<at::Tensor> tensors;
  for (LazyMetrics* metrics : all) {
    for (const auto& [key, tensor] : metrics->pending) tensors.push_back(tensor);
  }
  for (auto& [results, entries] : results_) {
    for (auto& [name, entry] : entries) {
      if (entry.device_value.defined()) tensors.push_back(entry.device_value);
    }
  }
  const std::vector<double> values = read_all(tensors);
  size_t next = 0;
  for (LazyMetrics* metrics : all) {
    for (const auto& [key, tensor] : metrics->pending) metrics->values[key] = values[next++];
    metrics->pending.clear();
  }
  for (auto& [results, entries] : results_) {
    for (auto& [name, entry] : entries) {
      if (!entry.device_value.defined()) continue;
      const double value = values[next++];
      entry.value = entry.reduce_fx == ReduceFx::kMean || entry.reduce_fx == ReduceFx::kSum
                        ? entry.value + value
                        : reduce_two(entry.reduce_fx, entry.value, value);
      entry.device_value = at::Tensor();
    }
  }
  has_pending_ = false;
}

void MetricsCollector::publish_epoch_value(const Entry& entry, Metrics* out) {
  if (!entry.on_epoch || entry.weight <= 0.0) return;
  const double value = epoch_value(entry.reduce_fx, entry.value, entry.weight);
  const std::string name = entry.plain_name();
  const std::string key = entry.epoch_name();
  callback_.set(name, value);
  callback_.set(key, value);
  if (entry.logger) logged_.set(key, value);
  if (entry.prog_bar) progress_bar_.set(key, value);
  if (out && entry.logger) (*out)[key] = value;
}

void MetricsCollector::synchronize_epoch(
    Results results, bool all,
    const std::function<void(std::vector<double>&, distributed::ReduceOp)>& reduce) {
  read_pending();
  std::vector<Entry*> entries;
  std::string names;
  for (auto& [name, entry] : results_[results]) {
    if (!entry.on_epoch || !(all || entry.sync_dist) || entry.reduced_when_logged) continue;
    entries.push_back(&entry);
    names += name;
    if (entry.reduce_fx != ReduceFx::kMean) names += std::string(":") + to_string(entry.reduce_fx);
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
                 "); every rank must log the same names with the same reduce_fx, also in "
                 "validation");
  if (entries.empty()) return;
  // As Lightning's sync with the reduce_fx's op: means and sums add up (a mean's weighted sum and
  // weight both), a max is the ranks' max, a min minus the max of the negations.
  std::vector<double> sums, maxima;
  for (const Entry* entry : entries) {
    switch (entry->reduce_fx) {
      case ReduceFx::kMean:
        sums.push_back(entry->value);
        sums.push_back(entry->weight);
        break;
      case ReduceFx::kSum:
        sums.push_back(entry->value);
        break;
      case ReduceFx::kMax:
        maxima.push_back(entry->value);
        break;
      case ReduceFx::kMin:
        maxima.push_back(-entry->value);
        break;
    }
  }
  if (!sums.empty()) reduce(sums, distributed::ReduceOp::kSum);
  if (!maxima.empty()) reduce(maxima, distributed::ReduceOp::kMax);
  size_t next_sum = 0, next_max = 0;
  for (Entry* entry : entries) {
    switch (entry->reduce_fx) {
      case ReduceFx::kMean:
        entry->value = sums[next_sum++];
        entry->weight = sums[next_sum++];
        break;
      case ReduceFx::kSum:
        entry->value = sums[next_sum++];
        break;
      case ReduceFx::kMax:
        entry->value = maxima[next_max++];
        break;
      case ReduceFx::kMin:
        entry->value = -maxima[next_max++];
        break;
    }
  }
}

Metrics MetricsCollector::end_epoch(Results results) {
  read_pending();
  Metrics epoch_values;
  for (const auto& [key, entry] : results_[results]) publish_epoch_value(entry, &epoch_values);
  return epoch_values;
}

Metrics MetricsCollector::epoch_values(Results results) const {
  read_pending();
  Metrics values;
  const auto found = results_.find(results);
  if (found == results_.end()) return values;
  for (const auto& [key, entry] : found->second) {
    if (entry.on_epoch && entry.logger && entry.weight > 0.0)
      values[entry.epoch_name()] = epoch_value(entry.reduce_fx, entry.value, entry.weight);
  }
  return values;
}

Metrics MetricsCollector::epoch_values(Results results,
                                       std::optional<int64_t> dataloader_idx) const {
  read_pending();
  Metrics values;
  const auto found = results_.find(results);
  if (found == results_.end()) return values;
  // As Lightning's _ResultCollection.valid_items: the loader's index must be equal.
  for (const auto& [key, entry] : found->second) {
    if (entry.dataloader_idx == dataloader_idx && entry.on_epoch && entry.logger &&
        entry.weight > 0.0)
      values[entry.epoch_name()] = epoch_value(entry.reduce_fx, entry.value, entry.weight);
  }
  return values;
}

void MetricsCollector::restore_callback_metrics(Metrics metrics) {
  callback_.clear();
  callback_.values = std::move(metrics);
}

void MetricsCollector::replay_progress_bar(Metrics values) {
  progress_bar_.clear();
  progress_bar_.values = std::move(values);
}

void MetricsCollector::clear() {
  results_.clear();
  dataloader_idx_.reset();
  callback_.clear();
  logged_.clear();
  progress_bar_.clear();
  batch_logged_.clear();
  has_pending_ = false;
}

void MetricsCollector::replay_step_values(const Metrics& logged) {
  static constexpr std::string_view kStep = "_step";
  for (const auto& [name, value] : logged) {
    logged_.set(name, value);
    callback_.set(name, value);
    if (name.size() > kStep.size() &&
        name.compare(name.size() - kStep.size(), kStep.size(), kStep) == 0) {
      callback_.set(name.substr(0, name.size() - kStep.size()), value);
    }
  }
}

void MetricsCollector::replay_epoch_values(const Metrics& logged) {
  for (const auto& [name, value] : logged) logged_.set(name, value);
}

}  // namespace trainbus
