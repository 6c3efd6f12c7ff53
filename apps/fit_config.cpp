#include "apps/fit_config.h"

#include <cctype>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "base/errors.h"
#include "base/yaml_scalar.h"

namespace trainbus::apps {
namespace {

// How a key's value becomes flags.
enum class Kind {
  kValue,      // `key: 3` -> --flag 3
  kSwitch,     // `key: true` -> --flag=true
  kEnable,     // `enable_x: false` -> --no-x=true
  kCallbacks,  // a list -> --callback SPEC per item
};

struct ConfigKey {
  const char* section;  // "" at the top level
  const char* key;
  const char* flag;
  Kind kind;
  std::string (*value)(const FitArguments&);  // the value in `args`, as YAML
};

std::string integer(int64_t value) { return std::to_string(value); }
std::string text(const std::string& value) { return yaml_quoted(value); }
std::string text_or_null(const std::string& value) {
  return value.empty() ? "null" : yaml_quoted(value);
}
std::string boolean(bool value) { return value ? "true" : "false"; }
// A batch limit as given: 10 batches, or the fraction 0.25.
std::string batch_limit(const std::string& value) { return yaml_scalar_or_quoted(value); }

// Every flag of `trainbus fit`, under LightningCLI's section and Lightning's name where Lightning
// has one. The order is the printed order.
const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = {
      {"", "seed_everything", "--seed", Kind::kValue,
       [](const FitArguments& a) { return std::to_string(a.seed); }},
      {"trainer", "default_root_dir", "--out", Kind::kValue,
       [](const FitArguments& a) { return text(a.out); }},
      {"trainer", "device", "--device", Kind::kValue,
       [](const FitArguments& a) { return text(a.device); }},
      {"trainer", "max_epochs", "--max-epochs", Kind::kValue,
       [](const FitArguments& a) {
         return a.max_epochs ? integer(*a.max_epochs) : std::string("null");
       }},
      {"trainer", "max_steps", "--max-steps", Kind::kValue,
       [](const FitArguments& a) { return integer(a.max_steps); }},
      {"trainer", "max_time", "--max-time", Kind::kValue,
       [](const FitArguments& a) { return text_or_null(a.max_time); }},
      {"trainer", "limit_train_batches", "--limit-train-batches", Kind::kValue,
       [](const FitArguments& a) { return batch_limit(a.limit_train_batches); }},
      {"trainer", "limit_val_batches", "--limit-val-batches", Kind::kValue,
       [](const FitArguments& a) { return batch_limit(a.limit_val_batches); }},
      {"trainer", "limit_test_batches", "--limit-test-batches", Kind::kValue,
       [](const FitArguments& a) { return batch_limit(a.limit_test_batches); }},
      {"trainer", "num_sanity_val_steps", "--num-sanity-val-steps", Kind::kValue,
       [](const FitArguments& a) { return integer(a.num_sanity_val_steps); }},
      {"trainer", "log_every_n_steps", "--log-every-n-steps", Kind::kValue,
       [](const FitArguments& a) { return integer(a.log_every_n_steps); }},
      {"trainer", "accumulate_grad_batches", "--accumulate-grad-batches", Kind::kValue,
       [](const FitArguments& a) { return integer(a.accumulate_grad_batches); }},
      {"trainer", "gradient_clip_val", "--gradient-clip-val", Kind::kValue,
       [](const FitArguments& a) {
         return a.gradient_clip_val ? yaml_float(*a.gradient_clip_val) : std::string("null");
       }},
      {"trainer", "deterministic", "--deterministic", Kind::kSwitch,
       [](const FitArguments& a) { return boolean(a.deterministic); }},
      {"trainer", "enable_checkpointing", "--no-checkpoint", Kind::kEnable,
       [](const FitArguments& a) { return boolean(a.checkpoint); }},
      {"trainer", "enable_progress_bar", "--no-progress-bar", Kind::kEnable,
       [](const FitArguments& a) { return boolean(a.progress_bar); }},
      {"trainer", "enable_model_summary", "--no-model-summary", Kind::kEnable,
       [](const FitArguments& a) { return boolean(a.model_summary); }},
      {"trainer", "callbacks", "--callback", Kind::kCallbacks, nullptr},
      {"model", "architecture", "--model", Kind::kValue,
       [](const FitArguments& a) { return text(a.model); }},
      {"model", "lr", "--lr", Kind::kValue, [](const FitArguments& a) { return yaml_float(a.lr); }},
      {"model", "weight_decay", "--weight-decay", Kind::kValue,
       [](const FitArguments& a) { return yaml_float(a.weight_decay); }},
      {"model", "dropout", "--dropout", Kind::kValue,
       [](const FitArguments& a) { return yaml_float(a.dropout); }},
      {"model", "lr_step_epochs", "--lr-step-epochs", Kind::kValue,
       [](const FitArguments& a) { return integer(a.lr_step_epochs); }},
      {"model", "lr_gamma", "--lr-gamma", Kind::kValue,
       [](const FitArguments& a) { return yaml_float(a.lr_gamma); }},
      {"data", "root", "--data", Kind::kValue, [](const FitArguments& a) { return text(a.data); }},
      {"data", "batch_size", "--batch-size", Kind::kValue,
       [](const FitArguments& a) { return integer(a.batch_size); }},
      {"data", "val_size", "--val-size", Kind::kValue,
       [](const FitArguments& a) { return integer(a.val_size); }},
      {"trainbus", "early_stopping_patience", "--early-stopping-patience", Kind::kValue,
       [](const FitArguments& a) {
         return a.early_stopping_patience ? integer(*a.early_stopping_patience)
                                          : std::string("null");
       }},
      {"trainbus", "csv", "--no-csv", Kind::kEnable,
       [](const FitArguments& a) { return boolean(a.csv); }},
      {"trainbus", "tensorboard", "--no-tensorboard", Kind::kEnable,
       [](const FitArguments& a) { return boolean(a.tensorboard); }},
      {"trainbus", "log_every_rank", "--log-every-rank", Kind::kSwitch,
       [](const FitArguments& a) { return boolean(a.log_every_rank); }},
      {"trainbus", "record", "--no-record", Kind::kEnable,
       [](const FitArguments& a) { return boolean(a.record); }},
      {"trainbus", "record_path", "--record-path", Kind::kValue,
       [](const FitArguments& a) { return text_or_null(a.record_path); }},
      {"trainbus", "record_every_rank", "--record-every-rank", Kind::kSwitch,
       [](const FitArguments& a) { return boolean(a.record_every_rank); }},
      // The launcher's flags, together under torchrun's names (Lightning's Trainer has num_nodes,
      // but takes the node rank and the master's address from the environment).
      {"trainbus", "nproc_per_node", "--nproc-per-node", Kind::kValue,
       [](const FitArguments& a) { return integer(a.launch.nproc_per_node()); }},
      {"trainbus", "nnodes", "--nnodes", Kind::kValue,
       [](const FitArguments& a) { return integer(a.launch.nnodes()); }},
      {"trainbus", "node_rank", "--node-rank", Kind::kValue,
       [](const FitArguments& a) { return integer(a.launch.node_rank()); }},
      {"trainbus", "master_addr", "--master-addr", Kind::kValue,
       [](const FitArguments& a) { return text(a.launch.master_addr()); }},
      {"trainbus", "master_port", "--master-port", Kind::kValue,
       [](const FitArguments& a) { return integer(a.launch.master_port()); }},
      {"trainbus", "cpu_binding", "--no-cpu-binding", Kind::kEnable,
       [](const FitArguments& a) { return boolean(a.launch.bind_cpus()); }},
      {"trainbus", "ddp_timeout", "--ddp-timeout", Kind::kValue,
       [](const FitArguments& a) { return yaml_float(a.ddp_timeout); }},
      {"trainbus", "ddp_backend", "--ddp-backend", Kind::kValue,
       [](const FitArguments& a) { return text(a.ddp_backend); }},
      {"trainbus", "ddp_find_unused_parameters", "--ddp-find-unused-parameters", Kind::kSwitch,
       [](const FitArguments& a) { return boolean(a.ddp_find_unused_parameters); }},
      {"trainbus", "ddp_fp16_gradients", "--ddp-fp16-gradients", Kind::kSwitch,
       [](const FitArguments& a) { return boolean(a.ddp_fp16_gradients); }},
      {"trainbus", "ddp_gloo_loop_nice", "--ddp-gloo-loop-nice", Kind::kValue,
       [](const FitArguments& a) { return integer(a.ddp_gloo_loop_nice); }},
      {"", "ckpt_path", "--resume", Kind::kValue,
       [](const FitArguments& a) { return text_or_null(a.resume); }},
  };
  return keys;
}

const std::vector<std::string>& sections() {
  static const std::vector<std::string> names = {"trainer", "model", "data", "trainbus"};
  return names;
}

// "seed_everything, ckpt_path, trainer, ..." or the keys of one section.
std::string valid_keys(const std::string& section) {
  std::string list;
  auto add = [&](const std::string& name) { list += (list.empty() ? "" : ", ") + name; };
  for (const ConfigKey& key : config_keys()) {
    if (key.section == section) add(key.key);
  }
  if (section.empty()) {
    for (const std::string& name : sections()) add(name);
  }
  return list;
}

const ConfigKey* find_key(const std::string& section, const std::string& name) {
  for (const ConfigKey& key : config_keys()) {
    if (key.section == section && key.key == name) return &key;
  }
  return nullptr;
}

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw MisconfigurationError(where + ": " + what);
}

