#include "checkpoint/snapshot.h"

#include "checkpoint/module_state.h"
#include "checkpoint/optimizer_state.h"

#include <algorithm>
#include <cstring>
#include <sstream>
#include <utility>
#include <vector>

#include <unistd.h>

#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

namespace trainbus::checkpoint {
namespace {

// A dense CPU copy in new memory (a real copy even when `tensor` is already on the CPU); dense, so
// that it can be kept as a buffer for the next snapshot.
at::Tensor new_cpu_copy(const at::Tensor& tensor) {
  return tensor.detach().to(at::TensorOptions().device(at::kCPU), /*non_blocking=*/false,
                            /*copy=*/true, at::MemoryFormat::Contiguous);
}

// A CPU copy that shares no storage with `tensor`: the snapshot must not change when training goes
// on. Undefined stays undefined.
at::Tensor private_copy(const at::Tensor& tensor, CheckpointSnapshot& snapshot) {
  if (!tensor.defined()) return tensor;
  at::Tensor copy = snapshot.buffers != nullptr ? copy_into_buffer(*snapshot.buffers, tensor)
                                                : new_cpu_copy(tensor);
  snapshot.tensor_bytes += copy.nbytes();
  snapshot.copies.push_back(copy);
  return copy;
}

// Calls visit(field) for every tensor field of one parameter's optimizer state, and returns true,
// for LibTorch's own optimizers; returns false for a state type this does not know (a custom
// optimizer). For preparing the buffers a snapshot copies its state into.
template <class Visit>
bool for_each_state_tensor(torch::optim::OptimizerParamState& state, Visit&& visit) {
  using namespace torch::optim;
  if (auto* sgd = dynamic_cast<SGDParamState*>(&state)) {
    visit(sgd->momentum_buffer());
  } else if (auto* adam = dynamic_cast<AdamParamState*>(&state)) {
    visit(adam->exp_avg());
    visit(adam->exp_avg_sq());
    visit(adam->max_exp_avg_sq());
  } else if (auto* adamw = dynamic_cast<AdamWParamState*>(&state)) {
    visit(adamw->exp_avg());
    visit(adamw->exp_avg_sq());
    visit(adamw->max_exp_avg_sq());
  } else if (auto* adagrad = dynamic_cast<AdagradParamState*>(&state)) {
    visit(adagrad->sum());
  } else if (auto* rmsprop = dynamic_cast<RMSpropParamState*>(&state)) {
    visit(rmsprop->square_avg());
    visit(rmsprop->momentum_buffer());
    visit(rmsprop->grad_avg());
  } else {
    return false;
  }
  return true;
}

// The tensors of the module's state_dict, in its order.
void module_tensors(const torch::nn::Module& module, std::vector<at::Tensor>& out) {
  for (const auto& parameter : module.named_parameters(/*recurse=*/false))
    out.push_back(parameter.value());
  for (const auto& buffer : module.named_buffers(/*recurse=*/false)) out.push_back(buffer.value());
  for (const auto& child : module.named_children()) {
    if (child.value()->is_serializable()) module_tensors(*child.value(), out);
  }
}

// Writes one byte in every page of `tensor`, which makes them all resident and mapped.
void touch_pages(at::Tensor& tensor) {
  static const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  auto* bytes = static_cast<volatile char*>(tensor.data_ptr());
  const std::size_t size = tensor.nbytes();
  for (std::size_t offset = 0; offset < size; offset += page) bytes[offset] = 0;
  if (size > 0) bytes[size - 1] = 0;
}

}  // namespace

TensorBufferTraits::Layout TensorBufferTraits::layout_of(const at::Tensor& tensor) {
  return {static_cast<int>(tensor.scalar_type()), tensor.sizes().vec()};
}

at::Tensor TensorBufferTraits::allocate(const Layout& layout) {
  return at::empty(layout.second, at::TensorOptions().dtype(at::ScalarType(layout.first)));
}

void TensorBufferTraits::touch(at::Tensor& tensor) { touch_pages(tensor); }

bool TensorBufferTraits::reusable(const at::Tensor& tensor) {
  return tensor.defined() && tensor.use_count() == 1 && tensor.storage().use_count() == 1 &&
         tensor.is_contiguous();
}

at::Tensor copy_into_buffer(SnapshotBuffers& buffers, const at::Tensor& tensor) {
  at::Tensor buffer = buffers.take(TensorBufferTraits::layout_of(tensor));
  if (!buffer.defined()) return new_cpu_copy(tensor);
  const at::Tensor source = tensor.detach();
  if (source.device().is_cpu() && source.is_contiguous()) {
    // Same type and shape, both dense: a plain memcpy (measured 2-3x faster here than copy_).
    std::memcpy(buffer.data_ptr(), source.data_ptr(), source.nbytes());
  } else {
    buffer.copy_(source);  // another device, or a strided view
  }
  return buffer;
}

std::vector<TensorBufferTraits::Layout> snapshot_layouts(
    const torch::nn::Module& module,
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers) {
  std::vector<at::Tensor> tensors;
  module_tensors(module, tensors);
  for (const auto& optimizer : optimizers) {
    for (auto& [key, state] : optimizer->state()) {
      for_each_state_tensor(*state, [&](const at::Tensor& field) { tensors.push_back(field); });
    }
  }
  std::vector<TensorBufferTraits::Layout> layouts;
  for (const at::Tensor& tensor : tensors) {
    if (tensor.defined()) layouts.push_back(TensorBufferTraits::layout_of(tensor));
  }
  return layouts;
}

void add_module_and_optimizer_states(
    const torch::nn::Module& module,
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers, bool weights_only,
    CheckpointSnapshot& snapshot) {
  snapshot.data.state_dict = module_state_dict(module);
  snapshot.data.optimizer_states.clear();
  if (weights_only) return;
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    snapshot.data.optimizer_states.push_back(
        optimizer_state_dict(*optimizers[i], "optimizer " + std::to_string(i)));
  }
}

void make_private(CheckpointSnapshot& snapshot) {
  CheckpointData& data = snapshot.data;
  const auto copy = [&snapshot](const at::Tensor& tensor) {
    return private_copy(tensor, snapshot);
  };
  data.state_dict = data.state_dict.deep_copy(copy);
  for (StateDict& state : data.optimizer_states) state = state.deep_copy(copy);
  data.loops = data.loops.deep_copy();
  for (auto& [key, state] : data.callbacks) state = state.deep_copy();
  data.hyper_parameters = data.hyper_parameters.deep_copy();
  data.datamodule = data.datamodule.deep_copy();
  data.extra = data.extra.deep_copy();
}

void add_model_and_optimizer_parts(const torch::nn::Module& module, CheckpointSnapshot& snapshot) {
  CheckpointPart model("model", "model.pt");
  write_module_state(snapshot.data.state_dict, module, model.archive);
  snapshot.parts.push_back(std::move(model));
  for (std::size_t i = 0; i < snapshot.data.optimizer_states.size(); ++i) {
    const std::string name = "optimizer_" + std::to_string(i);
    CheckpointPart part(name, name + ".pt");
    const StateDict& state = snapshot.data.optimizer_states[i];
    if (is_archived_optimizer_state(state)) {
      part.serialized = state.at(kOptimizerArchiveKey).toStringRef();  // as its save() wrote it
    } else {
      write_optimizer_state(state, part.archive,
                            "checkpoint.optimizer_states[" + std::to_string(i) + "]");
    }
    snapshot.parts.push_back(std::move(part));
  }
}

}  // namespace trainbus::checkpoint
