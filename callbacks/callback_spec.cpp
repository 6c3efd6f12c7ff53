#include "callbacks/callback_spec.h"

#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include <c10/util/Exception.h>

#include "base/errors.h"
#include "callbacks/backbone_finetuning.h"
#include "callbacks/batch_size_finder.h"
#include "callbacks/device_stats_monitor.h"
#include "callbacks/early_stopping.h"
#include "callbacks/ema_weight_averaging.h"
#include "callbacks/gradient_accumulation_scheduler.h"
#include "callbacks/learning_rate_finder.h"
#include "callbacks/learning_rate_monitor.h"
#include "callbacks/model_checkpoint.h"
#include "callbacks/model_summary.h"
#include "callbacks/rich_model_summary.h"
#include "callbacks/spike_detection.h"
#include "callbacks/stochastic_weight_averaging.h"
#include "callbacks/timer.h"
#include "tuner/out_of_memory.h"

namespace trainbus::callbacks {
namespace {

// The whole of `text` as an integer, or nothing (std::stoll alone stops at the first non-digit).
std::optional<int64_t> whole_integer(const std::string& text) {
  try {
    std::size_t used = 0;
    const long long parsed = std::stoll(text, &used);
    if (used == text.size()) return static_cast<int64_t>(parsed);
  } catch (const std::exception&) {  // not a number, or out of range
  }
  return std::nullopt;
}

// The pieces of `text` between `separator`s, empty ones left out: "a,,b" is {"a", "b"}.
std::vector<std::string> split_nonempty(const std::string& text, char separator) {
  std::vector<std::string> pieces;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(separator, start);
    if (end == std::string::npos) end = text.size();
    if (end > start) pieces.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return pieces;
}

// One key=value of a spec, with the spec for errors.
struct Setting {
  const std::string& spec;
  const std::string& key;
  const std::string& value;

