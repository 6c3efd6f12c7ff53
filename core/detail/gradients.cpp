#include "core/detail/gradients.h"

#include <vector>

#include <torch/types.h>  // before clip_grad.h, which is not self-contained

#include <torch/nn/utils/clip_grad.h>

namespace trainbus::detail {

void zero_grad_to_none(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& parameter : group.params()) {
      if (parameter.grad().defined()) parameter.mutable_grad().reset();
    }
  }
}

void clip_gradients(torch::optim::Optimizer& optimizer, double clip_val,
                    GradientClipAlgorithm algorithm) {
  if (clip_val <= 0.0) return;
  std::vector<at::Tensor> parameters;
  for (const auto& group : optimizer.param_groups()) {
    for (const auto& parameter : group.params()) {
      if (parameter.grad().defined()) parameters.push_back(parameter);
    }
  }
  if (algorithm == GradientClipAlgorithm::kNorm) {
    torch::nn::utils::clip_grad_norm_(parameters, clip_val);
  } else {
    torch::nn::utils::clip_grad_value_(parameters, clip_val);
  }
}

}  // namespace trainbus::detail
