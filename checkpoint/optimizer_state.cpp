#include "checkpoint/optimizer_state.h"

#include <map>
#include <set>
#include <sstream>

#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <c10/util/Exception.h>
#include <c10/util/string_utils.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "base/errors.h"

namespace trainbus::checkpoint {
namespace {

using torch::serialize::InputArchive;
using torch::serialize::OutputArchive;

std::string optimizer_error_line(const std::string& message) {
  return message.substr(0, message.find('\n'));
}

c10::impl::GenericDict new_dict() {
  return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
}

c10::IValue pair(const std::tuple<double, double>& values) {
  return c10::ivalue::Tuple::create(std::get<0>(values), std::get<1>(values));
}

// A param group's options by field name, for LibTorch's own optimizers (the names PyTorch and
// LibTorch's serialize use); false for another optimizer.
bool read_options(const torch::optim::OptimizerOptions& options, c10::impl::GenericDict& group) {
  using namespace torch::optim;
  if (const auto* adam = dynamic_cast<const AdamOptions*>(&options)) {
    group.insert("lr", adam->lr());
    group.insert("betas", pair(adam->betas()));
    group.insert("eps", adam->eps());
    group.insert("weight_decay", adam->weight_decay());
    group.insert("amsgrad", adam->amsgrad());
  } else if (const auto* adamw = dynamic_cast<const AdamWOptions*>(&options)) {
    group.insert("lr", adamw->lr());
    group.insert("betas", pair(adamw->betas()));
    group.insert("eps", adamw->eps());
    group.insert("weight_decay", adamw->weight_decay());
    group.insert("amsgrad", adamw->amsgrad());
  } else if (const auto* sgd = dynamic_cast<const SGDOptions*>(&options)) {
    group.insert("lr", sgd->lr());
    group.insert("momentum", sgd->momentum());
    group.insert("dampening", sgd->dampening());
    group.insert("weight_decay", sgd->weight_decay());
    group.insert("nesterov", sgd->nesterov());
  } else if (const auto* adagrad = dynamic_cast<const AdagradOptions*>(&options)) {
    group.insert("lr", adagrad->lr());
    group.insert("lr_decay", adagrad->lr_decay());
    group.insert("weight_decay", adagrad->weight_decay());
    group.insert("initial_accumulator_value", adagrad->initial_accumulator_value());
    group.insert("eps", adagrad->eps());
  } else if (const auto* rmsprop = dynamic_cast<const RMSpropOptions*>(&options)) {
    group.insert("lr", rmsprop->lr());
    group.insert("alpha", rmsprop->alpha());
    group.insert("eps", rmsprop->eps());
    group.insert("weight_decay", rmsprop->weight_decay());
    group.insert("momentum", rmsprop->momentum());
    group.insert("centered", rmsprop->centered());
  } else {
    return false;
  }
  return true;
}

// One parameter's state by field name (undefined tensors left out, as PyTorch has no such
// entries), for LibTorch's own optimizers; false for another optimizer.
bool read_param_state(const torch::optim::OptimizerParamState& state, StateDict& out) {
  using namespace torch::optim;
  const auto put = [&out](const char* name, const at::Tensor& tensor) {
    if (tensor.defined()) out.insert(name, tensor);
  };
  if (const auto* adam = dynamic_cast<const AdamParamState*>(&state)) {
    out.insert("step", adam->step());
    put("exp_avg", adam->exp_avg());
    put("exp_avg_sq", adam->exp_avg_sq());
    put("max_exp_avg_sq", adam->max_exp_avg_sq());
  } else if (const auto* adamw = dynamic_cast<const AdamWParamState*>(&state)) {
    out.insert("step", adamw->step());
    put("exp_avg", adamw->exp_avg());
    put("exp_avg_sq", adamw->exp_avg_sq());
    put("max_exp_avg_sq", adamw->max_exp_avg_sq());
  } else if (const auto* sgd = dynamic_cast<const SGDParamState*>(&state)) {
    put("momentum_buffer", sgd->momentum_buffer());
  } else if (const auto* adagrad = dynamic_cast<const AdagradParamState*>(&state)) {
    put("sum", adagrad->sum());
    out.insert("step", adagrad->step());
  } else if (const auto* rmsprop = dynamic_cast<const RMSpropParamState*>(&state)) {
    out.insert("step", rmsprop->step());
    put("square_avg", rmsprop->square_avg());
    put("momentum_buffer", rmsprop->momentum_buffer());
    put("grad_avg", rmsprop->grad_avg());
  } else {
    return false;
  }
  return true;
}

// Any optimizer: through its own save(), in PyTorch's layout if that is LibTorch's, else as the
// bytes it wrote.
StateDict serialized_state_dict(torch::optim::Optimizer& optimizer, const std::string& what) {
  std::ostringstream bytes;
  try {
    OutputArchive out;
    optimizer.save(out);
    out.save_to(bytes);
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        what, ": its save() failed: ", optimizer_error_line(error.what_without_backtrace())));
  }
  return optimizer_state_from_bytes(bytes.str(), what);
}

