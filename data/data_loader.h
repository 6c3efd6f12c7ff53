#pragma once
/// DataLoader: random access to the batches of one epoch, with a per-epoch order that is a pure
/// function of (seed, epoch), so that a resumed run sees exactly the batches it would have seen.

#include <cstdint>
#include <functional>
#include <optional>

#include <ATen/core/Tensor.h>

#include "base/arg.h"
#include "checkpoint/state_dict.h"
#include "data/batch.h"

namespace trainbus::data {

/// The batches of one split. The trainer calls set_epoch(e) before epoch e, then batch(i) for
/// i in [0, num_batches()). Called on the training thread only.
class DataLoader {
 public:
  virtual ~DataLoader() = default;

  /// Batches per epoch (after drop_last).
  virtual int64_t num_batches() const = 0;
  /// Samples in the split.
  virtual int64_t num_samples() const = 0;
  /// Fixes the order of epoch `epoch` (a reshuffle, for shuffling loaders).
  virtual void set_epoch(int64_t epoch) { (void)epoch; }
  /// Batch `index` of the current epoch, on the CPU (the trainer moves it to its device).
  virtual Batch batch(int64_t index) = 0;
  /// In data-parallel training, before the first set_epoch: from now on this loader gives rank
  /// `rank` of `num_replicas` its own share of every epoch, as torch's DistributedSampler (every
  /// rank the same number of batches). `from_rank_zero(v)` returns rank 0's `v` on every rank, for
  /// values the ranks must agree on (a shuffle seed); it is a collective: call it the same number
  /// of times on every rank. May be called again with the same ranks: the Trainer first splits
  /// with a local `from_rank_zero` (returning its argument) when estimated_stepping_batches()
  /// loads the loaders early, then again with the collective one. The default refuses: a loader
  /// that already gives each rank its own data overrides this with an empty body.
  virtual void set_distributed(int64_t num_replicas, int64_t rank,
                               const std::function<int64_t(int64_t)>& from_rank_zero);
  /// What a checkpoint must keep so that a resumed run sees the same batches (e.g. the seed).
  virtual StateDict state_dict() const { return {}; }
  virtual void load_state_dict(const StateDict& state) { (void)state; }
};

/// Options of the built-in loaders; names and defaults as torch.utils.data.DataLoader.
struct DataLoaderOptions {
  TRAINBUS_ARG(int64_t, batch_size) = 1;
  TRAINBUS_ARG(bool, shuffle) = false;
  TRAINBUS_ARG(bool, drop_last) = false;
  /// Seed of the shuffle order. Unset: drawn once from LibTorch's default CPU generator when the
  /// loader is built, so Trainer's `seed` (or torch::manual_seed) makes the order reproducible.
  TRAINBUS_ARG(std::optional<uint64_t>, seed);
  /// In data-parallel training, what evens out the ranks' shares of an epoch whose samples do not
  /// divide by the number of ranks W: false pads with the epoch's first samples (every rank
  /// ceil(N / W), some samples twice); true drops the epoch's last N mod W samples (every rank
  /// floor(N / W), each sample at most once). torch's DistributedSampler(drop_last=...); the
  /// batch-level `drop_last` above still applies to each rank's share.
  TRAINBUS_ARG(bool, distributed_drop_last) = false;
};

/// A loader over in-memory tensors: `inputs[i]` and `targets[i]` form sample i (the batch's
/// `data` and `target`), or, with a Batch of named tensors, row i of each of them (batches with
/// the same names, in the same order). `targets` may be undefined (prediction). Shuffled batches
/// are gathered copies; unshuffled ones are views.
class TensorDataLoader : public DataLoader {
 public:
  TensorDataLoader(at::Tensor inputs, at::Tensor targets, DataLoaderOptions options);
  /// Named tensors whose first dimensions all index the same samples:
  /// `TensorDataLoader({{"tokens", t}, {"lengths", l}, {"label", y}}, options)`. Throws
  /// MisconfigurationError for no tensors, a scalar, or sample counts that differ (naming them).
  TensorDataLoader(Batch samples, DataLoaderOptions options);

  int64_t num_batches() const override;
  /// Samples in the split (all ranks together).
  int64_t num_samples() const override { return num_samples_; }
  void set_epoch(int64_t epoch) override;
  Batch batch(int64_t index) override;
  /// DistributedSampler's split: the epoch's order (shuffled or not) padded by repeating its
  /// start to a multiple of num_replicas (or cut to one, with `distributed_drop_last`), then
  /// every num_replicas-th sample from `rank` on; the shuffle seed becomes rank 0's.
  void set_distributed(int64_t num_replicas, int64_t rank,
                       const std::function<int64_t(int64_t)>& from_rank_zero) override;
  /// {"seed": the shuffle seed}.
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  uint64_t seed() const noexcept { return seed_; }
  const DataLoaderOptions& options() const noexcept { return options_; }

 private:
  Batch samples_;  // every sample, by name
  int64_t num_samples_ = 0;
  DataLoaderOptions options_;
  /// Samples this rank sees per epoch: all of them on one process.
  int64_t rank_samples() const;
  /// What both constructors do last: check the options, draw the seed, order epoch 0.
  void init();

  uint64_t seed_ = 0;
  int64_t epoch_ = 0;
  int64_t num_replicas_ = 1;
  int64_t rank_ = 0;
  at::Tensor order_;  // this rank's samples of the epoch in order; undefined: all, unshuffled
};

}  // namespace trainbus::data

namespace trainbus {
/// What a DataModule returns, in the namespace of the Trainer that takes it.
using data::DataLoader;
}  // namespace trainbus
