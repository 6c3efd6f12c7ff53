#pragma once
/// CheckpointSnapshot: a checkpoint of exactly one step, held in memory until it is written.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/output-archive.h>

#include "checkpoint/buffer_pool.h"
#include "checkpoint/checkpoint_data.h"
#include "checkpoint/state_dict.h"

namespace trainbus::checkpoint {

/// One file of a checkpoint directory, ready to be serialised: a LibTorch archive, or (for an
/// optimizer whose state cannot be copied tensor by tensor) the archive already serialised.
struct CheckpointPart {
  CheckpointPart(std::string name_in, std::string file_in)
      : name(std::move(name_in)), file(std::move(file_in)) {}
  std::string name;  ///< "model", "optimizer_0", "trainer"
  std::string file;  ///< "model.pt"
  torch::serialize::OutputArchive archive;
  std::string serialized;  ///< if not empty: the file's bytes, and `archive` is unused
};

/// What a snapshot buffer is, for BufferPool: a dense CPU tensor, for copies of tensors of this
/// scalar type and these sizes.
struct TensorBufferTraits {
  using Buffer = at::Tensor;
  using Layout = std::pair<int, std::vector<int64_t>>;
  static Layout layout_of(const at::Tensor& tensor);
  static at::Tensor allocate(const Layout& layout);
  static void touch(at::Tensor& tensor);
  static std::size_t bytes_of(const at::Tensor& tensor) {
    return tensor.defined() ? tensor.nbytes() : 0;
  }
  /// A dense tensor nobody else can see: not a view, not shared with a tensor still in use.
  static bool reusable(const at::Tensor& tensor);
};

/// The tensors of written snapshots, kept for the next snapshot to copy into (see BufferPool).
using SnapshotBuffers = BufferPool<TensorBufferTraits>;

/// A CPU tensor holding a copy of `tensor`, in a buffer of `buffers` of the same type and shape if
/// there is one (waiting for it while one is prepared), else in new memory.
at::Tensor copy_into_buffer(SnapshotBuffers& buffers, const at::Tensor& tensor);

/// What a checkpoint holds, taken on the training thread between two steps. With private copies
/// (copy_tensors), every tensor in it is a CPU copy that nothing else references and `data` shares
/// nothing with the live state (StateDict::deep_copy), so training may go on while another thread
/// serialises it; without, it references the live state and must be written before the next step.
struct CheckpointSnapshot {
  CheckpointData data;
  bool weights_only = false;
  std::vector<CheckpointPart> parts;
  std::size_t tensor_bytes = 0;  ///< bytes of the tensor copies held (0 without copies)
  /// Where the copies come from (nullptr: new memory), and the copies, given back after the write.
  SnapshotBuffers* buffers = nullptr;
  std::vector<at::Tensor> copies;
};

/// The layouts of the tensors a snapshot of `module` and `optimizers` copies, in the order it
/// copies them; for SnapshotBuffers::prepare.
std::vector<TensorBufferTraits::Layout> snapshot_layouts(
    const torch::nn::Module& module,
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers);

/// The state of a running fit a snapshot starts from: `data.state_dict` (the module's weights) and
/// `data.optimizer_states`, holding the live tensors, for the on_save_checkpoint hooks to see and
/// change. Optimizer states are left out with `weights_only`.
void add_module_and_optimizer_states(
    const torch::nn::Module& module,
    const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers, bool weights_only,
    CheckpointSnapshot& snapshot);

/// After the hooks, for a snapshot written on another thread: every tensor in `data` becomes a
/// private CPU copy (in `buffers`' memory for the weights and optimizer states), and every state
/// a deep copy, so that nothing in it changes when training goes on.
void make_private(CheckpointSnapshot& snapshot);

/// Adds the parts "model" (from data.state_dict, laid out as torch::nn::Module::save, buffers
/// named by `module`) and "optimizer_<i>" (from data.optimizer_states, laid out as
/// Optimizer::save).
void add_model_and_optimizer_parts(const torch::nn::Module& module, CheckpointSnapshot& snapshot);

}  // namespace trainbus::checkpoint
