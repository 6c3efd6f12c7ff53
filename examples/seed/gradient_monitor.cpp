#include "examples/seed/gradient_monitor.h"

#include "core/module.h"

namespace trainbus::examples {

void GradientMonitor::on_after_backward(Trainer& trainer, Module& module) {
  // Log gradient norms
  for (const auto& parameter : module.named_parameters()) {
    const at::Tensor& grad = parameter.value().grad();
    if (grad.defined()) module.log("grad_norm/" + parameter.key(), grad.norm().item<double>());
  }
}

}  // namespace trainbus::examples
