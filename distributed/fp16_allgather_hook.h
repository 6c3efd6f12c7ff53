#pragma once
/// DDP's float16 gradient compression on Gloo (DDPOptions::GradientCompression::kFp16): each
/// bucket of gradients rounded to float16 (half the bytes on the wire), all-gathered, and every
/// rank's float16 values summed in float32 and divided by the world size, written back into the
/// bucket. LibTorch's own FP16CompressCommHook all-reduces the float16 bucket instead, which Gloo
/// sums one element at a time in software on the CPU (bench/README.md: two ranks slower than one
/// process); NCCL keeps that hook. The sum here is of float16 values in float32, so it is rounded
/// once (each rank's gradient to float16), not at each addition as a float16 all-reduce's is.

#include <string_view>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>

#include "distributed/ddp_strategy.h"

namespace trainbus::distributed {

/// Whether DDP with `compression` on `backend` ("gloo" or "nccl") averages through
/// Fp16AllGatherHook: kFp16 on Gloo. kFp16 on NCCL and kFp16AllReduce use LibTorch's
/// fp16_compress_hook.
bool uses_fp16_all_gather(DDPOptions::GradientCompression compression, std::string_view backend);

/// The hook c10d's Reducer runs for each bucket once backward has filled it (on the training
/// thread); the summing runs when the all-gather completes, on the process group's worker thread.
/// A bucket on the CPU in float32 (DDP on Gloo's CPU tensors) is converted in place; one of
/// another dtype, or on another device, goes through a float32 copy on the CPU. The result is the
/// bucket itself, so gradients that are views into it (DDPOptions::gradient_as_bucket_view) see
/// the average. A failed all-gather fails the future, as c10d's own hooks' do.
class Fp16AllGatherHook final : public c10d::CommHookInterface {
 public:
  explicit Fp16AllGatherHook(c10::intrusive_ptr<c10d::ProcessGroup> group);

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override;
  at::Tensor parseHookResult(const c10::IValue& result) override;

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
};

}  // namespace trainbus::distributed
