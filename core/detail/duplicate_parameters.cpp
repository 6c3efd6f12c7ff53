#include "core/detail/duplicate_parameters.h"

#include <map>
#include <utility>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "base/errors.h"

namespace trainbus::detail {

std::vector<std::string> duplicate_parameter_warnings(
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers,
    const torch::nn::Module& module) {
  std::map<const void*, std::vector<std::string>> names;  // by TensorImpl
  for (const auto& parameter : module.named_parameters(/*recurse=*/true))
    names[parameter.value().unsafeGetTensorImpl()].push_back(parameter.key());
  std::vector<std::string> warnings;
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    // Each tensor's param groups, in order, one entry per time it is listed.
    std::map<const void*, std::vector<std::size_t>> groups_of;
    std::vector<const void*> order;
    const auto& groups = optimizers[i]->param_groups();
    for (std::size_t group = 0; group < groups.size(); ++group) {
      for (const auto& tensor : groups[group].params()) {
        auto& listed = groups_of[tensor.unsafeGetTensorImpl()];
        if (listed.empty()) order.push_back(tensor.unsafeGetTensorImpl());
        listed.push_back(group);
      }
    }
    for (const void* tensor : order) {
      const auto& listed = groups_of[tensor];
      if (listed.size() < 2) continue;
      std::string where;
      for (std::size_t group : listed) where += (where.empty() ? "" : ", ") + std::to_string(group);
      std::string known_as;
      for (const auto& name : names[tensor])
        known_as += (known_as.empty() ? "'" : ", '") + name + "'";
      warnings.push_back(concat(
          "configure_optimizers(): optimizer ", i, " holds the parameter ",
          known_as.empty() ? std::string("(not the module's)") : known_as, " ", listed.size(),
          " times (param groups ", where, "), so every step updates it ", listed.size(),
          " times. LibTorch's parameters() lists a tensor that submodules share (tied weights) "
          "under each name, where Python's lists it once: build the optimizer from the distinct "
          "tensors"));
    }
  }
  return warnings;
}

}  // namespace trainbus::detail