// "EarlyStopping" or "lightning.pytorch.callbacks.EMAWeightAveraging" -> early_stopping,
// ema_weight_averaging: LightningCLI's class_path to the name a spec takes.
std::string callback_name(const std::string& class_path) {
  const std::string name = class_path.substr(class_path.rfind('.') + 1);
  std::string snake;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (i > 0 && std::isupper(c)) {
      const auto previous = static_cast<unsigned char>(name[i - 1]);
      const bool next_lower =
          i + 1 < name.size() && std::islower(static_cast<unsigned char>(name[i + 1]));
      if (std::islower(previous) || std::isdigit(previous) ||
          (std::isupper(previous) && next_lower)) {
        snake += '_';
      }
    }
    snake += static_cast<char>(std::tolower(c));
  }
  return snake;
}

// early_stopping -> EarlyStopping, for printing a spec as LightningCLI's class_path.
std::string class_name(const std::string& name) {
  std::string camel;
  bool upper = true;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    camel += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return camel;
}

// An option's value in a spec: a scalar as it is, a list as a;b, a mapping as k:v;k:v (the
// GradientAccumulationScheduler's scheduling).
std::string spec_value(const YAML::Node& value, const std::string& where) {
  std::string result;
  bool flag = false;
  if (value.IsScalar() && value.Tag() != "!" &&
      !std::isdigit(static_cast<unsigned char>(value.Scalar().empty() ? '0' : value.Scalar()[0])) &&
      YAML::convert<bool>::decode(value, flag)) {
    result = flag ? "true" : "false";  // True, yes, on: as a trainer switch reads them
  } else if (value.IsScalar()) {
    result = value.Scalar();
  } else if (value.IsSequence()) {
    for (const YAML::Node& item : value) {
      if (!item.IsScalar()) fail(where, "expected a list of single values");
      result += (result.empty() ? "" : ";") + item.Scalar();
    }
  } else if (value.IsMap()) {
    for (const auto& entry : value) {
      if (!entry.second.IsScalar()) fail(where, "expected a mapping of single values");
      result += (result.empty() ? "" : ";") + entry.first.Scalar() + ":" + entry.second.Scalar();
    }
  } else if (value.IsNull()) {
    fail(where, "a callback option needs a value");
  }
  if (result.find(',') != std::string::npos)
    fail(where, "a callback option's value cannot hold ','");
  return result;
}

