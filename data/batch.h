#pragma once
/// Batch: one mini-batch as the loops hand it to steps and hooks.

#include <cstdint>

#include <c10/core/Device.h>
#include <torch/data/example.h>

namespace trainbus::data {

/// A batch is LibTorch's own Example: `data` (inputs) and `target` (labels; undefined for predict).
using Batch = torch::data::Example<>;

/// The batch with both tensors on `device` (a no-op for tensors already there).
Batch to_device(const Batch& batch, const c10::Device& device);

/// Number of samples: the first dimension of `data`, or 1 for a scalar or undefined batch.
int64_t batch_size_of(const Batch& batch);

}  // namespace trainbus::data

namespace trainbus {
/// What every step and batch hook receives, in the namespace of the hooks.
using data::Batch;
}  // namespace trainbus
