// The one body of Strategy that needs LibTorch: strategy.h stays torch-free for the launcher.
#include "distributed/strategy.h"

#include <ATen/core/Tensor.h>

namespace trainbus::distributed {

void Strategy::backward(const at::Tensor& loss, bool synchronize) {
  (void)synchronize;  // one process: nothing to average
  loss.backward();
}

}  // namespace trainbus::distributed
