// The batch size finder: Lightning's power and binsearch searches on a module with a crafted
// capacity (the batch sizes tried and the one found are exact), the CPU memory budget measured
// on a module whose memory grows by 1 MiB a sample, the module and random generator restored
// bit-exact, the data module's batch size set, and bad options refused by name.
#include "tuner/batch_size_scaling.h"

#include <filesystem>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/utils.h>

#include "base/errors.h"
#include "core/trainer.h"
#include "data/batch.h"
#include "tests/support/boring.h"
#include "tests/support/captured_stream.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"
#include "tuner/out_of_memory.h"

using namespace trainbus;
using namespace trainbus::tuner;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// Runs out of memory, as CUDA's caching allocator does (c10::OutOfMemoryError), on any batch
/// larger than `capacity`: a deterministic stand-in for a GPU's memory.
class CapacityModule : public BoringModule {
 public:
  explicit CapacityModule(int64_t capacity) : capacity_(capacity) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    const int64_t size = data::batch_size_of(batch);
    TORCH_CHECK_WITH(OutOfMemoryError, size <= capacity_, "CUDA out of memory. Tried to allocate ",
                     size, " MiB (GPU 0; ", capacity_, " MiB total capacity)");
    return BoringModule::training_step(batch, batch_idx);
  }

 private:
  int64_t capacity_;
};

/// Holds 1 MiB (262144 floats) a sample while its step runs: real CPU allocations the memory
/// budget measures.
class MiBPerSampleModule : public BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    const at::Tensor scratch = torch::ones({data::batch_size_of(batch), 262144});
    return loss(batch) + 0 * scratch.sum();
  }
};

/// Fails with an error that is not about memory once the batch reaches `from`.
class BrokenFromModule : public BoringModule {
 public:
  explicit BrokenFromModule(int64_t from) : from_(from) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    if (data::batch_size_of(batch) >= from_) throw std::runtime_error("a bug in training_step");
    return BoringModule::training_step(batch, batch_idx);
  }

 private:
  int64_t from_;
};

std::vector<int64_t> sizes_tried(const BatchSizeResult& result) {
  std::vector<int64_t> sizes;
  for (const BatchSizeTrial& trial : result.trials) sizes.push_back(trial.batch_size);
  return sizes;
}

BatchSizeResult find_with_capacity(int64_t capacity, const BatchSizeFinderOptions& options,
                                   int64_t samples = 64) {
  CapacityModule module(capacity);
  RandomDataModule data(samples, 1);
  return scale_batch_size(testing::trainer_options().seed(1), module, data, options);
}

}  // namespace

TEST_CASE("scale_batch_size turns Lightning's default callbacks off for its trials",
          "[tuner][batch_size]") {
  // Each trial is a short fit of its own: with a Trainer's defaults it would print a bar and a
  // table and save epoch checkpoints in default_root_dir (Lightning's trials do none of that).
  TempDir root;
  CapacityModule module(1 << 20);
  RandomDataModule data(64, 1);
  CapturedStream out(std::cout);
  CapturedStream err(std::cerr);
  scale_batch_size(TrainerOptions().default_root_dir(root.path().string()).seed(1), module, data,
                   BatchSizeFinderOptions().max_trials(2));
  CHECK(out.text().empty());
  // Only the finder's own lines (Lightning's log.info), no model summary table.
  CHECK_THAT(err.text(), Contains("BatchSizeFinder: batch size 2 fits") &&
                             !Contains("Total params") && !Contains("| Name"));
  CHECK_FALSE(std::filesystem::exists(root.path() / "checkpoints"));
}

TEST_CASE("power doubles until out of memory and keeps the last size that fit",
          "[tuner][batch_size]") {
  // Lightning's _run_power_scaling from init_val 2: 2, 4, 8, 16 fit, 32 does not -> 16.
  const BatchSizeResult result = find_with_capacity(20, BatchSizeFinderOptions());
  CHECK(sizes_tried(result) == std::vector<int64_t>{2, 4, 8, 16, 32});
  CHECK(result.batch_size == 16);  // power applies no margin (Lightning: binsearch only)
  CHECK_FALSE(result.trials.back().fits);
  CHECK_THAT(result.trials.back().error, Contains("CUDA out of memory"));
  CHECK_THAT(result.table(), Contains("largest that fits: 16; batch size: 16"));

  SECTION("max_trials ends the search at the last size tried") {
    CHECK(sizes_tried(find_with_capacity(20, BatchSizeFinderOptions().max_trials(3))) ==
          std::vector<int64_t>{2, 4, 8});
    CHECK(find_with_capacity(20, BatchSizeFinderOptions().max_trials(3)).batch_size == 8);
  }
  SECTION("max_val caps the sizes") {
    const BatchSizeResult capped = find_with_capacity(100, BatchSizeFinderOptions().max_val(12));
    CHECK(sizes_tried(capped) == std::vector<int64_t>{2, 4, 8, 12});
    CHECK(capped.batch_size == 12);
  }
  SECTION("a batch that holds the whole training set is not doubled") {
    const BatchSizeResult whole = find_with_capacity(1000, BatchSizeFinderOptions(), 64);
    CHECK(sizes_tried(whole) == std::vector<int64_t>{2, 4, 8, 16, 32, 64});
    CHECK(whole.batch_size == 64);
  }
  SECTION("a first size that does not fit is halved until one does") {
    const BatchSizeResult halved = find_with_capacity(3, BatchSizeFinderOptions().init_val(8));
    CHECK(sizes_tried(halved) == std::vector<int64_t>{8, 4, 2, 4});
    CHECK(halved.batch_size == 2);
  }
}