// Whether `archive` has the top-level entries of LibTorch's Optimizer::save layout, and no other.
bool in_libtorch_layout(InputArchive& archive) {
  bool has_groups = false;
  for (const std::string& key : archive.keys()) {
    if (key == "param_groups") {
      has_groups = true;
    } else if (key != "state" && key != "pytorch_version") {
      return false;
    }
  }
  return has_groups;
}

StateDict archived(const std::string& bytes) {
  StateDict state;
  state.insert(kOptimizerArchiveKey, bytes);
  return state;
}

InputArchive archive_of(const std::string& bytes) {
  InputArchive archive;
  archive.load_from(bytes.data(), bytes.size());
  return archive;
}

// The dict at `key` of `state`, or a CheckpointError naming `what`.
StateDict dict_entry(const StateDict& state, const std::string& key, const std::string& what) {
  try {
    return state.dict_at(key);
  } catch (const std::exception& error) {
    throw CheckpointError(::trainbus::detail::concat(
        what,
        " is not an optimizer state in PyTorch's layout (\"state\": {index: {...}}, "
        "\"param_groups\": [{..., \"params\": [index, ...]}]): ",
        error.what()));
  }
}

std::string param_key(int64_t index) { return "param_" + std::to_string(index); }

// LibTorch's options serialisation reads each field it knows with try_read; the param group's
// restore (restore_param_group_options) reads them back from here.
void restore_param_group_options(torch::optim::Optimizer& optimizer, InputArchive& archive) {
  InputArchive groups;
  if (!archive.try_read("param_groups", groups)) return;
  auto& param_groups = optimizer.param_groups();
  for (size_t i = 0; i < param_groups.size(); ++i) {
    InputArchive group;
    InputArchive options;
    if (!groups.try_read("param_groups/" + std::to_string(i), group) ||
        !group.try_read("options", options)) {
      continue;
    }
    param_groups[i].options().serialize(options);
  }
}

// The fields of LibTorch's optimizers' per-parameter state that have their parameter's shape.
bool has_parameter_shape(const std::string& field) {
  static const std::set<std::string> kFields{"exp_avg",         "exp_avg_sq", "max_exp_avg_sq",
                                             "momentum_buffer", "sum",        "square_avg",
                                             "grad_avg"};
  return kFields.count(field) > 0;
}

// `state` with every per-parameter tensor on its parameter's device, floating point ones in its
// dtype ("step" excepted), as PyTorch's Optimizer.load_state_dict casts them; a field that must
// have the parameter's shape and has another is a CheckpointError naming `what`.
StateDict placed_for(torch::optim::Optimizer& optimizer, const StateDict& state,
                     const std::string& what) {
  std::vector<at::Tensor> parameters;
  for (auto& group : optimizer.param_groups()) {
    for (const at::Tensor& parameter : group.params()) parameters.push_back(parameter);
  }
  StateDict states;
  for (const auto& [index, value] : dict_entry(state, "state", what)) {
    StateDict fields = StateDict::from_ivalue(value, what + " state " + index);
    int64_t position = -1;
    try {
      position = std::stoll(index);
    } catch (const std::exception&) {
      throw CheckpointError(::trainbus::detail::concat(what, " state key \"", index,
                                                       "\" is not a parameter index (0, 1, ...)"));
    }
    if (position >= 0 && position < static_cast<int64_t>(parameters.size())) {
      const at::Tensor& parameter = parameters[static_cast<size_t>(position)];
      StateDict moved;
      for (const auto& [field, field_value] : fields) {
        if (!field_value.isTensor() || !field_value.toTensor().defined()) {
          moved.insert(field, field_value);
          continue;
        }
        const at::Tensor& tensor = field_value.toTensor();
        if (has_parameter_shape(field) && tensor.sizes() != parameter.sizes()) {
          throw CheckpointError(::trainbus::detail::concat(
              what, " state ", index, " field \"", field, "\" has shape ", tensor.sizes(),
              ", its parameter (index ", index, ") has shape ", parameter.sizes(),
              "; the optimizer state must be of the parameters it was saved with"));
        }
        const bool cast = tensor.is_floating_point() && field != "step";
        moved.insert(field, tensor.to(parameter.device(),
                                      cast ? parameter.scalar_type() : tensor.scalar_type()));
      }
      fields = moved;
    }
    states.insert(index, fields);
  }
  StateDict placed = state;
  placed.insert("state", states);
  return placed;
}

}  // namespace

