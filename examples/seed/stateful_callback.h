#pragma once
// The guide's stateful callback: a batch counter that survives checkpoints under its own key.

#include <cstdint>
#include <string>

#include "core/callback.h"

namespace trainbus::examples {

class StatefulCallback : public Callback {
 public:
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override {
    ++counter;
  }
  bool stateful() const override { return true; }
  StateDict state_dict() const override {
    StateDict state;
    state.insert("counter", counter);
    return state;
  }
  void load_state_dict(const StateDict& state_dict) override {
    counter = state_dict.at("counter").toInt();
  }
  /// Unique identifier for this callback
  std::string state_key() const override { return "my_stateful_callback"; }

  int64_t counter = 0;
};

}  // namespace trainbus::examples
