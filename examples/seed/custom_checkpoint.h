#pragma once
// The guide's custom checkpoint callback: a checkpoint every 5 epochs.

#include <ostream>
#include <string>

#include "core/callback.h"

namespace trainbus::examples {

class CustomCheckpoint : public Callback {
 public:
  CustomCheckpoint(std::string save_dir, std::ostream& out)
      : save_dir_(std::move(save_dir)), out_(out) {}

  /// Saves "<save_dir>/custom-<epoch>.ckpt" when the epoch is a multiple of 5.
  void on_train_epoch_end(Trainer& trainer, Module& module) override;

 private:
  std::string save_dir_;
  std::ostream& out_;
};

}  // namespace trainbus::examples
