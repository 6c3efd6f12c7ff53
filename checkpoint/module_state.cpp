#include "checkpoint/module_state.h"

#include <map>
#include <set>
#include <vector>

#include <torch/csrc/autograd/grad_mode.h>

#include "base/diagnostics.h"
#include "base/errors.h"

namespace trainbus::checkpoint {
namespace {

// Calls visit(name, tensor, is_buffer) for every parameter and buffer that Module::save writes.
template <class Visit>
void for_each_saved_tensor(const torch::nn::Module& module, const std::string& prefix,
                           Visit&& visit) {
  for (const auto& parameter : module.named_parameters(/*recurse=*/false))
    visit(prefix + parameter.key(), parameter.value(), false);
  for (const auto& buffer : module.named_buffers(/*recurse=*/false))
    visit(prefix + buffer.key(), buffer.value(), true);
  for (const auto& child : module.named_children()) {
    if (child.value()->is_serializable())
      for_each_saved_tensor(*child.value(), prefix + child.key() + ".", visit);
  }
}

// Names by their first dotted component: what one level of the archive holds.
struct ArchiveNode {
  std::map<std::string, c10::IValue> values;
  std::map<std::string, ArchiveNode> children;
};

// Writes `node` (the entries under `prefix`) into `archive` as Module::save writes `module`
// (nullptr: a prefix the module does not have): its parameters, its buffers, then an archive per
// serializable child, in the module's order, empty ones included (Module::load asks for each);
// then what the module does not have (a hook added it), by name.
void write_node(const ArchiveNode& node, const torch::nn::Module* module, const std::string& prefix,
                torch::serialize::OutputArchive& archive) {
  for (const auto& [key, value] : node.values) {
    TRAINBUS_CHECK_AS(CheckpointError, node.children.count(key) == 0, "state_dict entry `",
                      prefix + key, "` is a tensor and also the prefix of `", prefix + key,
                      ".*` entries; rename one of them");
  }
  std::set<std::string> written;
  const auto write_value = [&](const std::string& key, bool is_buffer, bool requires_grad) {
    const auto found = node.values.find(key);
    if (found == node.values.end() || !written.insert(key).second) return;
    if (found->second.isTensor()) {
      at::Tensor tensor = found->second.toTensor();
      if (requires_grad && tensor.defined() && tensor.is_floating_point()) {
        // Module::save writes a parameter with its requires_grad: an alias that has it.
        tensor = tensor.detach();
        tensor.set_requires_grad(true);
      }
      archive.write(key, tensor, is_buffer);
    } else {
      archive.write(key, found->second);
    }
  };
  std::set<std::string> written_children;
  const auto write_child = [&](const std::string& key, const torch::nn::Module* child_module) {
    if (!written_children.insert(key).second) return;
    static const ArchiveNode kEmpty;
    const auto found = node.children.find(key);
    torch::serialize::OutputArchive child_archive(archive.compilation_unit());
    write_node(found != node.children.end() ? found->second : kEmpty, child_module,
               prefix + key + ".", child_archive);
    archive.write(key, child_archive);
  };
  if (module != nullptr) {
    for (const auto& parameter : module->named_parameters(/*recurse=*/false))
      write_value(parameter.key(), false, parameter.value().requires_grad());
    for (const auto& buffer : module->named_buffers(/*recurse=*/false))
      write_value(buffer.key(), true, buffer.value().requires_grad());
  }
  for (const auto& [key, value] : node.values) write_value(key, false, false);
  if (module != nullptr) {
    for (const auto& child : module->named_children()) {
      if (child.value()->is_serializable()) write_child(child.key(), child.value().get());
    }
  }
  for (const auto& [key, child] : node.children) write_child(key, nullptr);
}

void read_node(torch::serialize::InputArchive& archive, const std::string& prefix, StateDict& out) {
  for (const std::string& key : archive.keys()) {
    c10::IValue value;
    if (!archive.try_read(key, value)) continue;
    if (value.isModule() || value.isObject()) {
      torch::serialize::InputArchive child;
      if (archive.try_read(key, child)) read_node(child, prefix + key + ".", out);
      continue;
    }
    out.insert(prefix + key, value);
  }
}

std::string listed(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "\"" : ", \"") + name + "\"";
  return text;
}

}  // namespace

