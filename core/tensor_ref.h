#pragma once
/// Puts tensors into events (events::TensorRef) and takes them out; events/ cannot name torch
/// types.

#include <ATen/core/Tensor.h>

#include "core/step_output.h"
#include "events/common.h"

namespace trainbus {

/// Wraps a tensor; shares its storage (no copy).
events::TensorRef make_tensor_ref(at::Tensor tensor);
/// Wraps a step's outputs; shares the tensors' storage (no copy).
events::TensorRef make_tensor_ref(StepOutput outputs);

/// The tensor in `ref`; undefined if `ref` is empty or holds something else.
at::Tensor tensor_of(const events::TensorRef& ref);
/// The step outputs in `ref`; nullptr if `ref` is empty or holds something else.
const StepOutput* step_output_of(const events::TensorRef& ref);

/// A copy of what `ref` holds that shares nothing with the trainer: tensors detached and cloned to
/// the CPU (StepOutput entries likewise). The events::ObserverPool takes it on the training thread.
events::TensorRef snapshot_to_cpu(const events::TensorRef& ref);

}  // namespace trainbus