bool is_archived_optimizer_state(const StateDict& state) {
  return state.size() == 1 && state.contains(kOptimizerArchiveKey) &&
         state.at(kOptimizerArchiveKey).isString();
}

StateDict optimizer_state_from_bytes(const std::string& bytes, const std::string& what) {
  InputArchive archive;
  try {
    archive = archive_of(bytes);
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        what, " is no LibTorch archive: ", optimizer_error_line(error.what_without_backtrace())));
  }
  if (!in_libtorch_layout(archive)) return archived(bytes);
  try {
    return read_optimizer_state(archive, what);
  } catch (const CheckpointError&) {
    return archived(bytes);  // LibTorch's names in another layout: the optimizer's load() reads it
  }
}

StateDict optimizer_state_dict(torch::optim::Optimizer& optimizer, const std::string& what) {
  c10::impl::GenericList groups(c10::AnyType::get());
  StateDict states;
  int64_t index = 0;
  for (auto& group : optimizer.param_groups()) {
    c10::impl::GenericDict entry = new_dict();
    if (!read_options(group.options(), entry)) return serialized_state_dict(optimizer, what);
    c10::List<int64_t> params;
    for (const at::Tensor& parameter : group.params()) {
      const auto found =
          optimizer.state().find(c10::guts::to_string(parameter.unsafeGetTensorImpl()));
      if (found != optimizer.state().end()) {
        StateDict state;
        if (!read_param_state(*found->second, state)) return serialized_state_dict(optimizer, what);
        states.insert(std::to_string(index), state);
      }
      params.push_back(index++);
    }
    entry.insert("params", params);
    groups.push_back(entry);
  }
  StateDict dict;
  dict.insert("state", states);
  dict.insert("param_groups", groups);
  return dict;
}

void write_optimizer_state(const StateDict& state, OutputArchive& archive,
                           const std::string& what) {
  const StateDict states = dict_entry(state, "state", what);
  TRAINBUS_CHECK_AS(CheckpointError,
                    state.contains("param_groups") && state.at("param_groups").isList(), what,
                    " has no list \"param_groups\" (PyTorch's optimizer state layout)");
  const c10::List<c10::IValue> groups = state.at("param_groups").toList();
  try {
    archive.write("pytorch_version", c10::IValue("1.5.0"));
    OutputArchive state_archive(archive.compilation_unit());
    for (const auto& [index, value] : states) {
      OutputArchive param_archive(archive.compilation_unit());
      for (const auto& [field, field_value] :
           StateDict::from_ivalue(value, what + " state " + index))
        param_archive.write(field, field_value);
      state_archive.write(param_key(std::stoll(index)), param_archive);
    }
    archive.write("state", state_archive);

    OutputArchive groups_archive(archive.compilation_unit());
    groups_archive.write("param_groups/size",
                         at::scalar_tensor(static_cast<int64_t>(groups.size()), at::kLong));
    for (size_t i = 0; i < groups.size(); ++i) {
      const StateDict group =
          StateDict::from_ivalue(groups.get(i), what + " param_groups[" + std::to_string(i) + "]");
      OutputArchive group_archive(archive.compilation_unit());
      const c10::List<int64_t> params = group.at("params").toIntList();
      group_archive.write("params/size",
                          at::scalar_tensor(static_cast<int64_t>(params.size()), at::kLong));
      for (size_t j = 0; j < params.size(); ++j)
        group_archive.write("params/" + std::to_string(j), c10::IValue(param_key(params.get(j))));
      OutputArchive options(archive.compilation_unit());
      for (const auto& [field, value] : group) {
        if (field != "params") options.write(field, value);
      }
      group_archive.write("options", options);
      groups_archive.write("param_groups/" + std::to_string(i), group_archive);
    }
    archive.write("param_groups", groups_archive);
  } catch (const CheckpointError&) {
    throw;
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        what, ": cannot write it: ", optimizer_error_line(error.what_without_backtrace())));
  } catch (const std::exception& error) {
    throw CheckpointError(::trainbus::detail::concat(
        what, " is not an optimizer state in PyTorch's layout: ", error.what()));
  }
}

