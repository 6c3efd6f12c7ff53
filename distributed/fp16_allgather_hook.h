#pragma once
/// DDP's float16 gradient compression on Gloo with 2 ranks (DDPOptions::GradientCompression
/// ::kFp16, gradient_hook_for): each bucket of gradients rounded to float16, all-gathered, and
/// every rank's float16 values summed in float32 and divided by the world size, written back into
/// the bucket. LibTorch's own FP16CompressCommHook all-reduces the float16 bucket instead, which
/// Gloo sums one element at a time in software on the CPU (bench/README.md: two ranks slower than
/// one process). The sum here is of float16 values in float32, so it is rounded once to float16
/// (each rank's gradient), not at each addition as a float16 all-reduce's is. Per rank, for a
/// bucket of B bytes of float32, an all-gather sends (N-1) x B/2 bytes, LibTorch's float16 ring
/// all-reduce (N-1)/N x B: as many with 2 ranks, more from 3 on (B against 2B/3; arithmetic, not
/// measured), which is why gradient_hook_for picks it only with 2. The hook itself works for any
/// number of ranks.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>

#include "distributed/ddp_strategy.h"

namespace trainbus::distributed {

/// The hook c10d's Reducer runs for each bucket once backward has filled it (on the training
/// thread); the summing runs when the all-gather completes, on the process group's worker thread.
/// A bucket on the CPU in float32 (DDP on Gloo's CPU tensors) is converted in place; one of
/// another floating dtype, or on another device, goes through a float32 copy on the CPU (a
/// double bucket is rounded to float16 directly, once, not through float32). A complex bucket is
/// refused (c10::Error): float16 has no imaginary part. The result is the bucket itself, so
/// gradients that are views into it (DDPOptions::gradient_as_bucket_view) see the average. The
/// float16 and float32 buffers of each bucket are kept and reused at the next step. A failed
/// all-gather (a rank gone) fails the future, as c10d's own hooks' do.
class Fp16AllGatherHook final : public c10d::CommHookInterface {
 public:
  explicit Fp16AllGatherHook(c10::intrusive_ptr<c10d::ProcessGroup> group);

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override;
  at::Tensor parseHookResult(const c10::IValue& result) override;

  /// Buckets averaged so far (their all-gather done and summed), by every step.
  int64_t buckets_averaged() const noexcept { return averaged_->load(); }

 private:
  // One bucket's buffers: its float16 values, every rank's as gathered, and (for a bucket that
  // is not float32 on the CPU) its float32 copy. In use from runHook until the sum is written.
  struct Buffers {
    at::Tensor halves;
    std::vector<std::vector<at::Tensor>> gathered;  // [0][rank]
    at::Tensor floats;
    std::atomic<bool> in_use{false};
  };
  // Bucket `index`'s buffers for `count` values, kept from its last step where they fit and are
  // free (after a failed step they may still be in a collective: new ones then).
  std::shared_ptr<Buffers> buffers_for(size_t index, int64_t count, bool floats);

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::mutex mutex_;  // buffers_: runHook runs on the training thread (and autograd's)
  std::unordered_map<size_t, std::shared_ptr<Buffers>> buffers_;
  std::shared_ptr<std::atomic<int64_t>> averaged_ = std::make_shared<std::atomic<int64_t>>(0);
};

}  // namespace trainbus::distributed
