#pragma once
/// Private to callbacks/: which modules are BatchNorm layers, for the callbacks that treat them
/// apart (BaseFinetuning freezes their statistics, StochasticWeightAveraging recomputes them).

#include <utility>

#include <torch/nn/modules/batchnorm.h>

namespace trainbus::callbacks::detail {

/// Calls visit(layer) with `module` as its BatchNorm{1,2,3}d type (Lightning's instances of
/// nn.modules.batchnorm._BatchNorm; instance norms are not) and returns true; false for any other
/// module.
template <class Visit>
bool visit_batch_norm(torch::nn::Module& module, Visit&& visit) {
  if (auto* one = dynamic_cast<torch::nn::BatchNorm1dImpl*>(&module)) {
    std::forward<Visit>(visit)(*one);
  } else if (auto* two = dynamic_cast<torch::nn::BatchNorm2dImpl*>(&module)) {
    std::forward<Visit>(visit)(*two);
  } else if (auto* three = dynamic_cast<torch::nn::BatchNorm3dImpl*>(&module)) {
    std::forward<Visit>(visit)(*three);
  } else {
    return false;
  }
  return true;
}

}  // namespace trainbus::callbacks::detail
