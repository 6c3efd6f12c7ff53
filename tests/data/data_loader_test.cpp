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

TEST_CASE("set_distributed splits every epoch as DistributedSampler: padded, strided, disjoint",
          "[data][loader][distributed]") {
  const auto from_rank_zero = [](int64_t) { return int64_t{42}; };  // rank 0's seed, as a broadcast
  SECTION("unshuffled: rank r takes samples r, r+W, ...; the order's start pads the last") {
    data::TensorDataLoader rank1(torch::arange(10), at::Tensor(),
                                 data::DataLoaderOptions().batch_size(2));
    rank1.set_distributed(3, 1, from_rank_zero);
    REQUIRE(rank1.num_batches() == 2);  // ceil(10 / 3) = 4 samples each
    CHECK(order_of(rank1, 0).equal(torch::tensor({1, 4, 7, 0})));
    data::TensorDataLoader rank0(torch::arange(10), at::Tensor(),
                                 data::DataLoaderOptions().batch_size(2));
    rank0.set_distributed(3, 0, from_rank_zero);
    CHECK(order_of(rank0, 0).equal(torch::tensor({0, 3, 6, 9})));
  }
  SECTION("shuffled: the ranks together see the whole permutation of the epoch, once") {
    std::vector<at::Tensor> parts;
    for (int64_t rank = 0; rank < 4; ++rank) {
      // Each rank drew its own seed; rank 0's wins.
      data::TensorDataLoader loader(
          torch::arange(100), at::Tensor(),
          data::DataLoaderOptions().batch_size(5).shuffle(true).seed(100 + rank));
      loader.set_distributed(4, rank, from_rank_zero);
      CHECK(loader.num_batches() == 5);
      CHECK(loader.seed() == 42);
      parts.push_back(order_of(loader, 3));
    }
    const at::Tensor all = torch::cat(parts);
    CHECK(std::get<0>(all.sort()).equal(torch::arange(100)));
    // One process with the same seed: its epoch is the ranks' samples interleaved.
    data::TensorDataLoader single(torch::arange(100), at::Tensor(),
                                  data::DataLoaderOptions().batch_size(20).shuffle(true).seed(42));
    CHECK(order_of(single, 3).equal(torch::stack(parts, 1).flatten()));
  }
}

TEST_CASE("A loader that cannot be split says how to make it splittable",
          "[data][loader][distributed]") {
  struct Fixed : data::DataLoader {
    int64_t num_batches() const override { return 1; }
    int64_t num_samples() const override { return 1; }
    data::Batch batch(int64_t) override { return data::Batch(torch::zeros({1}), at::Tensor()); }
  } fixed;
  CHECK_NOTHROW(fixed.set_distributed(1, 0, [](int64_t v) { return v; }));
  CHECK_THROWS_WITH(fixed.set_distributed(2, 1, [](int64_t v) { return v; }),
                    Catch::Contains("override DataLoader::set_distributed"));
}

TEST_CASE("distributed_drop_last: every rank floor(N / W) samples, the epoch's tail dropped",
          "[data][loader][distributed]") {
  const auto from_rank_zero = [](int64_t) { return int64_t{42}; };
  const auto split = [&](int64_t samples, int64_t world, int64_t rank, bool drop, bool shuffle) {
    auto loader = std::make_shared<data::TensorDataLoader>(
        torch::arange(samples), at::Tensor(),
        data::DataLoaderOptions().batch_size(2).shuffle(shuffle).distributed_drop_last(drop));
    loader->set_distributed(world, rank, from_rank_zero);
    return loader;
  };
  SECTION("unshuffled: pad repeats the start, drop leaves the last N mod W out") {
    // 10 samples on 3 ranks: padded, 4 each (sample 0 and 1 twice); dropped, 3 each (9 unseen).
    CHECK(order_of(*split(10, 3, 0, false, false), 0).equal(torch::tensor({0, 3, 6, 9})));
    CHECK(order_of(*split(10, 3, 2, false, false), 0).equal(torch::tensor({2, 5, 8, 1})));
    for (int64_t rank = 0; rank < 3; ++rank) {
      auto dropping = split(10, 3, rank, true, false);
      CHECK(dropping->num_batches() == 2);  // 3 samples in batches of 2
      CHECK(order_of(*dropping, 0).equal(torch::tensor({rank, rank + 3, rank + 6})));
    }
    // Divisible: drop and pad split alike.
    CHECK(order_of(*split(9, 3, 1, true, false), 0)
              .equal(order_of(*split(9, 3, 1, false, false), 0)));
  }
  SECTION("shuffled: from the seed and the epoch; each sample at most once, N - N mod W in all") {
    for (int64_t epoch : {0, 1, 5}) {
      std::vector<at::Tensor> parts;
      for (int64_t rank = 0; rank < 4; ++rank) {
        auto loader = split(103, 4, rank, true, true);
        CHECK(loader->num_batches() == 13);  // 25 samples each, the last batch short
        parts.push_back(order_of(*loader, epoch));
        CHECK(parts.back().size(0) == 25);
      }
      const at::Tensor all = torch::cat(parts);
      CHECK(std::get<0>(torch::_unique(all)).size(0) == 100);  // none twice
      // The ranks' samples are one process's epoch (same seed) cut to 100, interleaved.
      data::TensorDataLoader single(
          torch::arange(103), at::Tensor(),
          data::DataLoaderOptions().batch_size(103).shuffle(true).seed(42));
      CHECK(order_of(single, epoch).slice(0, 0, 100).equal(torch::stack(parts, 1).flatten()));
      // Another epoch, another order (and other samples left out).
      if (epoch > 0) {
        auto epoch0 = split(103, 4, 0, true, true);
        CHECK_FALSE(order_of(*epoch0, 0).equal(parts[0]));
      }
    }
  }
  SECTION("fewer samples than ranks: dropping leaves every rank without a batch") {
    auto loader = split(2, 3, 2, true, false);
    CHECK(loader->num_batches() == 0);
    CHECK(split(2, 3, 2, false, false)->num_batches() == 1);  // padded: sample 0 again
  }
}