TEST_CASE("binsearch doubles, then bisects between the last success and the failure",
          "[tuner][batch_size]") {
  // Lightning's _run_binary_scaling: 2..16 fit, 32 fails; 24 fails, 20 fits, 22 and 21 fail.
  const auto options = BatchSizeFinderOptions().mode(BatchSizeMode::kBinsearch);
  const BatchSizeResult exact = find_with_capacity(20, BatchSizeFinderOptions(options).margin(0));
  CHECK(sizes_tried(exact) == std::vector<int64_t>{2, 4, 8, 16, 32, 24, 20, 22, 21});
  CHECK(exact.batch_size == 20);
  // Lightning's margin default 0.05: max(1, int(20 * 0.95)) = 19.
  const BatchSizeResult with_margin = find_with_capacity(20, options);
  CHECK(with_margin.largest_fitting == 20);
  CHECK(with_margin.batch_size == 19);
  // A first size that does not fit: bisected down from it (Lightning would return 1 untried).
  const BatchSizeResult down =
      find_with_capacity(3, BatchSizeFinderOptions(options).margin(0).init_val(8));
  CHECK(sizes_tried(down) == std::vector<int64_t>{8, 4, 2, 3});
  CHECK(down.batch_size == 3);
}

TEST_CASE("scale_batch_size restores the module and the random generator and sets the batch size",
          "[tuner][batch_size]") {
  torch::manual_seed(3);
  CapacityModule module(20);
  StateDict hparams;
  hparams.insert("batch_size", int64_t{1});
  module.save_hyperparameters(hparams);
  const at::Tensor weight = module.layer->weight.detach().clone();
  const at::Tensor bias = module.layer->bias.detach().clone();
  RandomDataModule data(64, 1);
  const at::Tensor expected_draw = [] {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    const at::Tensor state = generator.get_state();
    at::Tensor draw = torch::rand({4});
    generator.set_state(state);
    return draw;
  }();

  const BatchSizeResult result =
      scale_batch_size(testing::trainer_options().seed(9), module, data,
                       BatchSizeFinderOptions().mode(BatchSizeMode::kBinsearch));
  REQUIRE(result.batch_size == 19);
  // Trials trained the weights (SGD, lr 0.1); they are back bit for bit, without gradients.
  CHECK(torch::equal(module.layer->weight.detach(), weight));
  CHECK(torch::equal(module.layer->bias.detach(), bias));
  CHECK_FALSE(module.layer->weight.grad().defined());
  CHECK(torch::equal(torch::rand({4}), expected_draw));  // the seed 9 of the trials undone
  CHECK(data.batch_arg("batch_size") == 19);
  CHECK(module.hparams().at("batch_size").toInt() == 19);  // as Lightning's lightning_setattr
  CHECK_FALSE(module.has_trainer());
}

TEST_CASE("On the CPU the memory budget is the out-of-memory signal", "[tuner][batch_size]") {
  // 1 MiB a sample plus a few KiB (the boring model's activations and gradients): 20 samples fit
  // in 20.5 MiB, 21 do not.
  MiBPerSampleModule module;
  RandomDataModule data(64, 1);
  const BatchSizeResult result =
      scale_batch_size(testing::trainer_options(), module, data,
                       BatchSizeFinderOptions()
                           .mode(BatchSizeMode::kBinsearch)
                           .margin(0)
                           .memory_budget(parse_byte_size("20.5MiB", "memory_budget")));
  CHECK(sizes_tried(result) == std::vector<int64_t>{2, 4, 8, 16, 32, 24, 20, 22, 21});
  CHECK(result.batch_size == 20);
  REQUIRE(result.trials[3].peak_bytes.has_value());
  CHECK(*result.trials[3].peak_bytes >= 16 * 1048576);  // 16 samples: at least 16 MiB measured
  CHECK(*result.trials[3].peak_bytes < 16 * 1048576 + 262144);
  CHECK_THAT(result.trials[4].error, Contains("over the memory budget of 20.5 MiB"));
  CHECK(data.batch_arg("batch_size") == 20);
}

