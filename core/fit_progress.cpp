#include "core/fit_progress.h"

namespace trainbus {

StateDict FitProgress::state_dict() const {
  StateDict state;
  state.insert("current_epoch", current_epoch);
  state.insert("epochs_processed", epochs_processed);
  state.insert("global_step", global_step);
  state.insert("batches_done_in_epoch", batches_done_in_epoch);
  state.insert("epoch_batches_finished", epoch_batches_finished);
  state.insert("total_batch_idx", total_batch_idx);
  return state;
}

FitProgress FitProgress::resumed_from(const StateDict& state) {
  FitProgress progress;
  progress.global_step = state.at("global_step").toInt();
  progress.epochs_processed = state.at("epochs_processed").toInt();
  progress.total_batch_idx = state.at("total_batch_idx").toInt();
  progress.batches_done_in_epoch = state.at("batches_done_in_epoch").toInt();
  if (state.at("epoch_batches_finished").toBool()) {
    progress.current_epoch = progress.epochs_processed;  // the saved epoch had ended: the next one
    progress.batches_done_in_epoch = 0;
  } else {
    progress.current_epoch = state.at("current_epoch").toInt();
    progress.resume_batch_idx = progress.batches_done_in_epoch;
  }
  return progress;
}

}  // namespace trainbus
