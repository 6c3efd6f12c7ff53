#include "examples/seed/custom_checkpoint.h"

#include "core/trainer.h"

namespace trainbus::examples {

void CustomCheckpoint::on_train_epoch_end(Trainer& trainer, Module& module) {
  const int64_t epoch = trainer.current_epoch();
  if (epoch % 5 == 0) {  // Save every 5 epochs
    const std::string filepath = save_dir_ + "/custom-" + std::to_string(epoch) + ".ckpt";
    trainer.save_checkpoint(filepath);
    out_ << "Saved checkpoint: " << filepath << '\n';
  }
}

}  // namespace trainbus::examples