TEST_CASE("scale_batch_size lets an error that is not about memory through, restored",
          "[tuner][batch_size]") {
  BrokenFromModule module(8);
  const at::Tensor weight = module.layer->weight.detach().clone();
  RandomDataModule data(64, 5);
  CHECK_THROWS_WITH(
      scale_batch_size(testing::trainer_options(), module, data, BatchSizeFinderOptions()),
      Contains("a bug in training_step"));
  CHECK(torch::equal(module.layer->weight.detach(), weight));
  CHECK(data.batch_arg("batch_size") == 5);  // the size it had before
}

TEST_CASE("scale_batch_size refuses bad options and data it cannot resize, naming them",
          "[tuner][batch_size]") {
  BoringModule module;
  RandomDataModule data(8, 1);
  const auto refused = [&](const BatchSizeFinderOptions& options) {
    return [&module, &data, options] {
      scale_batch_size(testing::trainer_options(), module, data, options);
    };
  };
  CHECK_THROWS_WITH(refused(BatchSizeFinderOptions().margin(1.0))(),
                    Contains("margin must be in [0, 1)"));
  CHECK_THROWS_WITH(refused(BatchSizeFinderOptions().init_val(0))(),
                    Contains("init_val must be >= 1, got 0"));
  CHECK_THROWS_WITH(refused(BatchSizeFinderOptions().steps_per_trial(0))(),
                    Contains("steps_per_trial must be >= 1"));
  CHECK_THROWS_WITH(refused(BatchSizeFinderOptions().max_trials(0))(),
                    Contains("max_trials must be >= 1"));
  CHECK_THROWS_WITH(refused(BatchSizeFinderOptions().max_val(1))(),
                    Contains("max_val (1) must be >= init_val (2)"));
  CHECK_THROWS_WITH(refused(BatchSizeFinderOptions().memory_budget(0))(),
                    Contains("memory_budget must be a positive number of bytes"));
  CHECK_THROWS_WITH(refused(BatchSizeFinderOptions().batch_arg_name("bs"))(),
                    Contains("field `bs` not found in the data module"));
  CHECK_THROWS_WITH(parse_batch_size_mode("linear"), Contains("expected power or binsearch"));

  data::LoaderDataModule loaders(nullptr);
  CHECK_THROWS_WITH(
      scale_batch_size(testing::trainer_options(), module, loaders, BatchSizeFinderOptions()),
      Contains("LoaderDataModule") && Contains("cannot be resized"));

  CapacityModule nothing_fits(0);
  CHECK_THROWS_WITH(
      scale_batch_size(testing::trainer_options(), nothing_fits, data, BatchSizeFinderOptions()),
      Contains("no batch size fits, the smallest tried (1) ran out of memory"));
  CHECK(data.batch_arg("batch_size") == 1);
}

TEST_CASE("Out of memory is what Lightning's is_oom_error says it is", "[tuner][batch_size]") {
  CHECK(is_out_of_memory(MemoryBudgetExceeded(2048, 1024)));
  CHECK(is_out_of_memory(std::runtime_error("CUDA error: out of memory")));
  CHECK(
      is_out_of_memory(std::runtime_error("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error")));
  CHECK(is_out_of_memory(std::runtime_error(
      "DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes.")));
  CHECK_FALSE(is_out_of_memory(std::runtime_error("index out of range")));
  CHECK_FALSE(is_out_of_memory(std::runtime_error("out of memory")));  // Lightning wants "CUDA"
  CHECK(parse_byte_size("256MiB", "x") == 268435456);
  CHECK(parse_byte_size("1.5GiB", "x") == 1610612736);
  CHECK(parse_byte_size("500MB", "x") == 500000000);
  CHECK(parse_byte_size("4096", "x") == 4096);
  CHECK_THROWS_WITH(parse_byte_size("12 parsecs", "--memory-budget"),
                    Contains("--memory-budget is \"12 parsecs\": expected a positive number"));
  CHECK(format_bytes(1536) == "1.5 KiB");
}

TEST_CASE("The CPU memory meter counts only what was allocated under it", "[tuner][batch_size]") {
  // Gradients of an earlier trial outlive its meter; freed under the next one they must not give
  // it headroom (c10 reports every free of a block its process-wide table knows).
  at::Tensor earlier;
  {
    CpuMemoryMeter first;
    earlier = torch::ones({1 << 18});  // 1 MiB, counted by the first meter
    CHECK(first.live_bytes() >= (1 << 20));
  }
  CpuMemoryMeter second;
  earlier.reset();  // freed under the second meter, allocated before it
  CHECK(second.live_bytes() == 0);
  at::Tensor now = torch::ones({1 << 18});
  CHECK(second.peak_bytes() >= (1 << 20));
  CHECK(second.live_bytes() >= (1 << 20));
}
