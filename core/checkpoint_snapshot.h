#pragma once
/// CheckpointSnapshot: a checkpoint of exactly one step, held in memory until it is written.

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/output-archive.h>

#include "core/checkpoint_data.h"

namespace trainbus {

/// One file of a checkpoint directory, ready to be serialised: a LibTorch archive, or (for an
/// optimizer whose state cannot be copied tensor by tensor) the archive already serialised.
struct CheckpointPart {
  CheckpointPart(std::string name_in, std::string file_in) : name(std::move(name_in)), file(std::move(file_in)) {}
  std::string name;  ///< "model", "optimizer_0", "trainer"
  std::string file;  ///< "model.pt"
  torch::serialize::OutputArchive archive;
  std::string serialized;  ///< if not empty: the file's bytes, and `archive` is unused
};

/// Tensors of written snapshots, kept for the next snapshot to copy into. A copy into memory that
/// was touched before costs a memcpy; into new memory it also costs a page fault per page, which
/// makes it ~3x slower on the benchmark machine (bench/README.md). Holds at most the copies of the
/// last snapshot written, or the buffers prepared for the next one. Thread-safe: snapshots are
/// taken on the training thread, given back by the writer's and prepared by another.
class SnapshotBuffers {
 public:
  /// What a buffer is for: a CPU tensor of this scalar type and these sizes.
  using Layout = std::pair<int, std::vector<int64_t>>;
  static Layout layout_of(const at::Tensor& tensor);

  /// A CPU tensor holding a copy of `tensor`, in a kept buffer of the same type and shape if any.
  /// While buffers are being prepared, waits for one of that layout to be ready.
  at::Tensor copy_of(const at::Tensor& tensor);

  /// Asks for buffers for the next snapshot, of `layouts` (the tensors it copies, in its order).
  /// Returns true if the caller must now run prepare() on a background thread; false if a run is
  /// queued already, which then prepares these newest layouts. From now until that run ends,
  /// copy_of waits for the buffers it prepares. Called on the training thread.
  bool request_prepare(std::vector<Layout> layouts);
  /// Makes a buffer ready for each requested layout: reuses kept buffers, allocates the missing
  /// ones, drops the rest, and writes one byte in every page, so that the snapshot's copy neither
  /// faults nor waits for memory left cold (in a VM, memory untouched for seconds can cost a host
  /// fault per page: bench/README.md). Runs on a background thread, once per request_prepare()
  /// that returned true.
  void prepare() noexcept;
  /// Takes back a written snapshot's copies, replacing the ones kept; only those nothing else
  /// references are kept.
  void give_back(std::vector<at::Tensor> copies);
  /// Bytes kept for reuse.
  std::size_t bytes() const;
  /// Copies copy_of made into new memory, for want of a kept or prepared buffer.
  uint64_t fresh_copies() const;

 private:
  mutable std::mutex mutex_;
  std::condition_variable prepared_;  // a prepared buffer was handed back, or prepare() ended
  std::vector<Layout> requested_;     // layouts for the queued run of prepare()
  bool prepare_queued_ = false;
  bool prepare_running_ = false;
  bool preparing() const { return prepare_queued_ || prepare_running_; }
  std::multimap<Layout, at::Tensor> free_;
  std::size_t bytes_ = 0;
  uint64_t fresh_copies_ = 0;
};

/// What a checkpoint holds, taken on the training thread between two steps. With private copies
/// (copy_tensors), every tensor in it is a CPU copy that nothing else references, so training may
/// go on while another thread serialises it; without, it references the live tensors and must be
/// written before the next step.
struct CheckpointSnapshot {
  CheckpointData data;
  bool weights_only = false;
  std::vector<CheckpointPart> parts;
  std::size_t tensor_bytes = 0;  ///< bytes of the tensor copies held (0 without copies)
  /// Where the copies come from (nullptr: new memory), and the copies, given back after the write.
  SnapshotBuffers* buffers = nullptr;
  std::vector<at::Tensor> copies;
};

/// The layouts of the tensors a snapshot of `module` and `optimizers` copies, in the order it copies
/// them; for SnapshotBuffers::prepare.
std::vector<SnapshotBuffers::Layout> snapshot_layouts(
    const torch::nn::Module& module, const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers);

/// Adds the module's parameters and buffers as the part "model", laid out as
/// torch::nn::Module::save lays them out (so Module::load reads it).
void snapshot_module(const torch::nn::Module& module, bool copy_tensors, CheckpointSnapshot& snapshot);

/// Adds one optimizer's state as the part "optimizer_<index>", laid out as Optimizer::save.
/// Copies the state of LibTorch's SGD, Adam, AdamW, Adagrad and RMSprop tensor by tensor; other
/// optimizers are serialised right away into memory (correct, slower).
void snapshot_optimizer(torch::optim::Optimizer& optimizer, std::size_t index, bool copy_tensors,
                        CheckpointSnapshot& snapshot);

}  // namespace trainbus
