#include "data/batch.h"

#include <ATen/core/Tensor.h>

namespace trainbus::data {

Batch to_device(const Batch& batch, const c10::Device& device) {
  auto move = [&](const at::Tensor& t) {
    return t.defined() && t.device() != device ? t.to(device, /*non_blocking=*/false) : t;
  };
  return Batch(move(batch.data), move(batch.target));
}

int64_t batch_size_of(const Batch& batch) {
  if (!batch.data.defined() || batch.data.dim() == 0) return 1;
  return batch.data.size(0);
}

}  // namespace trainbus::data
