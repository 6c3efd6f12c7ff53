#pragma once
/// Private to callbacks/: comparing lists of tensors, for the weight-averaging callbacks that
/// check a saved average against the module's tensors.

#include <cstddef>
#include <vector>

#include <ATen/core/Tensor.h>

namespace trainbus::callbacks::detail {

/// Whether `a` and `b` hold as many tensors, pairwise of the same shape.
inline bool same_shapes(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].sizes() != b[i].sizes()) return false;
  }
  return true;
}

}  // namespace trainbus::callbacks::detail
