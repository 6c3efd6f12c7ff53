// The fp16 gradient hook on Gloo, run as c10d's Reducer runs it on a bucket, by two or three
// ranks in threads of this process on one in-memory store (gradient_hook_for picks the hook only
// with two, but it works with any number).
#include "distributed/fp16_allgather_hook.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

// glog's CHECK (through c10's logging) before Catch's, which must win: the unity build may put
// this file's includes first.
#include <c10/util/Logging.h>
#include <catch2/catch.hpp>

using namespace trainbus::distributed;

namespace {

// Rank `rank`'s gradients: 1001 values around 0.01 (a tail after 8-value vectors), and values
// that float16 rounds, holds only as subnormals, or overflows when summed.
std::vector<float> gradients_of(int rank) {
  std::mt19937 random(static_cast<uint32_t>(100 + rank));
  std::normal_distribution<float> gradient(0.0F, 0.01F);
  std::vector<float> values(1001);
  for (auto& value : values) value = gradient(random);
  values[0] = 1.0F / 3;
  values[1] = rank == 0 ? 65504.0F : 65000.0F;  // the sum overflows float16, not float32
  values[2] = rank == 0 ? 3e-7F : -1e-7F;       // float16 subnormals
  values[3] = 1.0F + std::ldexp(1.0F, -11);     // a tie: rounds to the even 1.0
  return values;
}

// The bucket after the hook on each rank: what the hook's future held, and the bucket itself.
struct HookResult {
  at::Tensor result;
  at::Tensor bucket;
  std::exception_ptr error;
};

// Runs the hook `steps` times (one hook, as the Reducer's, for bucket 0) on a bucket of `dtype`
// holding values_of(rank), on `world` ranks; the last step's results. `count` is each rank's
// Fp16AllGatherHook::buckets_averaged() after the steps.
template <class Values>
std::vector<HookResult> run_on_ranks(int world, at::ScalarType dtype, Values values_of,
                                     int steps = 1, std::vector<int64_t>* counts = nullptr) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<HookResult> results(static_cast<size_t>(world));
  if (counts != nullptr) counts->assign(static_cast<size_t>(world), -1);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(60));
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
        Fp16AllGatherHook hook(group);
        for (int step = 0; step < steps; ++step) {
          const auto values = values_of(rank);
          at::Tensor bucket =
              at::from_blob(const_cast<typename decltype(values)::value_type*>(values.data()),
                            {static_cast<int64_t>(values.size())},
                            std::is_same_v<typename decltype(values)::value_type, double>
                                ? at::kDouble
                                : at::kFloat)
                  .to(dtype, /*non_blocking=*/false, /*copy=*/true);
          c10d::GradBucket grad_bucket(0, 1, bucket, {}, {}, {}, {});
          auto future = hook.runHook(grad_bucket);
          future->wait();
          results[static_cast<size_t>(rank)].result = hook.parseHookResult(future->value());
          results[static_cast<size_t>(rank)].bucket = bucket;
        }
        if (counts != nullptr) (*counts)[static_cast<size_t>(rank)] = hook.buckets_averaged();
      } catch (...) {
        results[static_cast<size_t>(rank)].error = std::current_exception();
      }
    });
  }
  for (auto& rank : ranks) rank.join();
  for (const HookResult& result : results) {
    if (result.error) std::rethrow_exception(result.error);
  }
  return results;
}

std::vector<HookResult> run_on_ranks(int world, at::ScalarType dtype) {
  return run_on_ranks(world, dtype, gradients_of);
}

float rounded(float value) { return static_cast<float>(c10::Half(value)); }

// Value `i` averaged as the hook does: each rank's value (as `Bucket`, the bucket's type) rounded
// to float16, summed in float32 in rank order, divided by the number of ranks.
template <class Bucket = float>
float average_of(const std::vector<std::vector<float>>& ranks, size_t i) {
  float sum = 0.0F;
  for (const std::vector<float>& values : ranks)
    sum += rounded(static_cast<float>(static_cast<Bucket>(values[i])));
  return sum / static_cast<float>(ranks.size());
}

std::vector<std::vector<float>> gradients_of_ranks(int world) {
  std::vector<std::vector<float>> ranks;
  for (int rank = 0; rank < world; ++rank) ranks.push_back(gradients_of(rank));
  return ranks;
}

uint32_t bits_of(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

}  // namespace

