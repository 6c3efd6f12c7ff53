#include "distributed/fp16_allgather_hook.h"

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/jit_type.h>

#include "distributed/half_conversion.h"

namespace trainbus::distributed {

GradientHook gradient_hook_for(DDPOptions::GradientCompression compression,
                               std::string_view backend, int world_size) {
  switch (compression) {
    case DDPOptions::GradientCompression::kNone:
      return GradientHook::kFloat32AllReduce;
    case DDPOptions::GradientCompression::kFp16AllReduce:
      return GradientHook::kFp16AllReduce;
    case DDPOptions::GradientCompression::kFp16:
      // Bytes per rank for B bytes of float32: the all-gather (N-1) x B/2, LibTorch's float16
      // all-reduce (N-1)/N x B: no more while N <= 2 (at 3, B against 2B/3).
      return backend == "gloo" && world_size <= 2 ? GradientHook::kFp16AllGather
                                                  : GradientHook::kFp16AllReduce;
  }
  return GradientHook::kFloat32AllReduce;
}

std::string_view gradient_hook_name(GradientHook hook) noexcept {
  switch (hook) {
    case GradientHook::kFloat32AllReduce:
      return "float32_all_reduce";
    case GradientHook::kFp16AllGather:
      return "fp16_all_gather";
    case GradientHook::kFp16AllReduce:
      return "fp16_all_reduce";
  }
  return "unknown";
}

Fp16AllGatherHook::Fp16AllGatherHook(c10::intrusive_ptr<c10d::ProcessGroup> group)
    : group_(std::move(group)) {}

std::shared_ptr<Fp16AllGatherHook::Buffers> Fp16AllGatherHook::buffers_for(size_t index,
                                                                           int64_t count,
                                                                           bool floats) {
  const std::lock_guard<std::mutex> lock(mutex_);
  std::shared_ptr<Buffers>& kept = buffers_[index];
  if (kept && !kept->in_use.load() && kept->halves.numel() == count &&
      kept->floats.defined() == floats) {
    kept->in_use = true;
    return kept;
  }
  const auto half_options = at::TensorOptions().device(at::kCPU).dtype(at::kHalf);
  auto made = std::make_shared<Buffers>();
  made->halves = at::empty({count}, half_options);
  made->gathered.resize(1);
  const int world_size = group_->getSize();
  made->gathered[0].reserve(static_cast<size_t>(world_size));
  for (int rank = 0; rank < world_size; ++rank)
    made->gathered[0].push_back(at::empty({count}, half_options));
  if (floats)
    made->floats = at::empty({count}, at::TensorOptions().device(at::kCPU).dtype(at::kFloat));
  made->in_use = true;
  kept = made;
  return made;
}

c10::intrusive_ptr<c10::ivalue::Future> Fp16AllGatherHook::runHook(c10d::GradBucket& bucket) {
  at::Tensor bucket_tensor = bucket.getBufferRef();
  TORCH_CHECK(!bucket_tensor.is_complex(),
              "DDP's float16 gradients (--ddp-fp16-gradients, DDPOptions::gradient_compression) "
              "cannot carry a bucket of complex gradients (",
              bucket_tensor.scalar_type(), "): float16 has no imaginary part");
  const bool in_place = bucket_tensor.device().is_cpu() &&
                        bucket_tensor.scalar_type() == at::kFloat && bucket_tensor.is_contiguous();
  const int64_t count = bucket_tensor.numel();
  std::shared_ptr<Buffers> buffers = buffers_for(bucket.getIndex(), count, !in_place);
  auto* halves = reinterpret_cast<uint16_t*>(buffers->halves.data_ptr());
  at::Tensor gradients = in_place ? bucket_tensor : buffers->floats;
  if (bucket_tensor.scalar_type() == at::kDouble) {
    // Rounded once, double to float16; the average comes back through `gradients`.
    const at::Tensor doubles = bucket_tensor.to(at::kCPU).contiguous();
    doubles_to_halves(doubles.data_ptr<double>(), halves, static_cast<size_t>(count));
  } else {
    if (!in_place) gradients.copy_(bucket_tensor);  // exact for half and bfloat16
    floats_to_halves(gradients.data_ptr<float>(), halves, static_cast<size_t>(count));
  }
  std::vector<at::Tensor> inputs{buffers->halves};
  c10::intrusive_ptr<c10::ivalue::Future> all_gathered =
      group_->allgather(buffers->gathered, inputs)->getFuture();
  const int world_size = group_->getSize();
  return all_gathered->then(
      [buffers, gradients, bucket_tensor, in_place, world_size,
       averaged = averaged_](c10::ivalue::Future& done) mutable {
        // then() calls this on an error too: value() throws it, which fails the result (and
        // leaves the buffers marked in use: the collective may still hold them).
        (void)done.value();
        std::vector<const uint16_t*> parts;
        parts.reserve(buffers->gathered[0].size());
        for (const at::Tensor& part : buffers->gathered[0])
          parts.push_back(reinterpret_cast<const uint16_t*>(part.data_ptr()));
        average_halves(parts.data(), world_size, gradients.data_ptr<float>(),
                       static_cast<size_t>(gradients.numel()));
        if (!in_place) bucket_tensor.copy_(gradients);
        buffers->in_use = false;
        ++*averaged;
        return c10::IValue(bucket_tensor);
      },
      c10::TensorType::get());
}

at::Tensor Fp16AllGatherHook::parseHookResult(const c10::IValue& result) {
  return result.toTensor();
}

}  // namespace trainbus::distributed
