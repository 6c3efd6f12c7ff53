#pragma once
// The guide's conditional callback: does something only from a given epoch on.

#include <cstdint>
#include <vector>

#include "core/callback.h"
#include "core/trainer.h"

namespace trainbus::examples {

class ConditionalCallback : public Callback {
 public:
  explicit ConditionalCallback(int64_t activate_after_epoch = 10)
      : activate_after_epoch_(activate_after_epoch) {}

  void on_train_epoch_end(Trainer& trainer, Module& module) override {
    if (trainer.current_epoch() >= activate_after_epoch_) {
      // Only active after specified epoch
      do_something(trainer, module);
    }
  }

  /// The epochs it was active in.
  std::vector<int64_t> active_epochs;

 private:
  void do_something(Trainer& trainer, Module& module) {
    active_epochs.push_back(trainer.current_epoch());
  }

  int64_t activate_after_epoch_;
};

}  // namespace trainbus::examples
