#pragma once
// Stand-in for a LibTorch header that Debian's libtorch-dev 1.13 does not ship but
// <torch/csrc/distributed/c10d/reducer.hpp> includes. The Reducer only holds a ContextPtr (a
// std::shared_ptr, whose layout does not depend on the pointee) and checks that GradCallback is
// this std::function; both are declared here exactly as in LibTorch 1.13's context.h. Only
// distributed/ddp_strategy.cpp sees this directory.

#include <functional>
#include <memory>

#include <ATen/core/Tensor.h>

namespace torch::distributed::autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};

using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace torch::distributed::autograd
