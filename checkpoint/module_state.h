#pragma once
/// A module's weights as Lightning's checkpoint["state_dict"]: one flat StateDict of tensors by
/// dotted name ("net.0.weight"), which checkpoint hooks may read, rename, replace or drop; and the
/// part `model` of a checkpoint, written from it and read back into it.

#include <string>

#include <torch/nn/module.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "checkpoint/state_dict.h"

namespace trainbus::checkpoint {

/// The module's parameters and buffers by dotted name, detached, sharing storage with the module
/// (PyTorch's module.state_dict()). Children that are not serializable are left out, as
/// torch::nn::Module::save leaves them out.
StateDict module_state_dict(const torch::nn::Module& module);

/// Writes `state` into `archive` laid out exactly as torch::nn::Module::save lays `module` out (its
/// tensors, then a nested archive per serializable child, in the module's order, empty ones
/// included), so that Module::load reads it; an entry the module does not have (a hook added it)
/// is written after those of its prefix. Throws CheckpointError for a name that is both a tensor
/// and a prefix.
void write_module_state(const StateDict& state, const torch::nn::Module& module,
                        torch::serialize::OutputArchive& archive);

/// The part `model` as a flat StateDict (any archive Module::save wrote, or write_module_state).
StateDict read_module_state(torch::serialize::InputArchive& archive);

/// Copies `state` into the module's parameters and buffers, as PyTorch's load_state_dict: with
/// `strict`, a name the module has that `state` lacks, or one `state` has that the module lacks,
/// is a CheckpointError listing them all (with where the checkpoint came from, `path`); without,
/// they are left as they are, with a warning naming them (Lightning's). A tensor of another shape
/// is always one. Values are copied into the module's tensors (their device and
/// dtype stay).
void load_module_state(torch::nn::Module& module, const StateDict& state, const std::string& path,
                       bool strict = true);

}  // namespace trainbus::checkpoint