  [[noreturn]] void refuse(const std::string& expected) const {
    throw MisconfigurationError("--callback '" + spec + "': " + key + "=" + value + ": expected " +
                                expected);
  }
  std::string text() const { return value; }
  double number() const {
    try {
      std::size_t used = 0;
      const double parsed = std::stod(value, &used);
      if (used == value.size()) return parsed;
    } catch (const std::exception&) {
    }
    refuse("a number, e.g. 0.01");
  }
  int64_t integer() const {
    if (const auto parsed = whole_integer(value)) return *parsed;
    refuse("a whole number, e.g. 5");
  }
  bool boolean() const {
    if (value == "true" || value == "1") return true;
    if (value == "false" || value == "0") return false;
    refuse("true or false");
  }
  // A finite tolerance, or "none" for Lightning's None (no bound).
  std::optional<double> optional_tolerance() const {
    if (value == "none") return std::nullopt;
    const double parsed = number();
    if (!std::isfinite(parsed)) refuse("a finite number, or none for no bound");
    return parsed;
  }
  std::string mode() const {
    if (value != "min" && value != "max") refuse("min or max");
    return value;
  }
};

template <class Options>
using Setters = std::map<std::string, std::function<void(Options&, const Setting&)>>;

const Setters<EarlyStoppingOptions>& early_stopping_setters() {
  static const Setters<EarlyStoppingOptions> setters{
      {"monitor", [](auto& o, const Setting& s) { o.monitor(s.text()); }},
      {"min_delta", [](auto& o, const Setting& s) { o.min_delta(s.number()); }},
      {"patience", [](auto& o, const Setting& s) { o.patience(s.integer()); }},
      {"verbose", [](auto& o, const Setting& s) { o.verbose(s.boolean()); }},
      {"mode", [](auto& o, const Setting& s) { o.mode(s.mode()); }},
      {"strict", [](auto& o, const Setting& s) { o.strict(s.boolean()); }},
      {"check_finite", [](auto& o, const Setting& s) { o.check_finite(s.boolean()); }},
      {"stopping_threshold", [](auto& o, const Setting& s) { o.stopping_threshold(s.number()); }},
      {"divergence_threshold",
       [](auto& o, const Setting& s) { o.divergence_threshold(s.number()); }},
      {"check_on_train_epoch_end",
       [](auto& o, const Setting& s) { o.check_on_train_epoch_end(s.boolean()); }},
  };
  return setters;
}

const Setters<ModelCheckpointOptions>& model_checkpoint_setters() {
  using SaveLast = ModelCheckpointOptions::SaveLast;
  static const Setters<ModelCheckpointOptions> setters{
      {"dirpath", [](auto& o, const Setting& s) { o.dirpath(s.text()); }},
      {"filename", [](auto& o, const Setting& s) { o.filename(s.text()); }},
      {"monitor", [](auto& o, const Setting& s) { o.monitor(s.text()); }},
      {"verbose", [](auto& o, const Setting& s) { o.verbose(s.boolean()); }},
      {"save_last",
       [](auto& o, const Setting& s) {
         if (s.value == "link") {
           o.save_last(SaveLast::kLink);
         } else if (s.value == "copy") {
           o.save_last(SaveLast::kCopy);
         } else if (s.value == "true" || s.value == "false") {
           o.save_last(s.value == "true" ? SaveLast::kCopy : SaveLast::kNo);
         } else {
           s.refuse("true, false, link or copy");
         }
       }},
      {"save_top_k", [](auto& o, const Setting& s) { o.save_top_k(s.integer()); }},
      {"save_on_exception", [](auto& o, const Setting& s) { o.save_on_exception(s.boolean()); }},
      {"save_weights_only", [](auto& o, const Setting& s) { o.save_weights_only(s.boolean()); }},
      {"mode", [](auto& o, const Setting& s) { o.mode(s.mode()); }},
      {"auto_insert_metric_name",
       [](auto& o, const Setting& s) { o.auto_insert_metric_name(s.boolean()); }},
      {"every_n_train_steps",
       [](auto& o, const Setting& s) { o.every_n_train_steps(s.integer()); }},
      {"train_time_interval",
       [](auto& o, const Setting& s) {
         const double seconds = s.number();
         if (!(seconds > 0 && seconds < 1e9)) s.refuse("a positive number of seconds, e.g. 3600");
         o.train_time_interval(std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
       }},
      {"every_n_epochs", [](auto& o, const Setting& s) { o.every_n_epochs(s.integer()); }},
      {"save_on_train_epoch_end",
       [](auto& o, const Setting& s) { o.save_on_train_epoch_end(s.boolean()); }},
      {"enable_version_counter",
       [](auto& o, const Setting& s) { o.enable_version_counter(s.boolean()); }},
      {"async", [](auto& o, const Setting& s) { o.async(s.boolean()); }},
  };
  return setters;
}

const Setters<LearningRateMonitorOptions>& learning_rate_monitor_setters() {
  static const Setters<LearningRateMonitorOptions> setters{
      {"logging_interval",
       [](auto& o, const Setting& s) {
         if (s.value != "step" && s.value != "epoch")
           s.refuse("step or epoch (unset: each scheduler's own)");
         o.logging_interval(s.value);
       }},
      {"log_momentum", [](auto& o, const Setting& s) { o.log_momentum(s.boolean()); }},
      {"log_weight_decay", [](auto& o, const Setting& s) { o.log_weight_decay(s.boolean()); }},
  };
  return setters;
}

const Setters<TimerOptions>& timer_setters() {
  static const Setters<TimerOptions> setters{
      {"duration",
       [](auto& o, const Setting& s) {
         try {
           o.duration(Duration(s.value));
         } catch (const MisconfigurationError&) {
           s.refuse("DD:HH:MM:SS, e.g. 00:12:00:00 for 12 hours");
         }
       }},
      {"interval",
       [](auto& o, const Setting& s) {
         if (s.value != "step" && s.value != "epoch") s.refuse("step or epoch");
         o.interval(s.value);
       }},
      {"verbose", [](auto& o, const Setting& s) { o.verbose(s.boolean()); }},
  };
  return setters;
}

const Setters<SpikeDetectionOptions>& spike_detection_setters() {
  static const Setters<SpikeDetectionOptions> setters{
      {"mode", [](auto& o, const Setting& s) { o.mode(s.mode()); }},
      {"window", [](auto& o, const Setting& s) { o.window(s.integer()); }},
      {"warmup", [](auto& o, const Setting& s) { o.warmup(s.integer()); }},
      {"atol", [](auto& o, const Setting& s) { o.atol(s.optional_tolerance()); }},
      {"rtol", [](auto& o, const Setting& s) { o.rtol(s.optional_tolerance()); }},
      {"exclude_batches_path", [](auto& o, const Setting& s) { o.exclude_batches_path(s.text()); }},
      {"finite_only", [](auto& o, const Setting& s) { o.finite_only(s.boolean()); }},
  };
  return setters;
}

// GradientAccumulationScheduler's one option, a map: "scheduling=EPOCH:FACTOR;EPOCH:FACTOR".
struct SchedulingOptions {
  std::map<int64_t, int64_t> scheduling;
};

const Setters<SchedulingOptions>& gradient_accumulation_setters() {
  static const Setters<SchedulingOptions> setters{
      {"scheduling",
       [](auto& o, const Setting& s) {
         const char* expected =
             "EPOCH:FACTOR pairs separated by ';', e.g. 0:1;4:2 (0-based epochs)";
         for (const std::string& pair : split_nonempty(s.value, ';')) {
           const std::size_t colon = pair.find(':');
           if (colon == std::string::npos) s.refuse(expected);
           const std::string epoch_text = pair.substr(0, colon);
           const auto epoch = whole_integer(epoch_text);
           const auto factor = whole_integer(pair.substr(colon + 1));
           if (!epoch || !factor) s.refuse(expected);
           if (!o.scheduling.emplace(*epoch, *factor).second) {
             s.refuse(std::string("each epoch once, but epoch ") + epoch_text + " is given twice");
           }
         }
         if (o.scheduling.empty()) s.refuse(expected);
       }},
  };
  return setters;
}

const Setters<DeviceStatsMonitorOptions>& device_stats_monitor_setters() {
  static const Setters<DeviceStatsMonitorOptions> setters{
      {"cpu_stats", [](auto& o, const Setting& s) { o.cpu_stats(s.boolean()); }},
      {"filter_keys",
       [](auto& o, const Setting& s) {
         const std::vector<std::string> keys = split_nonempty(s.value, ';');
         if (keys.empty()) s.refuse("stat names separated by ';', e.g. cpu_percent;cpu_vm_percent");
         o.filter_keys(keys);
       }},
  };
  return setters;
}

const Setters<EMAWeightAveragingOptions>& ema_setters() {
  static const Setters<EMAWeightAveragingOptions> setters{
      {"decay", [](auto& o, const Setting& s) { o.decay(s.number()); }},
      {"update_every_n_steps",
       [](auto& o, const Setting& s) { o.update_every_n_steps(s.integer()); }},
      {"update_starting_at_step",
       [](auto& o, const Setting& s) { o.update_starting_at_step(s.integer()); }},
      {"update_starting_at_epoch",
       [](auto& o, const Setting& s) { o.update_starting_at_epoch(s.integer()); }},
      {"use_buffers", [](auto& o, const Setting& s) { o.use_buffers(s.boolean()); }},
  };
  return setters;
}

const Setters<BackboneFinetuningOptions>& backbone_finetuning_setters() {
  static const Setters<BackboneFinetuningOptions> setters{
      {"unfreeze_backbone_at_epoch",
       [](auto& o, const Setting& s) { o.unfreeze_backbone_at_epoch(s.integer()); }},
      {"lambda_factor",  // lambda_func returning this factor at every epoch
       [](auto& o, const Setting& s) {
         const double factor = s.number();
         o.lambda_func([factor](int64_t) { return factor; });
       }},
      {"backbone_initial_ratio_lr",
       [](auto& o, const Setting& s) { o.backbone_initial_ratio_lr(s.number()); }},
      {"backbone_initial_lr", [](auto& o, const Setting& s) { o.backbone_initial_lr(s.number()); }},
      {"should_align", [](auto& o, const Setting& s) { o.should_align(s.boolean()); }},
      {"initial_denom_lr", [](auto& o, const Setting& s) { o.initial_denom_lr(s.number()); }},
      {"train_bn", [](auto& o, const Setting& s) { o.train_bn(s.boolean()); }},
      {"verbose", [](auto& o, const Setting& s) { o.verbose(s.boolean()); }},
      {"rounding", [](auto& o, const Setting& s) { o.rounding(static_cast<int>(s.integer())); }},
      {"backbone", [](auto& o, const Setting& s) { o.backbone(s.text()); }},
  };
  return setters;
}

const Setters<StochasticWeightAveragingOptions>& swa_setters() {
  static const Setters<StochasticWeightAveragingOptions> setters{
      {"swa_lrs",
       [](auto& o, const Setting& s) {
         const char* expected = "a number, or one per param group separated by ';', e.g. 0.05";
         std::vector<double> lrs;
         for (const std::string& piece : split_nonempty(s.value, ';')) {
           lrs.push_back(Setting{s.spec, s.key, piece}.number());
         }
         if (lrs.empty()) s.refuse(expected);
         o.swa_lrs(lrs);
       }},
      {"swa_epoch_start",
       [](auto& o, const Setting& s) {
         // Lightning's int | float: "2" is the 2nd epoch, "0.5" half of max_epochs.
         if (const auto epoch = whole_integer(s.value)) {
           o.swa_epoch_start(*epoch);
         } else {
           o.swa_epoch_start(s.number());
         }
       }},
      {"annealing_epochs", [](auto& o, const Setting& s) { o.annealing_epochs(s.integer()); }},
      {"annealing_strategy",
       [](auto& o, const Setting& s) {
         if (s.value != "cos" && s.value != "linear") s.refuse("cos or linear");
         o.annealing_strategy(s.value);
       }},
      {"device",
       [](auto& o, const Setting& s) {
         if (s.value == "none") {
           o.device(std::nullopt);  // the module's
           return;
         }
         try {
           o.device(c10::Device(s.value));
         } catch (const c10::Error&) {
           s.refuse("a device (cpu, cuda, cuda:1), or none for the module's");
         }
       }},
  };
  return setters;
}

const Setters<ModelSummaryOptions>& model_summary_setters() {
  static const Setters<ModelSummaryOptions> setters{
      {"max_depth", [](auto& o, const Setting& s) { o.max_depth(s.integer()); }},
  };
  return setters;
}

const Setters<RichModelSummaryOptions>& rich_model_summary_setters() {
  static const Setters<RichModelSummaryOptions> setters{
      {"max_depth", [](auto& o, const Setting& s) { o.max_depth(s.integer()); }},
      {"header_style", [](auto& o, const Setting& s) { o.header_style(s.text()); }},
  };
  return setters;
}

const Setters<tuner::BatchSizeFinderOptions>& batch_size_finder_setters() {
  static const Setters<tuner::BatchSizeFinderOptions> setters{
      {"mode",
       [](auto& o, const Setting& s) {
         if (s.value != "power" && s.value != "binsearch") s.refuse("power or binsearch");
         o.mode(tuner::parse_batch_size_mode(s.value));
       }},
      {"steps_per_trial", [](auto& o, const Setting& s) { o.steps_per_trial(s.integer()); }},
      {"init_val", [](auto& o, const Setting& s) { o.init_val(s.integer()); }},
      {"max_trials", [](auto& o, const Setting& s) { o.max_trials(s.integer()); }},
      {"batch_arg_name", [](auto& o, const Setting& s) { o.batch_arg_name(s.text()); }},
      {"margin", [](auto& o, const Setting& s) { o.margin(s.number()); }},
      {"max_val", [](auto& o, const Setting& s) { o.max_val(s.integer()); }},
      {"memory_budget",
       [](auto& o, const Setting& s) {
         if (s.value == "none") {
           o.memory_budget(std::nullopt);
           return;
         }
         try {
           o.memory_budget(tuner::parse_byte_size(s.value, "memory_budget"));
         } catch (const MisconfigurationError&) {
           s.refuse("bytes, e.g. 268435456, 256MiB or 1.5GiB, or none");
         }
       }},
  };
  return setters;
}

const Setters<LearningRateFinderOptions>& learning_rate_finder_setters() {
  static const Setters<LearningRateFinderOptions> setters{
      {"min_lr", [](auto& o, const Setting& s) { o.min_lr(s.number()); }},
      {"max_lr", [](auto& o, const Setting& s) { o.max_lr(s.number()); }},
      {"num_training_steps", [](auto& o, const Setting& s) { o.num_training_steps(s.integer()); }},
      {"mode",
       [](auto& o, const Setting& s) {
         if (s.value != "exponential" && s.value != "linear") s.refuse("exponential or linear");
         o.mode(tuner::parse_lr_finder_mode(s.value));
       }},
      {"early_stop_threshold",
       [](auto& o, const Setting& s) { o.early_stop_threshold(s.optional_tolerance()); }},
      {"update_attr", [](auto& o, const Setting& s) { o.update_attr(s.boolean()); }},
      {"attr_name", [](auto& o, const Setting& s) { o.attr_name(s.text()); }},
  };
  return setters;
}

template <class Options>
std::string key_list(const Setters<Options>& setters) {
  std::string keys;
  for (const auto& [key, setter] : setters) keys += (keys.empty() ? "" : ", ") + key;
  return keys;
}

template <class Options>
Options parse_options(const std::string& spec, const std::string& name, const std::string& body,
                      const Setters<Options>& setters, Options options = {}) {
  for (const std::string& item : split_nonempty(body, ',')) {
    const std::size_t equals = item.find('=');
    if (equals == std::string::npos) {
      throw MisconfigurationError("--callback '" + spec + "': '" + item +
                                  "' is not key=value; e.g. " + name + ":monitor=val_loss");
    }
    const std::string key = item.substr(0, equals);
    const std::string value = item.substr(equals + 1);
    const auto setter = setters.find(key);
    if (setter == setters.end()) {
      throw MisconfigurationError("--callback '" + spec + "': " + name + " has no option '" + key +
                                  "'; it takes " + key_list(setters));
    }
    setter->second(options, Setting{spec, key, value});
  }
  return options;
}

}  // namespace

std::string describe_callback_specs(bool deciding_only) {
  std::string text = "early_stopping: " + key_list(early_stopping_setters()) +
                     "\nmodel_checkpoint: " + key_list(model_checkpoint_setters()) + "\n";
  if (!deciding_only) {
    text += "learning_rate_monitor: " + key_list(learning_rate_monitor_setters()) +
            "\ntimer: " + key_list(timer_setters()) +
            "\ngradient_accumulation_scheduler: scheduling=EPOCH:FACTOR;EPOCH:FACTOR" +
            "\nspike_detection: " + key_list(spike_detection_setters()) +
            "\ndevice_stats_monitor: " + key_list(device_stats_monitor_setters()) +
            "\nema_weight_averaging: " + key_list(ema_setters()) +
            "\nbackbone_finetuning: " + key_list(backbone_finetuning_setters()) +
            "\nstochastic_weight_averaging: " + key_list(swa_setters()) +
            "\nmodel_summary: " + key_list(model_summary_setters()) +
            "\nrich_model_summary: " + key_list(rich_model_summary_setters()) +
            "\nbatch_size_finder: " + key_list(batch_size_finder_setters()) +
            "\nlearning_rate_finder: " + key_list(learning_rate_finder_setters()) + "\n";
  }
  return text;
}

bool callback_decides(const std::string& spec) {
  const std::string name = spec.substr(0, spec.find(':'));
  return name == "early_stopping" || name == "model_checkpoint";
}

std::shared_ptr<Callback> make_callback(const std::string& spec, const SpecDefaults& defaults) {
  const std::size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  const std::string body = colon == std::string::npos ? std::string() : spec.substr(colon + 1);
  if (name == "early_stopping") {
    return std::make_shared<EarlyStopping>(
        parse_options(spec, name, body, early_stopping_setters()));
  }
  if (name == "model_checkpoint") {
    ModelCheckpointOptions start;
    start.dirpath(defaults.checkpoint_dirpath);
    return std::make_shared<ModelCheckpoint>(
        parse_options(spec, name, body, model_checkpoint_setters(), start));
  }
  if (name == "learning_rate_monitor") {
    return std::make_shared<LearningRateMonitor>(
        parse_options(spec, name, body, learning_rate_monitor_setters()));
  }
  if (name == "timer") {
    return std::make_shared<Timer>(parse_options(spec, name, body, timer_setters()));
  }
  if (name == "gradient_accumulation_scheduler") {
    const SchedulingOptions options =
        parse_options(spec, name, body, gradient_accumulation_setters());
    TRAINBUS_CHECK(!options.scheduling.empty(), "--callback '", spec,
                   "': gradient_accumulation_scheduler needs scheduling=EPOCH:FACTOR;..., e.g. "
                   "'gradient_accumulation_scheduler:scheduling=0:1;4:2'");
    try {
      return std::make_shared<GradientAccumulationScheduler>(options.scheduling);
    } catch (const MisconfigurationError& e) {
      throw MisconfigurationError("--callback '" + spec + "': " + e.what());
    }
  }
  if (name == "spike_detection") {
    try {
      return std::make_shared<SpikeDetection>(
          parse_options(spec, name, body, spike_detection_setters()));
    } catch (const MisconfigurationError& e) {
      if (std::string(e.what()).rfind("--callback", 0) == 0) throw;
      throw MisconfigurationError("--callback '" + spec + "': " + e.what());
    }
  }
  try {
    if (name == "device_stats_monitor") {
      return std::make_shared<DeviceStatsMonitor>(
          parse_options(spec, name, body, device_stats_monitor_setters()));
    }
    if (name == "ema_weight_averaging") {
      return std::make_shared<EMAWeightAveraging>(parse_options(spec, name, body, ema_setters()));
    }
    if (name == "backbone_finetuning") {
      return std::make_shared<BackboneFinetuning>(
          parse_options(spec, name, body, backbone_finetuning_setters()));
    }
    if (name == "stochastic_weight_averaging") {
      return std::make_shared<StochasticWeightAveraging>(
          parse_options(spec, name, body, swa_setters()));
    }
    if (name == "model_summary") {
      return std::make_shared<ModelSummary>(
          parse_options(spec, name, body, model_summary_setters()));
    }
    if (name == "rich_model_summary") {
      return std::make_shared<RichModelSummary>(
          parse_options(spec, name, body, rich_model_summary_setters()));
    }
    if (name == "batch_size_finder") {
      return std::make_shared<BatchSizeFinder>(
          parse_options(spec, name, body, batch_size_finder_setters()));
    }
    if (name == "learning_rate_finder") {
      return std::make_shared<LearningRateFinder>(
          parse_options(spec, name, body, learning_rate_finder_setters()));
    }
  } catch (const MisconfigurationError& e) {
    if (std::string(e.what()).rfind("--callback", 0) == 0) throw;
    throw MisconfigurationError("--callback '" + spec + "': " + e.what());
  }
  throw MisconfigurationError("--callback '" + spec + "': no built-in callback is named '" + name +
                              "'; the names are early_stopping, model_checkpoint, "
                              "learning_rate_monitor, timer, gradient_accumulation_scheduler, "
                              "spike_detection, model_summary, rich_model_summary, "
                              "device_stats_monitor, ema_weight_averaging, "
                              "backbone_finetuning, stochastic_weight_averaging, "
                              "batch_size_finder and learning_rate_finder, e.g. "
                              "'early_stopping:monitor=val_loss,patience=5'");
}

}  // namespace trainbus::callbacks
