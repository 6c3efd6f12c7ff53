// data::TensorDataLoader: the order of an epoch is a pure function of (seed, epoch).
#include "data/data_loader.h"

#include <torch/types.h>
#include "tests/support/catch.h"

#include "base/errors.h"

using namespace trainbus;

namespace {

at::Tensor order_of(data::TensorDataLoader& loader, int64_t epoch) {
  loader.set_epoch(epoch);
  std::vector<at::Tensor> parts;
  for (int64_t i = 0; i < loader.num_batches(); ++i) parts.push_back(loader.batch(i).data);
  return torch::cat(parts);
}

}  // namespace

TEST_CASE("Unshuffled batches are consecutive slices, the last one may be short",
          "[data][loader]") {
  data::TensorDataLoader loader(torch::arange(10), torch::arange(10) * 2,
                                data::DataLoaderOptions().batch_size(4));
  REQUIRE(loader.num_batches() == 3);
  CHECK(loader.batch(2).data.equal(torch::tensor({8, 9})));
  CHECK(loader.batch(2).target.equal(torch::tensor({16, 18})));
  data::TensorDataLoader dropping(
      torch::arange(10), at::Tensor(),
      data::DataLoaderOptions().batch_size(4).shuffle(false).drop_last(true));
  CHECK(dropping.num_batches() == 2);
  CHECK_FALSE(dropping.batch(0).target.defined());
}

TEST_CASE("Shuffled order depends only on seed and epoch", "[data][loader]") {
  data::TensorDataLoader a(torch::arange(100), at::Tensor(),
                           data::DataLoaderOptions().batch_size(10).shuffle(true).seed(42));
  data::TensorDataLoader b(torch::arange(100), at::Tensor(),
                           data::DataLoaderOptions().batch_size(10).shuffle(true).seed(42));
  data::TensorDataLoader other_seed(
      torch::arange(100), at::Tensor(),
      data::DataLoaderOptions().batch_size(10).shuffle(true).seed(43));
  const at::Tensor a0 = order_of(a, 0);
  CHECK(std::get<0>(a0.sort()).equal(torch::arange(100)));  // a permutation
  CHECK(order_of(a, 1).equal(order_of(b, 1)));
  CHECK_FALSE(order_of(a, 0).equal(order_of(a, 1)));
  CHECK_FALSE(order_of(a, 0).equal(order_of(other_seed, 0)));
  // A loader restored from another's state_dict sees the same batches (resume).
  data::TensorDataLoader restored(torch::arange(100), at::Tensor(),
                                  data::DataLoaderOptions().batch_size(10).shuffle(true));
  restored.load_state_dict(a.state_dict());
  CHECK(order_of(restored, 3).equal(order_of(a, 3)));
  // Random access: batch 5 of epoch 2 does not depend on having read batches 0-4.
  a.set_epoch(2);
  b.set_epoch(2);
  for (int i = 0; i < 5; ++i) b.batch(i);
  CHECK(a.batch(5).data.equal(b.batch(5).data));
}

TEST_CASE("Without a seed the order follows LibTorch's generator (and so Trainer's seed)",
          "[data][loader]") {
  torch::manual_seed(7);
  data::TensorDataLoader a(torch::arange(50), at::Tensor(),
                           data::DataLoaderOptions().batch_size(5).shuffle(true));
  torch::manual_seed(7);
  data::TensorDataLoader b(torch::arange(50), at::Tensor(),
                           data::DataLoaderOptions().batch_size(5).shuffle(true));
  CHECK(a.seed() == b.seed());
  CHECK(order_of(a, 0).equal(order_of(b, 0)));
}

TEST_CASE("TensorDataLoader refuses bad inputs with the reason", "[data][loader]") {
  CHECK_THROWS_WITH(data::TensorDataLoader(torch::arange(10), torch::arange(9),
                                           data::DataLoaderOptions().batch_size(2)),
                    Catch::Contains("`targets` has 9 samples but `inputs` has 10"));
  CHECK_THROWS_WITH(data::TensorDataLoader(torch::arange(10), at::Tensor(),
                                           data::DataLoaderOptions().batch_size(0)),
                    Catch::Contains("batch_size must be >= 1"));
  data::TensorDataLoader loader(torch::arange(10), at::Tensor(),
                                data::DataLoaderOptions().batch_size(4));
  CHECK_THROWS_AS(loader.batch(3), std::out_of_range);
}
