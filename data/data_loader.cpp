#include "data/data_loader.h"

#include <algorithm>
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>

#include "base/errors.h"

namespace trainbus::data {
namespace {

uint64_t draw_seed_from_default_generator() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get<at::CPUGeneratorImpl>()->random64();
}

// splitmix64: decorrelates the per-epoch seeds derived from one base seed.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

TensorDataLoader::TensorDataLoader(at::Tensor inputs, at::Tensor targets, DataLoaderOptions options)
    : options_(options) {
  TRAINBUS_CHECK(
      inputs.defined() && inputs.dim() >= 1,
      "TensorDataLoader: `inputs` must be a tensor whose first dimension indexes samples");
  TRAINBUS_CHECK(!targets.defined() || (targets.dim() >= 1 && targets.size(0) == inputs.size(0)),
                 "TensorDataLoader: `targets` has ", targets.defined() ? targets.size(0) : 0,
                 " samples but `inputs` has ", inputs.size(0), "; they must match");
  num_samples_ = inputs.size(0);
  samples_ = Batch(std::move(inputs), std::move(targets));
  init();
}

TensorDataLoader::TensorDataLoader(Batch samples, DataLoaderOptions options)
    : samples_(std::move(samples)), options_(options) {
  const auto items = samples_.items();
  TRAINBUS_CHECK(!items.empty(),
                 "TensorDataLoader: the batch of samples has no tensors; give at least one, e.g. "
                 "{{\"image\", images}, {\"label\", labels}}");
  for (const auto& [name, tensor] : items) {
    TRAINBUS_CHECK(tensor.dim() >= 1, "TensorDataLoader: `", name,
                   "` is a scalar; every tensor's first dimension must index the samples");
    TRAINBUS_CHECK(tensor.size(0) == items.front().second.size(0), "TensorDataLoader: `", name,
                   "` has ", tensor.size(0), " samples but `", items.front().first, "` has ",
                   items.front().second.size(0), "; they must match");
  }
  num_samples_ = items.front().second.size(0);
  init();
}

void TensorDataLoader::init() {
  TRAINBUS_CHECK(options_.batch_size() >= 1, "TensorDataLoader: batch_size must be >= 1, got ",
                 options_.batch_size());
  seed_ = options_.seed() ? *options_.seed() : draw_seed_from_default_generator();
  set_epoch(0);
}

void DataLoader::set_distributed(int64_t num_replicas, int64_t rank,
                                 const std::function<int64_t(int64_t)>& from_rank_zero) {
  (void)from_rank_zero;
  TRAINBUS_CHECK(num_replicas == 1, "data-parallel training splits every loader across the ",
                 num_replicas, " ranks (this is rank ", rank,
                 "), but this DataLoader cannot be split: override DataLoader::set_distributed "
                 "(see TensorDataLoader's), or give it an empty body if the loader already gives "
                 "each rank its own data");
}

int64_t TensorDataLoader::rank_samples() const {
  const int64_t n = num_samples_;
  if (num_replicas_ == 1) return n;
  return options_.distributed_drop_last() ? n / num_replicas_
                                          : (n + num_replicas_ - 1) / num_replicas_;
}

int64_t TensorDataLoader::num_batches() const {
  const int64_t n = rank_samples();
  const int64_t b = options_.batch_size();
  return options_.drop_last() ? n / b : (n + b - 1) / b;
}

void TensorDataLoader::set_epoch(int64_t epoch) {
  epoch_ = epoch;
  const int64_t n = num_samples_;
  const auto long_options = at::TensorOptions().dtype(at::kLong);
  if (options_.shuffle()) {
    auto generator = at::detail::createCPUGenerator(mix(seed_ ^ mix(static_cast<uint64_t>(epoch))));
    order_ = at::randperm(n, generator, long_options);
  } else {
    order_ = at::Tensor();
  }
  if (num_replicas_ == 1 || n == 0) return;
  // As DistributedSampler: pad with the order's start to a multiple of the ranks (drop_last
  // false) or cut its tail off (true), then take every num_replicas-th sample from this rank's
  // index on.
  at::Tensor order = order_.defined() ? order_ : at::arange(n, long_options);
  const int64_t total = rank_samples() * num_replicas_;
  if (total < n) order = order.slice(0, 0, total);
  while (order.size(0) < total)
    order = at::cat({order, order.slice(0, 0, std::min(n, total - order.size(0)))});
  order_ = order.slice(0, rank_, total, num_replicas_).contiguous();
}

void TensorDataLoader::set_distributed(int64_t num_replicas, int64_t rank,
                                       const std::function<int64_t(int64_t)>& from_rank_zero) {
  TRAINBUS_CHECK(num_replicas >= 1 && rank >= 0 && rank < num_replicas,
                 "TensorDataLoader::set_distributed: rank ", rank, " is not in [0, ", num_replicas,
                 ")");
  num_replicas_ = num_replicas;
  rank_ = rank;
  // Every rank must shuffle alike, also when each drew its own seed.
  if (num_replicas > 1) seed_ = static_cast<uint64_t>(from_rank_zero(static_cast<int64_t>(seed_)));
  set_epoch(epoch_);
}

StateDict TensorDataLoader::state_dict() const {
  StateDict state;
  state.insert("seed", static_cast<int64_t>(seed_));
  return state;
}

void TensorDataLoader::load_state_dict(const StateDict& state) {
  TRAINBUS_CHECK(state.contains("seed"),
                 "TensorDataLoader::load_state_dict: the state has no `seed`");
  seed_ = static_cast<uint64_t>(state.at("seed").toInt());
  set_epoch(epoch_);
}

Batch TensorDataLoader::batch(int64_t index) {
  TRAINBUS_CHECK_AS(std::out_of_range, index >= 0 && index < num_batches(),
                    "TensorDataLoader::batch: index ", index, " out of range [0, ", num_batches(),
                    ")");
  const int64_t begin = index * options_.batch_size();
  const int64_t end = std::min(begin + options_.batch_size(), rank_samples());
  const at::Tensor rows = order_.defined() ? order_.slice(0, begin, end) : at::Tensor();
  Batch batch;
  samples_.for_each([&](std::string_view name, const at::Tensor& tensor) {
    batch.set(std::string(name),
              rows.defined() ? tensor.index_select(0, rows) : tensor.slice(0, begin, end));
  });
  return batch;
}

}  // namespace trainbus::data
