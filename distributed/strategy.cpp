// The bodies of Strategy that need LibTorch: strategy.h stays torch-free for the launcher.
#include "distributed/strategy.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

namespace trainbus::distributed {

c10::Device Strategy::root_device(const c10::Device& requested) const { return requested; }

void Strategy::backward(const at::Tensor& loss, bool synchronize) {
  (void)synchronize;  // one process: nothing to average
  loss.backward();
}

}  // namespace trainbus::distributed
