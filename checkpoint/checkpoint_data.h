#pragma once
/// CheckpointData: the part of a checkpoint that hooks see and may change.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/state_dict.h"
#include "events/common.h"

namespace trainbus::checkpoint {

/// A checkpoint as its hooks see it, Lightning's checkpoint dict: the weights, the optimizer
/// states, the loops' progress, the callback states, the hyper-parameters. on_save_checkpoint
/// hooks may change anything in it, and put entries of their own in `extra`, before it is written;
/// on_load_checkpoint hooks may change it before it is applied (rename the weights of a layer that
/// was renamed, drop an optimizer's state, ...). What is not here (the LR schedulers' steps, the
/// RNG state) is saved and restored as it is.
struct CheckpointData {
  int64_t epoch = 0;        ///< trainer.current_epoch when saved
  int64_t global_step = 0;  ///< optimizer steps taken when saved
  /// The module's parameters and buffers by dotted name ("net.0.weight"), as PyTorch's
  /// module.state_dict() (checkpoint["state_dict"]). Loaded strictly: every name the module has,
  /// and no other (rename or drop entries in on_load_checkpoint). At a save, the tensors are the
  /// module's own (detached): change an entry by replacing it, never in place.
  StateDict state_dict;
  /// Each optimizer's state in PyTorch's optimizer.state_dict() layout (checkpoint
  /// ["optimizer_states"]; see checkpoint/optimizer_state.h), in configure_optimizers' order. Empty
  /// in a save_weights_only checkpoint, and when validate/test/predict or load_from_checkpoint
  /// load a checkpoint (they do not read them). At a save, the tensors are the optimizer's own.
  std::vector<StateDict> optimizer_states;
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
