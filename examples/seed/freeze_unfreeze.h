#pragma once
// The guide's model freezing callback: the `backbone` submodule is frozen for the first epochs.

#include <cstdint>

#include "core/callback.h"

namespace trainbus::examples {

class FreezeUnfreeze : public Callback {
 public:
  explicit FreezeUnfreeze(int64_t freeze_until_epoch = 10)
      : freeze_until_epoch_(freeze_until_epoch) {}

  /// Sets requires_grad of every parameter of the module's child named "backbone" (false before
  /// `freeze_until_epoch`, true from then on). Throws if the module has no such child.
  void on_train_epoch_start(Trainer& trainer, Module& module) override;

 private:
  int64_t freeze_until_epoch_;
};

}  // namespace trainbus::examples
