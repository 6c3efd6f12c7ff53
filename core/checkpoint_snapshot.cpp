#include "core/checkpoint_snapshot.h"

#include <sstream>
#include <utility>

#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

namespace trainbus {
namespace {

// A CPU copy that shares no storage with `tensor` (a real copy even when it is already on the CPU:
// the snapshot must not change when training goes on). Undefined stays undefined.
at::Tensor private_copy(const at::Tensor& tensor, std::size_t& bytes) {
  if (!tensor.defined()) return tensor;
  at::Tensor copy = tensor.detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
  bytes += copy.numel() * copy.element_size();
  return copy;
}

// torch::nn::Module::save, with private copies when asked.
void save_module(const torch::nn::Module& module, torch::serialize::OutputArchive& archive, bool copy_tensors,
                 std::size_t& bytes) {
  for (const auto& parameter : module.named_parameters(/*recurse=*/false)) {
    archive.write(parameter.key(), copy_tensors ? private_copy(parameter.value(), bytes) : parameter.value());
  }
  for (const auto& buffer : module.named_buffers(/*recurse=*/false)) {
    archive.write(buffer.key(), copy_tensors ? private_copy(buffer.value(), bytes) : buffer.value(),
                  /*is_buffer=*/true);
  }
  for (const auto& child : module.named_children()) {
    if (!child.value()->is_serializable()) continue;
    torch::serialize::OutputArchive child_archive(archive.compilation_unit());
    save_module(*child.value(), child_archive, copy_tensors, bytes);
    archive.write(child.key(), child_archive);
  }
}

// Adam and AdamW keep the same state under different types.
template <class AdamState>
std::unique_ptr<torch::optim::OptimizerParamState> copy_adam_state(const AdamState& state, std::size_t& bytes) {
  auto copy = std::make_unique<AdamState>(state);
  copy->exp_avg(private_copy(state.exp_avg(), bytes));
  copy->exp_avg_sq(private_copy(state.exp_avg_sq(), bytes));
  copy->max_exp_avg_sq(private_copy(state.max_exp_avg_sq(), bytes));
  return copy;
}

// A copy of one parameter's optimizer state whose tensors are private; nullptr for a state type
// this does not know (a custom optimizer).
std::unique_ptr<torch::optim::OptimizerParamState> copy_state(const torch::optim::OptimizerParamState& state,
                                                              std::size_t& bytes) {
  using namespace torch::optim;
  if (auto* sgd = dynamic_cast<const SGDParamState*>(&state)) {
    auto copy = std::make_unique<SGDParamState>(*sgd);
    copy->momentum_buffer(private_copy(sgd->momentum_buffer(), bytes));
    return copy;
  }
  if (auto* adam = dynamic_cast<const AdamParamState*>(&state)) return copy_adam_state(*adam, bytes);
  if (auto* adamw = dynamic_cast<const AdamWParamState*>(&state)) return copy_adam_state(*adamw, bytes);
  if (auto* adagrad = dynamic_cast<const AdagradParamState*>(&state)) {
    auto copy = std::make_unique<AdagradParamState>(*adagrad);
    copy->sum(private_copy(adagrad->sum(), bytes));
    return copy;
  }
  if (auto* rmsprop = dynamic_cast<const RMSpropParamState*>(&state)) {
    auto copy = std::make_unique<RMSpropParamState>(*rmsprop);
    copy->square_avg(private_copy(rmsprop->square_avg(), bytes));
    copy->momentum_buffer(private_copy(rmsprop->momentum_buffer(), bytes));
    copy->grad_avg(private_copy(rmsprop->grad_avg(), bytes));
    return copy;
  }
  return nullptr;
}

}  // namespace

void snapshot_module(const torch::nn::Module& module, bool copy_tensors, CheckpointSnapshot& snapshot) {
  CheckpointPart part("model", "model.pt");
  save_module(module, part.archive, copy_tensors, snapshot.tensor_bytes);
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
  std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>> copies;
  std::size_t bytes = 0;
  bool known = true;
  for (const auto& [key, live] : state) {
    auto copy = copy_state(*live, bytes);
    if (!copy) {
      known = false;
      break;
    }
    copies.emplace_back(key, std::move(copy));
  }
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
  for (auto& [key, copy] : copies) std::swap(state.at(key), copy);
  try {
    optimizer.save(part.archive);
  } catch (...) {
    for (auto& [key, copy] : copies) std::swap(state.at(key), copy);
    throw;
  }
  for (auto& [key, copy] : copies) std::swap(state.at(key), copy);
  snapshot.tensor_bytes += bytes;
  snapshot.parts.push_back(std::move(part));
}

}  // namespace trainbus
