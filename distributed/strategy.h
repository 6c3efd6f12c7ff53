#pragma once
/// Strategy: how the processes of a job train one model together (Lightning's Strategy). The
/// Trainer calls it at fixed points of a run; on one process every call is a no-op.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "distributed/environment.h"

namespace at {
class Tensor;
}
namespace c10 {
struct Device;
}
namespace torch::nn {
class Module;
}

namespace trainbus::distributed {

enum class ReduceOp { kSum, kMean, kMax, kMin };

/// A rendezvous or a collective that failed: a rank died, hung past the timeout, or the ranks
/// disagree (a different model). The message names this rank, the operation and the cause. As
/// such (not one of the two below) it is this rank's own failure: `trainbus fit` exits with 1.
class DistributedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// This rank stops only because another rank failed, through no fault of its own: `trainbus
/// fit` exits with kAnotherRankFailedExitCode (launcher.h's rank_exit_code), which the launcher
/// does not name as the job's failure. A PeerLostError, or a checkpoint save whose agreement said
/// that another rank's part failed (core/checkpoint_connector.cpp).
class AnotherRankFailedError : public DistributedError {
 public:
  using DistributedError::DistributedError;
};

/// A collective that lost a peer in the transport: a peer's connection closed or was reset, a
/// read or write on it failed, or the wait for a peer passed the timeout (DDPStrategy tells it
/// from what Gloo and c10d raised). An error of this rank's own inside a collective (a user's
/// autograd function throwing in backward, a different model) is a DistributedError instead.
class PeerLostError : public AnotherRankFailedError {
 public:
  using AnotherRankFailedError::AnotherRankFailedError;
};

/// A PeerLostError of a collective that waited about the timeout for a peer, or whose transport
/// said it timed out: a peer hangs, is slower than the timeout, or never called this collective
/// (it is in another one, as after a save called on some ranks only; core/checkpoint_connector.cpp
/// says so). A peer that died closes its connections at once: a plain PeerLostError. Waiting has
/// not failed this rank, so it exits with kAnotherRankFailedExitCode as for any lost peer.
class PeerTimedOutError : public PeerLostError {
 public:
  using PeerLostError::PeerLostError;
};

/// The Trainer's side of data parallelism. Every collective (reduce, barrier, broadcast) must be
/// called by every rank in the same order; the Trainer guarantees that for its own calls.
class Strategy {
 public:
  virtual ~Strategy() = default;

  /// "single_process" or "ddp", for logs and errors.
  virtual std::string_view name() const noexcept = 0;
  virtual const DistributedEnvironment& environment() const noexcept = 0;
  int global_rank() const noexcept { return environment().rank; }
  int world_size() const noexcept { return environment().world_size; }
  int local_rank() const noexcept { return environment().local_rank; }
  int node_rank() const noexcept { return environment().node_rank; }
  bool is_global_zero() const noexcept { return global_rank() == 0; }

  /// The device this rank trains on, given the one the Trainer was asked for (Lightning's
  /// strategy.root_device). By default `requested`; DDPStrategy gives each rank of a machine its
  /// own CUDA device, cuda:LOCAL_RANK, where `requested` names none. (strategy.cpp)
  virtual c10::Device root_device(const c10::Device& requested) const;
  /// Joins the job (rendezvous, process group) on the first call; each run starts with it.
  /// `device`: root_device, where this rank's tensors are (it picks DDPStrategy's backend).
  virtual void connect(const c10::Device& device) { (void)device; }
  /// After the module is built and on its device, before configure_optimizers: makes every rank
  /// hold rank 0's parameters and buffers and prepares gradient averaging.
  virtual void setup_module(torch::nn::Module& module) { (void)module; }
  /// At the end of a fit, also when it fails: undoes setup_module.
  virtual void teardown_module() noexcept {}
  /// Before each training_step: `synchronize` is false while gradients accumulate locally
  /// (DDP's no_sync). Rank 0's buffers (BatchNorm statistics) go to every rank here.
  virtual void before_training_step(bool synchronize) { (void)synchronize; }
  /// When an evaluation loop starts, in eval mode: rank 0's buffers (BatchNorm statistics) go to
  /// every rank, as DDP's forward broadcasts them before an evaluation step's forward too (eval
  /// mode does not change them, so once a loop is the same). DDPStrategy does so inside a fit,
  /// where it holds the module; validate/test on their own load or keep the weights they are given.
  virtual void before_evaluation() {}
  /// Runs backward on `loss` (Lightning's strategy.backward); the Trainer calls the hooks around
  /// it. With `synchronize`, the gradients are averaged across ranks by the time it returns; a
  /// failure of that averaging is a DistributedError naming this rank. By default (strategy.cpp,
  /// with LibTorch) `loss.backward()`.
  virtual void backward(const at::Tensor& loss, bool synchronize);

  /// The longest one collective waits for the other ranks (DDPStrategy: DDPOptions::timeout),
  /// if there is such a bound. Rank 0 lets its checkpoint writer go that long without progress
  /// while every rank waits for it in a save's agreement, then fails (checkpoint_connector.cpp).
  /// None by default (one process; a strategy of one's own that does not say: rank 0 then waits
  /// for its writer as long as it takes).
  virtual std::optional<std::chrono::milliseconds> collective_timeout() const noexcept {
    return std::nullopt;
  }

  /// Whether the Trainer agrees on `should_stop` after every training batch, and on
  /// on_train_batch_start's -1 before it (a collective of one value each), rather than only
  /// after validation and at epoch ends.
  virtual bool agrees_on_stop_every_batch() const noexcept { return true; }
  /// True on every rank if any rank's `decision` is true (all: if every rank's is).
  virtual bool reduce_boolean_decision(bool decision, bool all) {
    (void)all;
    return decision;
  }
  /// Reduces `values` element-wise across ranks, in place.
  virtual void all_reduce(std::vector<double>& values, ReduceOp op) {
    (void)values;
    (void)op;
  }
  /// Rank `root`'s `value`, on every rank.
  virtual int64_t broadcast(int64_t value, int root = 0) {
    (void)root;
    return value;
  }
  /// Rank `root`'s `text` (a path, an error message), on every rank (Lightning's
  /// strategy.broadcast of an object). By default through broadcast(int64_t): the length, then
  /// eight bytes at a time, so that a strategy of one's own that has only that one works.
  virtual std::string broadcast_text(std::string text, int root = 0) {
    if (world_size() <= 1) return text;
    const auto size = static_cast<std::size_t>(broadcast(static_cast<int64_t>(text.size()), root));
    text.resize(size);
    for (std::size_t offset = 0; offset < size; offset += sizeof(int64_t)) {
      const std::size_t length = std::min(sizeof(int64_t), size - offset);
      int64_t chunk = 0;
      std::memcpy(&chunk, text.data() + offset, length);
      chunk = broadcast(chunk, root);
      std::memcpy(text.data() + offset, &chunk, length);
    }
    return text;
  }
  /// Waits until every rank reaches a barrier; `name` says which, in a timeout's error.
  virtual void barrier(std::string_view name) { (void)name; }
};

/// One process: every collective returns its input.
class SingleProcessStrategy final : public Strategy {
 public:
  std::string_view name() const noexcept override { return "single_process"; }
  const DistributedEnvironment& environment() const noexcept override { return environment_; }

 private:
  DistributedEnvironment environment_;
};

}  // namespace trainbus::distributed