TEST_CASE(
    "the fp16 hook averages each rank's float16-rounded gradients in float32, into the bucket",
    "[fp16_hook]") {
  const int world = GENERATE(2, 3);
  CAPTURE(world);
  const std::vector<HookResult> results = run_on_ranks(world, at::kFloat);
  const std::vector<std::vector<float>> ranks = gradients_of_ranks(world);
  for (const HookResult& result : results) {
    // The result is the bucket itself: gradients that are views into it see the average.
    CHECK(result.result.data_ptr() == result.bucket.data_ptr());
    REQUIRE(result.result.numel() == static_cast<int64_t>(ranks[0].size()));
    const float* averaged = result.result.data_ptr<float>();
    size_t wrong = 0;
    for (size_t i = 0; i < ranks[0].size(); ++i) {
      // Rounded once to float16, each rank's value; summed and divided in float32.
      const float expected = average_of(ranks, i);
      if (bits_of(averaged[i]) != bits_of(expected)) {
        if (++wrong <= 3) {
          UNSCOPED_INFO("value " << i << ": got " << averaged[i] << ", expected " << expected);
        }
      }
    }
    CHECK(wrong == 0);
    // Summed in float32: 65504 + 64992 is past float16's largest (65504), but their average is
    // not (LibTorch's hook divides before its float16 sum: no inf there either).
    CHECK(averaged[1] ==
          (world == 2 ? (65504.0F + 64992.0F) / 2 : (65504.0F + 64992.0F + 64992.0F) / 3));
    CHECK(averaged[3] == 1.0F);
  }
  // Every rank steps alike: the same bits.
  for (const HookResult& result : results) CHECK(at::equal(results[0].result, result.result));
}

