#include "examples/seed/multi_stage_training.h"

#include <algorithm>

#include "core/trainer.h"

namespace trainbus::examples {

void MultiStageTraining::on_train_epoch_start(Trainer& trainer, Module& module) {
  const int64_t epoch = trainer.current_epoch();
  if (std::find(stage_epochs_.begin(), stage_epochs_.end(), epoch) != stage_epochs_.end()) {
    ++current_stage;
    out_ << "Entering stage " << current_stage << '\n';
    // Adjust learning rate for new stage
    for (const auto& optimizer : trainer.optimizers()) {
      for (auto& param_group : optimizer->param_groups()) {
        param_group.options().set_lr(param_group.options().get_lr() * 0.1);
      }
    }
  }
}

}  // namespace trainbus::examples
