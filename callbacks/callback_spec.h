#pragma once
/// Built-in callbacks from text, for the command line: `--callback
/// 'early_stopping:monitor=val_loss,patience=5'` (`trainbus fit` and `trainbus replay`).

#include <memory>
#include <string>
#include <vector>

#include "core/callback.h"

namespace trainbus::callbacks {

/// The callbacks a spec may name, with the keys each takes: "early_stopping: monitor, min_delta,
/// ...", one line each, for help texts and errors; with `deciding_only`, only those that make
/// decisions a replay compares (stops, checkpoints).
std::string describe_callback_specs(bool deciding_only = false);

/// Whether the callback `spec` names makes decisions a replay compares: early_stopping and
/// model_checkpoint.
bool callback_decides(const std::string& spec);

/// Defaults a command gives the callbacks it builds, where the spec leaves an option out.
struct SpecDefaults {
  /// model_checkpoint's dirpath ("": Lightning's, the first logger's log_dir/checkpoints).
  std::string checkpoint_dirpath;
};

/// Builds the callback `spec` names: "NAME" or "NAME:key=value,key=value", NAME one of
/// early_stopping, model_checkpoint, learning_rate_monitor, timer, gradient_accumulation_scheduler,
/// spike_detection, model_summary, rich_model_summary, device_stats_monitor,
/// ema_weight_averaging, stochastic_weight_averaging, batch_size_finder and learning_rate_finder
/// (memory_budget as bytes, 256MiB or none; early_stop_threshold a number or none), the keys their
/// options' names (Lightning's), booleans as true/false, save_last as true/false/link/copy, a
/// Timer's duration as DD:HH:MM:SS, the accumulation schedule as
/// scheduling=EPOCH:FACTOR;EPOCH:FACTOR, swa_lrs as one number or one per param group separated by
/// ';', swa_epoch_start as an epoch (2) or a fraction of max_epochs (0.5). Options not given keep
/// their defaults (a model_checkpoint's dirpath `defaults.checkpoint_dirpath`). Throws
/// MisconfigurationError naming the spec and the unknown name, unknown key or bad value, with what
/// is accepted.
std::shared_ptr<Callback> make_callback(const std::string& spec, const SpecDefaults& defaults = {});

}  // namespace trainbus::callbacks
