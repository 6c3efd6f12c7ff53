#pragma once
/// CheckpointData: the part of a checkpoint that hooks see and may change.

#include <cstdint>
#include <map>
#include <string>

#include "checkpoint/state_dict.h"
#include "events/common.h"

namespace trainbus::checkpoint {

/// Everything in a checkpoint except the model and optimizer tensors, which go straight from the
/// module and optimizers into LibTorch archives. on_save_checkpoint hooks may add to `extra`.
struct CheckpointData {
  int64_t epoch = 0;        ///< trainer.current_epoch when saved
  int64_t global_step = 0;  ///< optimizer steps taken when saved
  /// Trainer progress needed to continue: batches done in the epoch, whether it had ended, seeds.
  StateDict loops;
  /// Each stateful callback's state_dict(), by state_key().
  std::map<std::string, StateDict> callbacks;
  /// Module::hparams().
  StateDict hyper_parameters;
  /// DataModule::state_dict().
  StateDict datamodule;
  /// trainer.callback_metrics when saved (Lightning does not keep them; trainbus does).
  Metrics callback_metrics;
  /// Free-form entries added by on_save_checkpoint hooks.
  StateDict extra;
};

}  // namespace trainbus::checkpoint

namespace trainbus {
/// What on_save_checkpoint / on_load_checkpoint hooks see, in the namespace of the hooks.
using checkpoint::CheckpointData;
}  // namespace trainbus
