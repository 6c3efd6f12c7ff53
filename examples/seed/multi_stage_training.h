#pragma once
// The guide's multi-stage training callback: at each stage boundary, divide every LR by 10.

#include <cstdint>
#include <ostream>
#include <vector>

#include "core/callback.h"

namespace trainbus::examples {

class MultiStageTraining : public Callback {
 public:
  MultiStageTraining(std::vector<int64_t> stage_epochs, std::ostream& out)
      : stage_epochs_(std::move(stage_epochs)), out_(out) {}

  void on_train_epoch_start(Trainer& trainer, Module& module) override;

  int64_t current_stage = 0;

 private:
  std::vector<int64_t> stage_epochs_;
  std::ostream& out_;
};

}  // namespace trainbus::examples