StateDict read_optimizer_state(InputArchive& archive, const std::string& what) {
  try {
    InputArchive groups_archive;
    archive.read("param_groups", groups_archive);
    at::Tensor size;
    groups_archive.read("param_groups/size", size);
    std::map<std::string, int64_t> index_of;  // LibTorch's key of a parameter -> its index
    c10::impl::GenericList groups(c10::AnyType::get());
    int64_t next = 0;
    for (int64_t i = 0; i < size.item<int64_t>(); ++i) {
      InputArchive group_archive;
      groups_archive.read("param_groups/" + std::to_string(i), group_archive);
      at::Tensor count;
      group_archive.read("params/size", count);
      c10::List<int64_t> params;
      for (int64_t j = 0; j < count.item<int64_t>(); ++j) {
        c10::IValue key;
        group_archive.read("params/" + std::to_string(j), key);
        index_of[key.toStringRef()] = next;
        params.push_back(next++);
      }
      InputArchive options;
      group_archive.read("options", options);
      c10::impl::GenericDict group = new_dict();
      for (const std::string& field : options.keys()) {
        c10::IValue value;
        options.read(field, value);
        group.insert(field, value);
      }
      group.insert("params", params);
      groups.push_back(group);
    }
    InputArchive state_archive;
    archive.read("state", state_archive);
    StateDict states;
    for (const std::string& key : state_archive.keys()) {
      const auto index = index_of.find(key);
      if (index == index_of.end()) continue;  // in no group: LibTorch's load ignores it too
      InputArchive param_archive;
      state_archive.read(key, param_archive);
      StateDict state;
      for (const std::string& field : param_archive.keys()) {
        c10::IValue value;
        param_archive.read(field, value);
        if (value.isNone() || (value.isTensor() && !value.toTensor().defined())) continue;
        state.insert(field, value);
      }
      states.insert(std::to_string(index->second), state);
    }
    StateDict dict;
    dict.insert("state", states);
    dict.insert("param_groups", groups);
    return dict;
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        what, " cannot be read: ", optimizer_error_line(error.what_without_backtrace())));
  }
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const StateDict& state,
                          const std::string& what) {
  if (is_archived_optimizer_state(state)) {
    // As LibTorch's Optimizer::load, with what the optimizer's save() wrote.
    try {
      InputArchive archive = archive_of(state.at(kOptimizerArchiveKey).toStringRef());
      optimizer.load(archive);
      restore_param_group_options(optimizer, archive);
    } catch (const c10::Error& error) {
      throw CheckpointError(::trainbus::detail::concat(
          what, " (the bytes the optimizer's save() wrote) cannot be loaded by its load(): ",
          optimizer_error_line(error.what_without_backtrace())));
    }
    return;
  }
  OutputArchive out;
  write_optimizer_state(placed_for(optimizer, state, what), out, what);
  try {
    std::ostringstream bytes;
    out.save_to(bytes);
    std::istringstream in_bytes(bytes.str());
    InputArchive in;
    in.load_from(in_bytes);
    optimizer.load(in);
    restore_param_group_options(optimizer, in);
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        what, " does not fit the optimizer (", optimizer.param_groups().size(),
        " param groups): ", optimizer_error_line(error.what_without_backtrace())));
  }
}

}  // namespace trainbus::checkpoint
