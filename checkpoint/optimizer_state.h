#pragma once
/// An optimizer's state as Lightning's checkpoint["optimizer_states"][i]: PyTorch's
/// optimizer.state_dict() layout, which checkpoint hooks may read and change, and the parts
/// `optimizer_<i>` of a checkpoint (LibTorch's Optimizer::save layout) written from it and read
/// back into it.
///
///   {"state": {"0": {"step": 3, "exp_avg": T, "exp_avg_sq": T}, "1": {...}},
///    "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), ..., "params": [0, 1]}]}
///
/// "state" is keyed by the parameter's index over all groups, as a string; "param_groups" is a
/// list of dicts (c10::List / c10::Dict, which share what they hold: changing a group taken from
/// the list changes the state).
///
/// An optimizer of the user's own whose save() writes another layout (or nothing: LibTorch's
/// default) is kept as it is: its state is {"libtorch_archive": the bytes save() wrote}, written
/// as the part and given back to its load() on resume, as LibTorch's Optimizer::save/load do.

#include <string>

#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "checkpoint/state_dict.h"

namespace trainbus::checkpoint {

/// The key of an optimizer state kept as the bytes its save() wrote (see above).
inline constexpr const char* kOptimizerArchiveKey = "libtorch_archive";

/// Whether `state` is kept as the bytes its optimizer's save() wrote, not in PyTorch's layout.
bool is_archived_optimizer_state(const StateDict& state);

/// The state of `optimizer` in PyTorch's layout, holding its live state tensors (copy it before
/// the optimizer steps again if it must not change). LibTorch's SGD, Adam, AdamW, Adagrad and
/// RMSprop are read field by field; another optimizer is serialised with its save() and read back
/// (correct, slower), or kept as those bytes if they are not in LibTorch's layout. `what` names
/// the optimizer in errors (a save() that throws).
StateDict optimizer_state_dict(torch::optim::Optimizer& optimizer,
                               const std::string& what = "optimizer");

/// The bytes of a part `optimizer_<i>` (what Optimizer::save wrote) as a state: PyTorch's layout
/// if they are in LibTorch's Optimizer::save layout, else kept as they are (archived). Throws
/// CheckpointError naming `what` only if they are no LibTorch archive at all.
StateDict optimizer_state_from_bytes(const std::string& bytes, const std::string& what);

/// Writes `state` (PyTorch's layout) into `archive` in LibTorch's Optimizer::save layout.
/// Throws CheckpointError naming `what` when `state` is not in that layout.
void write_optimizer_state(const StateDict& state, torch::serialize::OutputArchive& archive,
                           const std::string& what);

/// A part written by Optimizer::save or write_optimizer_state, in PyTorch's layout.
StateDict read_optimizer_state(torch::serialize::InputArchive& archive, const std::string& what);

/// Loads `state` into `optimizer`: the per-parameter state and every param group's options (lr,
/// betas, ...: LibTorch's Optimizer::load restores only the former); an archived state goes to
/// the optimizer's load() as it is. As PyTorch's Optimizer.load_state_dict, each parameter's state
/// tensors go to the parameter's device, floating point ones (not "step") to its dtype. Throws
/// CheckpointError naming `what` when it does not fit (another number of groups or parameters, a
/// state tensor of LibTorch's optimizers whose shape is not its parameter's), loading nothing.
void load_optimizer_state(torch::optim::Optimizer& optimizer, const StateDict& state,
                          const std::string& what);

}  // namespace trainbus::checkpoint
