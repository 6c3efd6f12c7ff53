#pragma once
// The guide's gradient monitoring callback: logs the norm of every parameter's gradient.

#include "core/callback.h"

namespace trainbus::examples {

class GradientMonitor : public Callback {
 public:
  /// Logs "grad_norm/<parameter name>" after every backward.
  void on_after_backward(Trainer& trainer, Module& module) override;
};

}  // namespace trainbus::examples
