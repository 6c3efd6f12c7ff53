// The fp16 gradient hook on Gloo, run as c10d's Reducer runs it on a bucket, by two ranks in two
// threads of this process on one in-memory store.
#include "distributed/fp16_allgather_hook.h"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <random>
#include <thread>
#include <vector>

#include <c10/util/Half.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

// glog's CHECK (through c10's logging) before Catch's, which must win: the unity build may put
// this file's includes first.
#include <c10/util/Logging.h>
#include <catch2/catch.hpp>

using namespace trainbus::distributed;

namespace {

constexpr int kWorld = 2;

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

// Runs the hook on a bucket of `dtype` holding gradients_of(rank), on both ranks.
std::vector<HookResult> run_on_both_ranks(at::ScalarType dtype) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<HookResult> results(kWorld);
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < kWorld; ++rank) {
    ranks.emplace_back([&, rank] {
      try {
        auto options = c10d::ProcessGroupGloo::Options::create(std::chrono::seconds(60));
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, kWorld, options);
        const std::vector<float> values = gradients_of(rank);
        at::Tensor bucket = at::from_blob(const_cast<float*>(values.data()),
                                          {static_cast<int64_t>(values.size())}, at::kFloat)
                                .to(dtype, /*non_blocking=*/false, /*copy=*/true);
        c10d::GradBucket grad_bucket(0, 1, bucket, {}, {}, {}, {});
        Fp16AllGatherHook hook(group);
        auto future = hook.runHook(grad_bucket);
        future->wait();
        results[static_cast<size_t>(rank)].result = hook.parseHookResult(future->value());
        results[static_cast<size_t>(rank)].bucket = bucket;
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

float rounded(float value) { return static_cast<float>(c10::Half(value)); }

uint32_t bits_of(float value) {
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

}  // namespace

TEST_CASE(
    "the fp16 hook averages each rank's float16-rounded gradients in float32, into the bucket",
    "[fp16_hook]") {
  const std::vector<HookResult> results = run_on_both_ranks(at::kFloat);
  const std::vector<float> rank0 = gradients_of(0);
  const std::vector<float> rank1 = gradients_of(1);
  for (const HookResult& result : results) {
    // The result is the bucket itself: gradients that are views into it see the average.
    CHECK(result.result.data_ptr() == result.bucket.data_ptr());
    REQUIRE(result.result.numel() == static_cast<int64_t>(rank0.size()));
    const float* averaged = result.result.data_ptr<float>();
    size_t wrong = 0;
    for (size_t i = 0; i < rank0.size(); ++i) {
      // Rounded once, each rank's value to float16; summed and divided in float32.
      const float expected = (rounded(rank0[i]) + rounded(rank1[i])) / 2.0F;
      if (bits_of(averaged[i]) != bits_of(expected)) {
        if (++wrong <= 3) {
          UNSCOPED_INFO("value " << i << ": got " << averaged[i] << ", expected " << expected);
        }
      }
    }
    CHECK(wrong == 0);
    CHECK(averaged[1] == (65504.0F + 64992.0F) / 2);  // no overflow: float16 would give inf
    CHECK(averaged[3] == 1.0F);
  }
  // Every rank steps alike: the same bits.
  CHECK(at::equal(results[0].result, results[1].result));
}

TEST_CASE("the fp16 hook averages a bucket of another dtype through a float32 copy",
          "[fp16_hook]") {
  const std::vector<HookResult> results = run_on_both_ranks(at::kDouble);
  const std::vector<float> rank0 = gradients_of(0);
  const std::vector<float> rank1 = gradients_of(1);
  for (const HookResult& result : results) {
    CHECK(result.result.data_ptr() == result.bucket.data_ptr());
    REQUIRE(result.result.scalar_type() == at::kDouble);
    const double* averaged = result.result.data_ptr<double>();
    size_t wrong = 0;
    for (size_t i = 0; i < rank0.size(); ++i) {
      const float expected = (rounded(rank0[i]) + rounded(rank1[i])) / 2.0F;
      if (averaged[i] != static_cast<double>(expected)) ++wrong;
    }
    CHECK(wrong == 0);
  }
}
