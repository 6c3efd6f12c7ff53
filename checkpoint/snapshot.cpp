#include "checkpoint/snapshot.h"

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

// torch::nn::Module::save, with private copies when asked.
void save_module(const torch::nn::Module& module, torch::serialize::OutputArchive& archive,
                 bool copy_tensors, CheckpointSnapshot& snapshot) {
  for (const auto& parameter : module.named_parameters(/*recurse=*/false)) {
    archive.write(parameter.key(),
                  copy_tensors ? private_copy(parameter.value(), snapshot) : parameter.value());
  }
  for (const auto& buffer : module.named_buffers(/*recurse=*/false)) {
    archive.write(buffer.key(),
                  copy_tensors ? private_copy(buffer.value(), snapshot) : buffer.value(),
                  /*is_buffer=*/true);
  }
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::OutputArchive child_archive(archive.compilation_unit());
    save_module(*child.value(), child_archive, copy_tensors, snapshot);
    archive.write(child.key(), child_archive);
  }
}

// Calls visit(field) for every tensor field of one parameter's optimizer state, and returns true,
// for LibTorch's own optimizers; returns false for a state type this does not know (a custom
// optimizer). The one list of those fields, for copying a state and for preparing its buffers.
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

// Whether copy_state knows this state type (LibTorch's own optimizers).
bool copyable(const torch::optim::OptimizerParamState& state) {
  return for_each_state_tensor(const_cast<torch::optim::OptimizerParamState&>(state),
                               [](const at::Tensor&) {});
}

// A copy of one parameter's optimizer state whose tensors are private (for a known state type).
std::unique_ptr<torch::optim::OptimizerParamState> copy_state(
    const torch::optim::OptimizerParamState& state, CheckpointSnapshot& snapshot) {
  std::unique_ptr<torch::optim::OptimizerParamState> copy = state.clone();  // shares the tensors
  for_each_state_tensor(*copy, [&](at::Tensor& field) { field = private_copy(field, snapshot); });
  return copy;
}

// The tensors save_module writes, in its order.
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

void snapshot_module(const torch::nn::Module& module, bool copy_tensors,
                     CheckpointSnapshot& snapshot) {
  CheckpointPart part("model", "model.pt");
  save_module(module, part.archive, copy_tensors, snapshot);
  snapshot.parts.push_back(std::move(part));
}

void snapshot_optimizer(torch::optim::Optimizer& optimizer, std::size_t index, bool copy_tensors,
                        CheckpointSnapshot& snapshot) {
  const std::string name = "optimizer_" + std::to_string(index);
  CheckpointPart part(name, name + ".pt");
  if (!copy_tensors) {
    optimizer.save(part.archive);
    snapshot.parts.push_back(std::move(part));
    return;
  }
  // Optimizer::save writes whatever state objects the optimizer holds: hand it private copies for
  // the duration of the call, then put the live ones back.
  auto& state = optimizer.state();
  const bool known = std::all_of(state.begin(), state.end(),
                                 [](const auto& entry) { return copyable(*entry.second); });
  if (!known) {
    // A custom optimizer: serialise its live state now, on this thread, into memory.
    optimizer.save(part.archive);
    std::ostringstream bytes_out;
    part.archive.save_to(bytes_out);
    part.serialized = bytes_out.str();
    part.archive = torch::serialize::OutputArchive();
    snapshot.tensor_bytes += part.serialized.size();
    snapshot.parts.push_back(std::move(part));
    return;
  }
  std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>> copies;
  for (const auto& [key, live] : state) copies.emplace_back(key, copy_state(*live, snapshot));
  for (auto& [key, copy] : copies) std::swap(state.at(key), copy);
  try {
    optimizer.save(part.archive);
  } catch (...) {
    for (auto& [key, copy] : copies) std::swap(state.at(key), copy);
    throw;
  }
  for (auto& [key, copy] : copies) std::swap(state.at(key), copy);
  snapshot.parts.push_back(std::move(part));
}

}  // namespace trainbus::checkpoint
