#pragma once
/// DDPStrategy: data-parallel training on c10d (Gloo on the CPU, NCCL on CUDA where LibTorch has
/// it), as PyTorch's DistributedDataParallel does it, driven by the Trainer.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <c10/util/intrusive_ptr.h>

#include "base/arg.h"
#include "distributed/environment.h"
#include "distributed/strategy.h"

namespace c10::ivalue {
struct Future;
}
namespace c10d {
class GradBucket;
class ProcessGroup;
}  // namespace c10d

namespace trainbus::distributed {

/// A DDP communication hook (PyTorch's DistributedDataParallel.register_comm_hook(state, hook),
/// the process group as its state): given a bucket of gradients that backward has filled, it
/// starts their communication and returns a future of the bucket averaged across the ranks (a
/// tensor, or a list whose first tensor is it, of the bucket's buffer's size, type and device;
/// anything else fails backward with an error naming DDPOptions::comm_hook and the bucket). It
/// replaces the Reducer's own all-reduce, so it must average: allreduce_average below is that
/// all-reduce, to wrap. c10d's Reducer calls it on the thread that runs backward (on the CPU,
/// the training thread), once per bucket of every averaging backward, in the buckets' order,
/// each once its gradients and every earlier bucket's are in: backward may still be computing
/// the gradients of earlier layers, so the hook must not wait for the communication. The
/// Reducer waits for every future at the end of backward, before the optimizer step.
///
/// Its contract:
/// - `bucket` and `group` are valid only during the call: copy what you need (getIndex(),
///   getBufferRef(), a tensor handle shares the buffer) and never capture `&bucket` or `&group`
///   in a continuation (Future::then) that runs later.
/// - The returned future must complete (with the value, or an error). One that never does hangs
///   backward: the Reducer waits for it with no timeout.
/// - The Reducer holds its mutex while calling the hook: do not call into the DDPStrategy nor
///   the Reducer from it (a deadlock).
/// - An exception it throws fails backward as "DDPOptions::comm_hook failed for gradient bucket
///   i: <its message>"; a DistributedError or MisconfigurationError passes unchanged.
///
/// To write or set a hook, include <torch/csrc/distributed/c10d/comm.hpp>: it defines
/// c10d::GradBucket (the bucket's index, its flat buffer (getBufferRef), its gradients and
/// parameters), c10d::ProcessGroup and c10::ivalue::Future, which this header only declares
/// (without it, setting a hook fails to compile on the incomplete c10::ivalue::Future).
using CommHook = std::function<c10::intrusive_ptr<c10::ivalue::Future>(c10d::ProcessGroup& group,
                                                                       c10d::GradBucket& bucket)>;

/// What the Reducer does without a hook, as PyTorch's allreduce_hook: divides the bucket by the
/// world size, then starts its all-reduce (a sum) on `group`; the future holds the bucket. For
/// dense buckets (the Reducer's only kind here: DDPStrategy declares no sparse gradient). The
/// Reducer multiplies each gradient by 1 / world size as it copies it into the bucket, where
/// this divides: the same with 2 ranks (or any power of two), and the two may differ by 1 ulp
/// beyond.
c10::intrusive_ptr<c10::ivalue::Future> allreduce_average(c10d::ProcessGroup& group,
                                                          c10d::GradBucket& bucket);

/// Options of DDPStrategy; names and defaults as torch.nn.parallel.DistributedDataParallel's,
/// except the timeout (PyTorch's is 30 minutes).
struct DDPOptions {
  /// The c10d process group the ranks talk through (torch.distributed's backend).
  enum class Backend {
    kAuto,  ///< NCCL when the Trainer's device is CUDA and this LibTorch has NCCL, else Gloo
    kGloo,  ///< Gloo over TCP: CPU tensors (and CUDA ones, staged through the CPU)
    kNccl,  ///< NCCL: CUDA tensors only, one device per rank; needs a LibTorch built with NCCL
  };
  /// How gradients travel between ranks (PyTorch's DDP communication hooks).
  enum class GradientCompression {
    kNone,  ///< float32, exact
    /// Rounded to float16 (gradients at float16's precision), sent in half of float32's bytes,
    /// by the hook gradient_hook_for picks: on Gloo with 2 ranks Fp16AllGatherHook
    /// (distributed/fp16_allgather_hook.h: all-gathered, summed in float32), else LibTorch's
    /// fp16_compress_hook (an all-reduce in float16; on Gloo its float16 sums run one element at
    /// a time in software). Elements with |g| >= 65520 become +-inf, those below about 3e-8
    /// become 0 (LibTorch's hook alike on overflow; it loses more on underflow, dividing in
    /// float16).
    kFp16,
    /// LibTorch's fp16_compress_hook on every backend and world size: the bucket halved to
    /// float16, then divided by the world size in float16 (LibTorch 1.13), and all-reduced in
    /// float16 (for comparison; slow on Gloo).
    kFp16AllReduce,
  };
  /// Longest wait for the rendezvous (every rank joining) and for any one collective. A rank
  /// that died is noticed at once (its connections close); one that hangs, after this.
  TRAINBUS_ARG(std::chrono::milliseconds, timeout){std::chrono::minutes(5)};
  /// Gradients are averaged in buckets of about this many MiB, each sent as soon as backward has
  /// filled it (overlapping the rest of backward). The first bucket is 1 MiB, as DDP's.
  TRAINBUS_ARG(double, bucket_cap_mb) = 25.0;
  /// Parameters a step may leave without a gradient are found by walking the loss's graph each
  /// step; without it, such a parameter is an error at the next step.
  TRAINBUS_ARG(bool, find_unused_parameters) = false;
  /// Rank 0's buffers (BatchNorm running statistics) to every rank before a training step, as
  /// DDP's forward: before the first, and before each one after a step that averaged gradients
  /// (not after a no_sync step of gradient accumulation); and before each evaluation loop of a
  /// fit.
  TRAINBUS_ARG(bool, broadcast_buffers) = true;
  /// Each parameter's gradient a view into its bucket, as DDP's gradient_as_bucket_view: the
  /// averaged gradients are not copied back out of the buckets. The Trainer sets gradients to
  /// none every step (as Lightning), so each backward still copies fresh ones in, and they stay
  /// in memory twice only until then. A gradient is then overwritten by the next step: clone
  /// one to keep it. LibTorch's own Optimizer::zero_grad() detaches gradients in place, which
  /// a view refuses ("Can't detach views in-place"): zero them through the Trainer (or
  /// LightningOptimizer::zero_grad) or set them to none.
  TRAINBUS_ARG(bool, gradient_as_bucket_view) = false;
  /// A communication hook of one's own (CommHook above: read its contract), called for every
  /// gradient bucket instead of the Reducer's all-reduce; empty: the Reducer's. Not with any
  /// gradient_compression, which is such a hook already (a Reducer takes one). Every rank must
  /// set one alike (the ranks compare whether it is set, not what it does). The strategy calls
  /// this function itself, not a copy, for every Reducer it builds (a mutable lambda's state
  /// stays across them).
  TRAINBUS_ARG(CommHook, comm_hook);
  /// Network interface Gloo binds (as GLOO_SOCKET_IFNAME, which it defaults to); empty and unset:
  /// the address this machine uses to reach master_addr.
  TRAINBUS_ARG(std::string, socket_ifname);
  TRAINBUS_ARG(Backend, backend) = Backend::kAuto;
  TRAINBUS_ARG(GradientCompression, gradient_compression) = GradientCompression::kNone;
  /// After every training batch the ranks agree on trainer.should_stop (an all-reduce of one
  /// value), so that a stop asked on one rank, in any hook, stops every rank after that batch;
  /// and before every batch on on_train_batch_start's -1 (another), so that one rank's skips the
  /// rest of the epoch on all. false: as Lightning, the Trainer agrees only after validation and
  /// at epoch ends, saving two collectives per step (bench/README.md); a stop asked in a batch
  /// hook, and a -1, must then be asked on every rank alike (a Timer, max_steps and
  /// EarlyStopping are), or the ranks fall out of step and the next collective fails at the
  /// timeout.
  TRAINBUS_ARG(bool, stop_agreement_every_batch) = true;
  /// The nice value of Gloo's TCP event loop thread (0 to 19; --ddp-gloo-loop-nice). Gloo's loop
  /// busy-spins while another thread holds the connection it has events for; where every core
  /// is busy (as many ranks as cores) that spin can hold a core for a scheduler slice, about
  /// 4 ms here, that the collective waits for (gloo_event_loop.h). At 19 it gives way; 0: as
  /// PyTorch leaves it. DDPStatistics::gloo_event_loop_niced says whether it was applied.
  TRAINBUS_ARG(int, gloo_event_loop_nice) = 19;
};

/// The communication hook c10d's Reducer averages the gradient buckets with.
enum class GradientHook {
  kFloat32AllReduce,  ///< no hook: c10d's all-reduce of the float32 buckets (exact)
  kFp16AllGather,     ///< Fp16AllGatherHook: float16 all-gathered, summed in float32
  kFp16AllReduce,     ///< LibTorch's FP16CompressCommHook: float16 all-reduced in float16
};

/// The hook DDP with `compression` on `backend` ("gloo" or "nccl") among `world_size` ranks
/// averages with. kNone: kFloat32AllReduce. kFp16AllReduce: kFp16AllReduce. kFp16:
/// kFp16AllGather on Gloo with at most 2 ranks, where it sends no more bytes than LibTorch's
/// float16 all-reduce, else kFp16AllReduce. Bytes each rank sends per bucket of B bytes of
/// float32 (ring algorithms; arithmetic, not measured): float32 all-reduce 2(N-1)/N x B, float16
/// all-reduce half that, (N-1)/N x B, float16 all-gather (N-1) x B/2: B/2 for both with 2 ranks,
/// but with 3 the all-gather sends B against the all-reduce's 2B/3, and with 4 as much as
/// float32. So from 3 ranks on the float16 all-reduce halves the bytes, which is what the option
/// is for (a network that limits), at the price of Gloo's software float16 sum (bench/README.md
/// stop 31); where bytes do not limit, float16 is no faster than float32, which is exact. NCCL
/// sums float16 on the GPU: always its all-reduce.
GradientHook gradient_hook_for(DDPOptions::GradientCompression compression,
                               std::string_view backend, int world_size);

/// The hook's name, as DDPStatistics::comm_hook_name and c10d's DDP logging data (comm_hook)
/// give it: "float32_all_reduce", "fp16_all_gather", "fp16_all_reduce".
std::string_view gradient_hook_name(GradientHook hook) noexcept;

/// The name of DDPOptions::comm_hook (a hook of one's own, which replaces gradient_hook_for's
/// choice) in DDPStatistics::comm_hook_name and c10d's DDP logging data.
inline constexpr std::string_view kUserCommHookName = "user";

/// What a DDPStrategy has communicated so far on this rank, for benchmarks and tests.
struct DDPStatistics {
  /// Backward passes whose gradients were averaged across ranks (each all-reduces every bucket
  /// once): one per optimizer step, none while gradients accumulate (no_sync).
  int64_t gradient_syncs = 0;
  /// Broadcasts of rank 0's buffers before a training step.
  int64_t buffer_broadcasts = 0;
  /// Gradient elements each of those averages: every parameter that requires grad, once (a
  /// weight two layers share, too).
  int64_t gradient_elements = 0;
  /// The communication hook of the last module set up (gradient_hook_name, or kUserCommHookName
  /// for DDPOptions::comm_hook), as registered with c10d's Reducer and read back from its
  /// Logger's DDP logging data (comm_hook); empty before.
  std::string comm_hook_name;
  /// Buckets Fp16AllGatherHook averaged for the last module set up (read when it is torn down);
  /// 0 under another hook.
  int64_t fp16_all_gather_buckets = 0;
  /// Whether Gloo's event loop thread got DDPOptions::gloo_event_loop_nice (false with 0, with
  /// NCCL, or where its thread could not be told apart).
  bool gloo_event_loop_niced = false;
  /// The gradient buckets of the last module set up (the Reducer's, after it rebuilt them at
  /// the first step in the order backward produced the gradients); read when it is torn down
  /// (at the end of a fit), as are the times below.
  int64_t buckets = 0;
  /// Averages over the steps c10d's Reducer samples (its first 10, then every 100th; the first
  /// one runs with the buckets before their rebuild), in nanoseconds, as PyTorch's DDP logging
  /// data, each between two wall-clock stamps: backward's compute (from just before backward to
  /// the callback at its end), the gradients' communication (the first bucket's all-reduce
  /// started to every bucket averaged), and their overlap (the first bucket's all-reduce
  /// started to the end of backward's compute). The overlap is above 0 with one bucket too
  /// (sent after the last gradient, a little before backward ends): a time, not a proof that an
  /// all-reduce ran beside the compute of earlier layers (tests/distributed/ddp_test.cpp shows
  /// that by order). 0 where no step was sampled.
  int64_t backward_compute_ns = 0;
  int64_t backward_comm_ns = 0;
  int64_t backward_compute_comm_overlap_ns = 0;
};

/// Data-parallel training: each rank holds a replica of the module, parameters and buffers start
/// as rank 0's, and gradients are averaged by LibTorch's c10d::Reducer (bucketed all-reduce during
/// backward) so that every rank's optimizer takes the same step. Joins the job at the first run.
/// Errors of the rendezvous and of collectives are raised as DistributedError naming this rank,
/// the operation and the timeout.
class DDPStrategy final : public Strategy {
 public:
  /// `environment`: who this process is (by default from torchrun's variables).
  explicit DDPStrategy(DistributedEnvironment environment = environment_from_variables(),
                       DDPOptions options = {});
  ~DDPStrategy() override;
  DDPStrategy(const DDPStrategy&) = delete;
  DDPStrategy& operator=(const DDPStrategy&) = delete;