TEST_CASE("the fp16 hook averages a double bucket, each value rounded to float16 directly",
          "[fp16_hook]") {
  // doubles_to_halves, not the float32 copy; the average (float32) written back as doubles.
  const int world = GENERATE(2, 3);
  CAPTURE(world);
  const std::vector<HookResult> results = run_on_ranks(world, at::kDouble);
  const std::vector<std::vector<float>> ranks = gradients_of_ranks(world);
  for (const HookResult& result : results) {
    CHECK(result.result.data_ptr() == result.bucket.data_ptr());
    REQUIRE(result.result.scalar_type() == at::kDouble);
    const double* averaged = result.result.data_ptr<double>();
    size_t wrong = 0;
    for (size_t i = 0; i < ranks[0].size(); ++i) {
      if (averaged[i] != static_cast<double>(average_of(ranks, i))) ++wrong;
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE(
    "the fp16 hook averages a half or bfloat16 bucket through a float32 copy, into the bucket",
    "[fp16_hook]") {
  const int world = GENERATE(2, 3);
  const at::ScalarType dtype = GENERATE(at::kHalf, at::kBFloat16);
  CAPTURE(world, dtype);
  const std::vector<HookResult> results = run_on_ranks(world, dtype);
  const std::vector<std::vector<float>> ranks = gradients_of_ranks(world);
  for (const HookResult& result : results) {
    CHECK(result.result.data_ptr() == result.bucket.data_ptr());
    REQUIRE(result.result.scalar_type() == dtype);
    const at::Tensor averaged = result.result.to(at::kFloat);
    const float* got = averaged.data_ptr<float>();
    size_t wrong = 0;
    for (size_t i = 0; i < ranks[0].size(); ++i) {
      // Each rank's value as the bucket holds it, rounded to float16 (exact from half), the
      // float32 average rounded to the bucket's type.
      const float expected =
          dtype == at::kHalf
              ? static_cast<float>(c10::Half(average_of<c10::Half>(ranks, i)))
              : static_cast<float>(c10::BFloat16(average_of<c10::BFloat16>(ranks, i)));
      if (bits_of(got[i]) != bits_of(expected)) {
        if (++wrong <= 3) {
          UNSCOPED_INFO("value " << i << ": got " << got[i] << ", expected " << expected);
        }
      }
    }
    CHECK(wrong == 0);
    // bfloat16 holds 65504 as 65536, past float16's range: the rank's float16 is inf, and so
    // the average.
    CHECK(std::isinf(got[1]) == (dtype == at::kBFloat16));
    CHECK(got[3] == 1.0F);
  }
  for (const HookResult& result : results) CHECK(at::equal(results[0].result, result.result));
}

TEST_CASE("the fp16 hook reuses its buffers: a second step averages the new gradients",
          "[fp16_hook]") {
  // Step 0 averages gradients_of(rank), step 1 (the last, checked) their negatives: buffers kept
  // from step 0 must not leak its values into step 1.
  const int world = GENERATE(2, 3);
  CAPTURE(world);
  std::mutex mutex;
  std::vector<int> calls(static_cast<size_t>(world), 0);
  std::vector<int64_t> counts;
  const std::vector<HookResult> results = run_on_ranks(
      world, at::kFloat,
      [&](int rank) {
        int call = 0;
        {
          const std::lock_guard<std::mutex> lock(mutex);
          call = calls[static_cast<size_t>(rank)]++;
        }
        std::vector<float> values = gradients_of(rank);
        if (call == 1) {
          for (auto& value : values) value = -value;
        }
        return values;
      },
      2, &counts);
  std::vector<std::vector<float>> negatives = gradients_of_ranks(world);
  for (auto& values : negatives) {
    for (auto& value : values) value = -value;
  }
  for (const HookResult& result : results) {
    const float* averaged = result.result.data_ptr<float>();
    size_t wrong = 0;
    for (size_t i = 0; i < negatives[0].size(); ++i) {
      if (bits_of(averaged[i]) != bits_of(average_of(negatives, i))) ++wrong;
    }
    CHECK(wrong == 0);
  }
  CHECK(counts == std::vector<int64_t>(static_cast<size_t>(world), 2));
}

TEST_CASE("the fp16 hook rounds a double bucket to float16 once, not through float32",
          "[fp16_hook]") {
  // Just past float16's tie between 1 and 1 + 2^-10: float32 rounds it to the tie, which float16
  // then rounds to the even 1.0; rounded once it is 1 + 2^-10.
  const double past_tie = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  const int world = GENERATE(2, 3);
  CAPTURE(world);
  const std::vector<HookResult> results = run_on_ranks(world, at::kDouble, [&](int) {
    return std::vector<double>{past_tie, -past_tie, 0.1, 3e-300};
  });
  for (const HookResult& result : results) {
    CHECK(result.result.data_ptr() == result.bucket.data_ptr());
    const double* averaged = result.result.data_ptr<double>();
    CHECK(averaged[0] == 1.0 + std::ldexp(1.0, -10));
    CHECK(averaged[1] == -(1.0 + std::ldexp(1.0, -10)));
    CHECK(averaged[2] == static_cast<double>(rounded(0.1F)));
    CHECK(averaged[3] == 0.0);
  }
}

TEST_CASE("the fp16 hook refuses a complex bucket", "[fp16_hook]") {
  auto store = c10::make_intrusive<c10d::HashStore>();
  auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(10));
  options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, 0, 1, options);
  Fp16AllGatherHook hook(group);
  at::Tensor bucket = at::ones({4}, at::kComplexFloat);
  c10d::GradBucket grad_bucket(0, 1, bucket, {}, {}, {}, {});
  CHECK_THROWS_WITH(hook.runHook(grad_bucket),
                    Catch::Contains("cannot carry a bucket of complex gradients") &&
                        Catch::Contains("--ddp-fp16-gradients"));
}

TEST_CASE(
    "fp16 gradients all-gather on Gloo only where that sends no more bytes than LibTorch's "
    "float16 all-reduce",
    "[fp16_hook]") {
  using Compression = DDPOptions::GradientCompression;
  // Per rank, for B bytes of float32 gradients (ring algorithms): the all-gather (N-1) x B/2,
  // LibTorch's float16 all-reduce (N-1)/N x B: as many with 2 ranks (B/2), more from 3 on
  // (B against 2B/3 with 3 ranks; 3B/2 against 3B/4 with 4).
  CHECK(gradient_hook_for(Compression::kFp16, "gloo", 1) == GradientHook::kFp16AllGather);
  CHECK(gradient_hook_for(Compression::kFp16, "gloo", 2) == GradientHook::kFp16AllGather);
  CHECK(gradient_hook_for(Compression::kFp16, "gloo", 3) == GradientHook::kFp16AllReduce);
  CHECK(gradient_hook_for(Compression::kFp16, "gloo", 4) == GradientHook::kFp16AllReduce);
  CHECK(gradient_hook_for(Compression::kFp16, "gloo", 8) == GradientHook::kFp16AllReduce);
  for (int world_size : {1, 2, 3, 4, 8}) {
    CAPTURE(world_size);
    CHECK(gradient_hook_for(Compression::kFp16, "nccl", world_size) ==
          GradientHook::kFp16AllReduce);
    for (const char* backend : {"gloo", "nccl"}) {
      CHECK(gradient_hook_for(Compression::kFp16AllReduce, backend, world_size) ==
            GradientHook::kFp16AllReduce);
      CHECK(gradient_hook_for(Compression::kNone, backend, world_size) ==
            GradientHook::kFloat32AllReduce);
    }
  }
  CHECK(gradient_hook_name(GradientHook::kFloat32AllReduce) == "float32_all_reduce");
  CHECK(gradient_hook_name(GradientHook::kFp16AllGather) == "fp16_all_gather");
  CHECK(gradient_hook_name(GradientHook::kFp16AllReduce) == "fp16_all_reduce");
}
