#pragma once
/// FitProgress: where a fit is, down to the batch in the epoch (Lightning's loop progress). One
/// value, saved into and restored from checkpoints by the same two functions, so that what is saved
/// and what is restored cannot drift apart.

#include <cstdint>

#include "checkpoint/state_dict.h"

namespace trainbus {

struct FitProgress {
  /// Lightning's trainer.current_epoch: the epoch being trained; after an epoch ends, the next.
  int64_t current_epoch = 0;
  /// Epochs whose batches are done (counted before on_train_epoch_end, as Lightning's).
  int64_t epochs_processed = 0;
  /// Optimizer steps taken: batches on which the optimizers stepped (in manual optimization, every
  /// LightningOptimizer::step, as Lightning counts).
  int64_t global_step = 0;
  /// Batches trained in the current epoch.
  int64_t batches_done_in_epoch = 0;
  /// Batches trained in this fit, across epochs (for val_check_interval counted across epochs).
  int64_t total_batch_idx = 0;
  /// Whether the current epoch's batches are all done (its end hooks may still be running).
  bool epoch_batches_finished = false;
  /// The first batch of the next epoch to train: after a mid-epoch resume, the batch after the
  /// last one saved; else 0. Not saved: it is derived when restoring.
  int64_t resume_batch_idx = 0;

  /// What a checkpoint keeps of it (under "loops").
  StateDict state_dict() const;
  /// The progress to continue from after a checkpoint of `state`: a saved epoch that had ended
  /// continues with the next epoch; one cut in the middle, with its next batch. Throws
  /// std::out_of_range naming a missing entry.
  static FitProgress resumed_from(const StateDict& state);
};

}  // namespace trainbus