std::string callback_spec(const YAML::Node& item, const std::string& where) {
  if (item.IsScalar()) return item.Scalar();
  if (!item.IsMap()) {
    fail(where,
         "expected a callback: 'early_stopping:monitor=val_loss', `early_stopping: {monitor: "
         "val_loss}` or `class_path: EarlyStopping` with `init_args`");
  }
  // LightningCLI's `class_path: EarlyStopping` with `init_args`, or `early_stopping: {...}`.
  const bool lightning_form = static_cast<bool>(item["class_path"]);
  if (lightning_form) {
    for (const auto& entry : item) {
      const std::string key = entry.first.Scalar();
      if (key != "class_path" && key != "init_args")
        fail(where, "unknown key '" + key + "' beside class_path (expected init_args)");
    }
  } else if (item.size() != 1) {
    fail(where, "a callback mapping names one callback (`early_stopping: {monitor: val_loss}`)");
  }
  const std::string name =
      lightning_form ? callback_name(item["class_path"].Scalar()) : item.begin()->first.Scalar();
  // Copied, not assigned: yaml-cpp throws when a missing key's node is assigned to another.
  const YAML::Node options = lightning_form ? item["init_args"] : item.begin()->second;
  std::string spec = name;
  if (options && !options.IsNull()) {
    if (!options.IsMap()) fail(where + "." + name, "expected a mapping of options");
    std::string joined;
    for (const auto& entry : options) {
      const std::string key = entry.first.Scalar();
      joined += (joined.empty() ? "" : ",") + key + "=" +
                spec_value(entry.second, where + "." + name + "." + key);
    }
    if (!joined.empty()) spec += ":" + joined;
  }
  return spec;
}