  std::string_view name() const noexcept override { return "ddp"; }
  const DistributedEnvironment& environment() const noexcept override { return environment_; }
  const DDPOptions& options() const noexcept { return options_; }
  const DDPStatistics& statistics() const noexcept { return statistics_; }
  /// Whether this LibTorch was built with NCCL (USE_C10D_NCCL, which a CUDA LibTorch's CMake
  /// target defines): Debian's CPU-only LibTorch has not.
  static bool nccl_available() noexcept;
  /// "gloo" or "nccl" once joined, empty before.
  std::string_view backend_name() const noexcept;

  /// CUDA without an index: cuda:LOCAL_RANK, so that the ranks of a machine use one device each
  /// (as Lightning's devices=N). A device with an index, or not CUDA, is kept.
  c10::Device root_device(const c10::Device& requested) const override;
  /// Joins the job: the rendezvous through a TCPStore at MASTER_ADDR:MASTER_PORT, then the process
  /// group DDPOptions::backend picks for root_device(`requested`). A later call (the next run)
  /// keeps the group and must name a device of the same type. A collective called before any
  /// run joins for the CPU (Gloo).
  void connect(const c10::Device& requested) override;
  void setup_module(torch::nn::Module& module) override;
  void teardown_module() noexcept override;
  void before_training_step(bool synchronize) override;
  void before_evaluation() override;
  void backward(const at::Tensor& loss, bool synchronize) override;
  /// DDPOptions::timeout.
  std::optional<std::chrono::milliseconds> collective_timeout() const noexcept override {
    return options_.timeout();
  }
  bool agrees_on_stop_every_batch() const noexcept override {
    return options_.stop_agreement_every_batch();
  }
  bool reduce_boolean_decision(bool decision, bool all) override;
  void all_reduce(std::vector<double>& values, ReduceOp op) override;
  int64_t broadcast(int64_t value, int root = 0) override;
  /// Two collectives: the length, then the bytes.
  std::string broadcast_text(std::string text, int root = 0) override;
  void barrier(std::string_view name) override;

 private:
  /// Rank 0's buffers to every rank, unless DDPOptions turns that off or there are none: whether
  /// they were sent.
  bool broadcast_buffers();
  /// Waits for, and checks, the last backward's averaging (the Reducer's rebuild_buckets): an
  /// unused parameter is a DistributedError saying what to do.
  void finish_previous_reduction();

  struct Impl;
  DistributedEnvironment environment_;
  DDPOptions options_;
  DDPStatistics statistics_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trainbus::distributed
