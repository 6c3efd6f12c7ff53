#include "distributed/fp16_allgather_hook.h"

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/jit_type.h>

#include "distributed/half_conversion.h"

namespace trainbus::distributed {

bool uses_fp16_all_gather(DDPOptions::GradientCompression compression, std::string_view backend) {
  return compression == DDPOptions::GradientCompression::kFp16 && backend == "gloo";
}

Fp16AllGatherHook::Fp16AllGatherHook(c10::intrusive_ptr<c10d::ProcessGroup> group)
    : group_(std::move(group)) {}

c10::intrusive_ptr<c10::ivalue::Future> Fp16AllGatherHook::runHook(c10d::GradBucket& bucket) {
  at::Tensor bucket_tensor = bucket.getBufferRef();
  const bool in_place = bucket_tensor.device().is_cpu() &&
                        bucket_tensor.scalar_type() == at::kFloat && bucket_tensor.is_contiguous();
  at::Tensor gradients = in_place ? bucket_tensor
                                  : bucket_tensor
                                        .to(at::TensorOptions().device(at::kCPU).dtype(at::kFloat),
                                            /*non_blocking=*/false, /*copy=*/true)
                                        .contiguous();
  const int64_t count = gradients.numel();
  const auto half_options = at::TensorOptions().device(at::kCPU).dtype(at::kHalf);
  at::Tensor halves = at::empty({count}, half_options);
  floats_to_halves(gradients.data_ptr<float>(), reinterpret_cast<uint16_t*>(halves.data_ptr()),
                   static_cast<size_t>(count));
  const int world_size = group_->getSize();
  std::vector<std::vector<at::Tensor>> gathered(1);
  gathered[0].reserve(static_cast<size_t>(world_size));
  for (int rank = 0; rank < world_size; ++rank)
    gathered[0].push_back(at::empty({count}, half_options));
  std::vector<at::Tensor> inputs{halves};
  c10::intrusive_ptr<c10::ivalue::Future> all_gathered =
      group_->allgather(gathered, inputs)->getFuture();
  return all_gathered->then(
      [gathered = std::move(gathered), gradients, bucket_tensor, in_place,
       world_size](c10::ivalue::Future& done) mutable {
        // then() calls this on an error too: value() throws it, which fails the result.
        (void)done.value();
        std::vector<const uint16_t*> parts;
        parts.reserve(gathered[0].size());
        for (const at::Tensor& part : gathered[0])
          parts.push_back(reinterpret_cast<const uint16_t*>(part.data_ptr()));
        average_halves(parts.data(), world_size, gradients.data_ptr<float>(),
                       static_cast<size_t>(gradients.numel()));
        if (!in_place) bucket_tensor.copy_(gradients);
        return c10::IValue(bucket_tensor);
      },
      c10::TensorType::get());
}

at::Tensor Fp16AllGatherHook::parseHookResult(const c10::IValue& result) {
  return result.toTensor();
}

}  // namespace trainbus::distributed
