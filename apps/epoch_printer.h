#pragma once
/// EpochPrinter: one line per training epoch with the epoch's train and validation metrics.

#include <chrono>
#include <ostream>

#include "core/callback.h"

namespace trainbus::apps {

/// Prints "epoch 3/15  train_loss 0.3120  train_acc 0.8850  val_loss 0.3301  val_acc 0.8790  4.1s"
/// after each training epoch: every *_epoch value and every val_* value in callback_metrics.
/// Runs on the training thread (a plain callback; printing a line per epoch costs nothing).
class EpochPrinter : public Callback {
 public:
  explicit EpochPrinter(std::ostream& out) : out_(out) {}

  void on_train_epoch_start(Trainer& trainer, Module& module) override;
  void on_train_epoch_end(Trainer& trainer, Module& module) override;
  CallbackKind kind() const override { return CallbackKind::kMonitoring; }

 private:
  std::ostream& out_;
  std::chrono::steady_clock::time_point epoch_start_;
};

}  // namespace trainbus::apps
