#pragma once
// Optimizers that hold one tensor more than once (tied weights from LibTorch's parameters()),
// found when configure_optimizers returns, as PyTorch's Optimizer finds them when built.

#include <memory>
#include <string>
#include <vector>

namespace torch::nn {
class Module;
}
namespace torch::optim {
class Optimizer;
}

namespace trainbus::detail {

/// One line per tensor that an optimizer of `optimizers` holds more than once: which optimizer
/// and param groups, the tensor's names in `module`, and what that does and how to avoid it.
/// Empty if none. LibTorch's Module::parameters() lists a tensor two submodules share (tied
/// weights) under each name, where Python's lists it once: an optimizer built from it updates
/// that tensor twice a step.
std::vector<std::string> duplicate_parameter_warnings(
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers,
    const torch::nn::Module& module);

}  // namespace trainbus::detail