StateDict module_state_dict(const torch::nn::Module& module) {
  StateDict state;
  for_each_saved_tensor(module, "", [&](const std::string& name, const at::Tensor& tensor, bool) {
    state.insert(name, tensor.detach());
  });
  return state;
}

void write_module_state(const StateDict& state, const torch::nn::Module& module,
                        torch::serialize::OutputArchive& archive) {
  ArchiveNode root;
  for (const auto& [name, value] : state) {
    ArchiveNode* node = &root;
    std::string::size_type start = 0;
    for (auto dot = name.find('.'); dot != std::string::npos; dot = name.find('.', start)) {
      node = &node->children[name.substr(start, dot - start)];
      start = dot + 1;
    }
    node->values[name.substr(start)] = value;
  }
  write_node(root, &module, "", archive);
}

StateDict read_module_state(torch::serialize::InputArchive& archive) {
  StateDict state;
  read_node(archive, "", state);
  return state;
}

void load_module_state(torch::nn::Module& module, const StateDict& state, const std::string& path,
                       bool strict) {
  std::map<std::string, at::Tensor> targets;
  for_each_saved_tensor(module, "", [&](const std::string& name, const at::Tensor& tensor, bool) {
    targets.emplace(name, tensor);
  });
  std::vector<std::string> missing, unexpected;
  for (const auto& [name, target] : targets) {
    if (!state.contains(name)) missing.push_back(name);
  }
  for (const auto& [name, value] : state) {
    if (targets.count(name) == 0) unexpected.push_back(name);
  }
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::string problems;
    if (!missing.empty()) problems += "Missing key(s) in state_dict: " + listed(missing) + ". ";
    if (!unexpected.empty())
      problems += "Unexpected key(s) in state_dict: " + listed(unexpected) + ". ";
    throw CheckpointError(::trainbus::detail::concat(
        "checkpoint ", path, ": state_dict does not fit ", module.name(), ": ", problems,
        "Build the module as it was when the checkpoint was saved, or rename the entries of "
        "checkpoint.state_dict in on_load_checkpoint (a renamed layer)"));
  }
  // As PyTorch's load_state_dict(strict=False) with Lightning's warnings (_load_state): the names
  // that do not match are left as they are, and said.
  if (!missing.empty()) {
    warn(::trainbus::detail::concat("checkpoint ", path,
                                    ": found keys that are in the model state dict but not in the "
                                    "checkpoint (left as built): ",
                                    listed(missing)));
  }
  if (!unexpected.empty()) {
    warn(::trainbus::detail::concat("checkpoint ", path,
                                    ": found keys that are not in the model state dict but in "
                                    "the checkpoint (ignored): ",
                                    listed(unexpected)));
  }
  // Everything checked before anything is copied: a state that does not fit changes nothing.
  for (const auto& [name, target] : targets) {
    if (!state.contains(name)) continue;
    const c10::IValue& value = state.at(name);
    TRAINBUS_CHECK_AS(CheckpointError, value.isTensor() && value.toTensor().defined(),
                      "checkpoint ", path, ": state_dict entry `", name, "` is not a tensor (",
                      value.tagKind(), ")");
    const at::Tensor& source = value.toTensor();
    if (source.sizes() != target.sizes()) {
      throw CheckpointError(::trainbus::detail::concat(
          "checkpoint ", path, ": state_dict does not fit ", module.name(), ": ", name,
          " has shape ", source.sizes(), " in the checkpoint, ", target.sizes(),
          " in the module; build the module as it was when the checkpoint was saved (the same "
          "hyper-parameters)"));
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    if (state.contains(name)) target.copy_(state.at(name).toTensor());
  }
}

}  // namespace trainbus::checkpoint
