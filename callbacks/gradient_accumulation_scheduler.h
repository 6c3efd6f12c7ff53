#pragma once
/// GradientAccumulationScheduler: changes accumulate_grad_batches by epoch (Lightning's).

#include <cstdint>
#include <map>

#include "core/callback.h"

namespace trainbus::callbacks {

/// `scheduling` maps a 0-based epoch to the accumulation factor from that epoch on:
/// {{4, 2}} accumulates 2 batches per step from the fifth epoch, 1 before it ({0: 1} is added
/// when epoch 0 is missing). Sets Trainer::set_accumulate_grad_batches at every
/// on_train_epoch_start, a resumed one included.
///
/// Throws MisconfigurationError for an empty schedule, an epoch < 0 or a factor < 1 (at
/// construction), and at on_train_start when the Trainer's own accumulate_grad_batches is not 1
/// (set one or the other).
class GradientAccumulationScheduler : public Callback {
 public:
  explicit GradientAccumulationScheduler(std::map<int64_t, int64_t> scheduling);

  /// The factor for `epoch`.
  int64_t accumulate_grad_batches(int64_t epoch) const;
  /// Whether any epoch accumulates more than one batch.
  bool going_to_accumulate_grad_batches() const;
  const std::map<int64_t, int64_t>& scheduling() const noexcept { return scheduling_; }

  void on_train_start(Trainer& trainer, Module& module) override;
  void on_train_epoch_start(Trainer& trainer, Module& module) override;

 private:
  std::map<int64_t, int64_t> scheduling_;
};

}  // namespace trainbus::callbacks