void add_arguments(const ConfigKey& key, const YAML::Node& value, const std::string& where,
                   std::vector<std::string>& out) {
  if (value.IsNull()) return;  // keep the default
  switch (key.kind) {
    case Kind::kValue:
      if (!value.IsScalar()) fail(where, "expected a single value");
      out.push_back(key.flag);
      out.push_back(value.Scalar());
      return;
    case Kind::kSwitch:
    case Kind::kEnable: {
      bool on = false;
      if (!value.IsScalar() || !YAML::convert<bool>::decode(value, on))
        fail(where, "expected true or false, got '" + value.Scalar() + "'");
      if (key.kind == Kind::kEnable) on = !on;
      out.push_back(std::string(key.flag) + "=" + (on ? "true" : "false"));
      return;
    }
    case Kind::kCallbacks:
      if (!value.IsSequence()) fail(where, "expected a list of callbacks");
      for (std::size_t i = 0; i < value.size(); ++i) {
        out.push_back(key.flag);
        out.push_back(callback_spec(value[i], where + "[" + std::to_string(i) + "]"));
      }
      return;
  }
}

std::vector<std::string> arguments_of(const std::string& path, ConfigOrigins* origins) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail(path, "cannot read the config file (does it exist?)");
  } catch (const YAML::Exception& error) {
    fail(path, std::string("not valid YAML: ") + error.what());
  }
  std::vector<std::string> out;
  if (root.IsNull()) return out;
  if (!root.IsMap()) fail(path, "expected a mapping of sections: " + valid_keys(""));
  auto add = [&](const ConfigKey& key, const YAML::Node& value, const std::string& name) {
    const std::string where = path + ": " + name;
    const std::size_t first = out.size();
    add_arguments(key, value, where, out);
    if (origins && out.size() > first) (*origins)[key.flag] = where;
  };
  for (const auto& entry : root) {
    const std::string name = entry.first.Scalar();
    if (const ConfigKey* key = find_key("", name)) {
      add(*key, entry.second, name);
      continue;
    }
    bool is_section = false;
    for (const std::string& section : sections()) is_section |= section == name;
    if (!is_section) fail(path, "unknown key '" + name + "'; the valid ones are " + valid_keys(""));
    if (entry.second.IsNull()) continue;
    if (!entry.second.IsMap())
      fail(path + ": " + name, "expected a mapping of " + valid_keys(name));
    for (const auto& item : entry.second) {
      const std::string key_name = item.first.Scalar();
      const ConfigKey* key = find_key(name, key_name);
      if (!key) {
        fail(path, "unknown key '" + name + "." + key_name + "'; the valid " + name + " keys are " +
                       valid_keys(name));
      }
      add(*key, item.second, name + "." + key_name);
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> config_file_arguments(const std::string& path) {
  return arguments_of(path, nullptr);
}

std::vector<std::string> expand_config_files(const std::vector<std::string>& args,
                                             ConfigOrigins* origins) {
  if (args.empty() || args[0] != "fit") return args;
  std::vector<std::string> expanded;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string path;
    if (args[i] == "--config" && i + 1 < args.size()) {
      path = args[i + 1];
    } else if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
    }
    if (!path.empty()) {
      const std::vector<std::string> flags = arguments_of(path, origins);
      expanded.insert(expanded.end(), flags.begin(), flags.end());
    }
    expanded.push_back(args[i]);
  }
  return expanded;
}

std::string effective_config(const FitArguments& args) {
  std::ostringstream out;
  out << "# trainbus fit: the effective configuration, laid out as LightningCLI's.\n"
         "# `trainbus fit --config FILE` reads it back; flags after --config override it.\n";
  std::string section = "-";
  for (const ConfigKey& key : config_keys()) {
    if (key.section != section) {
      section = key.section;
      if (section == "trainbus") out << "# trainbus's own flags, which Lightning has no key for\n";
      if (!section.empty()) out << section << ":\n";
    }
    const std::string indent = section.empty() ? "" : "  ";
    if (key.kind != Kind::kCallbacks) {
      out << indent << key.key << ": " << key.value(args) << '\n';
      continue;
    }
    if (args.callbacks.empty()) {
      out << indent << key.key << ": []\n";
      continue;
    }
    out << indent << key.key << ":\n";
    for (const std::string& spec : args.callbacks) {
      // "name:key=value,key=value" as class_path and init_args.
      const std::size_t colon = spec.find(':');
      out << indent << "- class_path: " << class_name(spec.substr(0, colon)) << '\n';
      if (colon == std::string::npos) continue;
      out << indent << "  init_args:\n";
      std::istringstream options(spec.substr(colon + 1));
      std::string option;
      while (std::getline(options, option, ',')) {
        const std::size_t equals = option.find('=');
        out << indent << "    " << yaml_key(option.substr(0, equals)) << ": "
            << yaml_scalar_or_quoted(equals == std::string::npos ? std::string()
                                                                 : option.substr(equals + 1))
            << '\n';
      }
    }
  }
  return out.str();
}

}  // namespace trainbus::apps
