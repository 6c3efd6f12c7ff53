#include "tuner/detail/restore_point.h"

#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include "core/module.h"

namespace trainbus::tuner::detail {

RestorePoint::RestorePoint() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  rng_state_ = generator.get_state();
}

void RestorePoint::save_module(Module& module) {
  if (saved_) return;
  saved_ = true;
  // Kept on the CPU: a copy on a CUDA device would take memory the trials then lack (Lightning
  // keeps its restore point on disk).
  for (const auto& tensor : module.parameters())
    tensors_.emplace_back(tensor,
                          tensor.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
  for (const auto& tensor : module.buffers())
    tensors_.emplace_back(tensor,
                          tensor.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true));
}

void RestorePoint::restore() {
  {
    torch::NoGradGuard no_grad;
    for (auto& [tensor, copy] : tensors_) {
      tensor.copy_(copy);
      if (tensor.grad().defined()) tensor.mutable_grad().reset();
    }
  }
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(rng_state_);
}

}  // namespace trainbus::tuner::detail
