// Checkpoints under a data-parallel strategy, on one process: a strategy that plays rank 0 of 2
// and makes up rank 1's part of each collective. (tests/distributed/ddp_test.cpp runs two real
// ranks.)

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>

#include "callbacks/model_checkpoint.h"
#include "core/detail/save_agreement.h"
#include "core/trainer.h"
#include "data/data_loader.h"
#include "distributed/strategy.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;
using trainbus::detail::SaveAgreement;
using trainbus::detail::SavePhase;

namespace {

// Rank 0 of `world_size` whose peers do as it does, unless `peer_agreement` says what they put
// into a save agreement (an all-reduce of two values with MIN). Notes every all-reduce's size.
class SimulatedPeers final : public distributed::Strategy {
 public:
  explicit SimulatedPeers(int world_size = 2) {
    environment_.world_size = world_size;
    environment_.local_world_size = world_size;
  }
  std::string_view name() const noexcept override { return "simulated_peers"; }
  const distributed::DistributedEnvironment& environment() const noexcept override {
    return environment_;
  }
  void all_reduce(std::vector<double>& values, distributed::ReduceOp op) override {
    ++all_reduces;
    if (op == distributed::ReduceOp::kSum) {
      for (double& value : values) value *= environment_.world_size;
    }
    const std::optional<SaveAgreement> mine =
        op == distributed::ReduceOp::kMin
            ? trainbus::detail::decode_save_agreement(values, environment_.world_size)
            : std::nullopt;
    if (!mine) return;
    ++save_agreements;
    if (!peer_agreement) return;
    const std::vector<double> peer =
        trainbus::detail::encode_save_agreement(peer_agreement(*mine), environment_.world_size);
    for (size_t i = 0; i < values.size(); ++i) values[i] = std::min(values[i], peer[i]);
  }
  std::function<SaveAgreement(SaveAgreement)> peer_agreement;
  int all_reduces = 0;
  int save_agreements = 0;

 private:
  distributed::DistributedEnvironment environment_;
};

// One epoch of 8 batches on rank 0 (64 samples, 2 ranks, batches of 4), a top-1 checkpoint
// every 3 steps (step=3, then step=6 evicting it).
struct SavingFit {
  explicit SavingFit(bool async, int world_size = 2)
      : strategy(std::make_shared<SimulatedPeers>(world_size)),
        trainer(trainer_options()
                    .max_epochs(1)
                    .enable_checkpointing(true)
                    .enable_model_summary(false)
                    .num_sanity_val_steps(0)
                    .default_root_dir(dir.path().string())
                    .strategy(strategy),
                {std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions()
                                                                  .dirpath(dir.file("checkpoints"))
                                                                  .filename("{step}")
                                                                  .every_n_train_steps(3)
                                                                  .async(async))}) {}
  std::string fit() {
    BoringModule module;
    RandomDataModule data(64, 4);
    try {
      trainer.fit(module, data);
    } catch (const std::exception& error) {
      return error.what();
    }
    return {};
  }
  std::set<std::string> checkpoints() const {
    const std::string checkpoints = dir.file("checkpoints");
    return std::filesystem::exists(checkpoints) ? names_in(checkpoints) : std::set<std::string>{};
  }
  TempDir dir;
  std::shared_ptr<SimulatedPeers> strategy;
  Trainer trainer;
};

}  // namespace

TEST_CASE("a save agreement reads back the lowest failed rank, and no agreement across saves",
          "[checkpoint]") {
  const int64_t world = 4;
  auto reduce = [&](const std::vector<SaveAgreement>& ranks) {
    std::vector<double> reduced = trainbus::detail::encode_save_agreement(ranks.front(), world);
    for (const SaveAgreement& rank : ranks) {
      const std::vector<double> values = trainbus::detail::encode_save_agreement(rank, world);
      for (size_t i = 0; i < reduced.size(); ++i) reduced[i] = std::min(reduced[i], values[i]);
    }
    return trainbus::detail::decode_save_agreement(reduced, world);
  };
  const SaveAgreement ok{SavePhase::kPartsReady, 12, world};
  SaveAgreement failed_2 = ok, failed_3 = ok;
  failed_2.first_failed = 2;
  failed_3.first_failed = 3;
  const auto all_well = reduce({ok, ok, ok, ok});
  REQUIRE(all_well.has_value());
  CHECK(all_well->phase == SavePhase::kPartsReady);
  CHECK(all_well->global_step == 12);
  CHECK(all_well->first_failed == world);
  const auto two_failed = reduce({ok, failed_3, failed_2, ok});
  REQUIRE(two_failed.has_value());
  CHECK(two_failed->first_failed == 2);
  // Another step or phase on one rank, failed or not: not the same save.
  SaveAgreement later = ok, written = failed_2;
  later.global_step = 13;
  written.phase = SavePhase::kWritten;
  CHECK_FALSE(reduce({ok, later, ok, ok}).has_value());
  CHECK_FALSE(reduce({written, ok, ok, ok}).has_value());
  // Paired with another collective of two values (votes, metric sums): no agreement.
  CHECK_FALSE(trainbus::detail::decode_save_agreement({0.0, 1.0}, world).has_value());
  CHECK_FALSE(trainbus::detail::decode_save_agreement({1.0, 0.5}, world).has_value());
  CHECK_FALSE(trainbus::detail::decode_save_agreement({3.0}, world).has_value());
}

TEST_CASE("under DDP a save that fails on another rank is neither written nor evicts the older one",
          "[checkpoint]") {
  const bool async = GENERATE(true, false);
  CAPTURE(async);
  SavingFit run(async);
  run.strategy->peer_agreement = [](SaveAgreement agreement) {
    if (agreement.global_step == 6) agreement.first_failed = 1;  // rank 1's hook failed
    return agreement;
  };
  const std::string error = run.fit();
  CHECK_THAT(error, Contains("rank 0 of 2: rank 1's part of the save of checkpoint") &&
                        Contains("step=6.ckpt"));
  CHECK(run.checkpoints() == std::set<std::string>{"step=3.ckpt"});
  // One agreement before anything is written; a synchronous save agrees again after its write.
  CHECK(run.strategy->save_agreements == (async ? 2 : 3));
}

TEST_CASE("under DDP a save agrees once (asynchronous) or twice (synchronous), alone: none",
          "[checkpoint]") {
  const bool async = GENERATE(true, false);
  CAPTURE(async);
  SavingFit ddp(async);
  CHECK(ddp.fit().empty());
  CHECK(ddp.checkpoints() == std::set<std::string>{"step=6.ckpt"});
  CHECK(ddp.strategy->save_agreements == (async ? 2 : 4));

  SavingFit alone(async, /*world_size=*/1);
  CHECK(alone.fit().empty());
  CHECK(alone.checkpoints() == std::set<std::string>{"step=15.ckpt"});  // 16 batches alone
  CHECK(alone.strategy->all_reduces == 0);
}

TEST_CASE("under DDP ranks in different saves fail with an error that says to save on every rank",
          "[checkpoint]") {
  const bool async = GENERATE(true, false);
  CAPTURE(async);
  SavingFit run(async);
  run.strategy->peer_agreement = [](SaveAgreement agreement) {
    agreement.global_step += 1;  // rank 1 saves a step later
    return agreement;
  };
  const std::string error = run.fit();
  CHECK_THAT(
      error,
      Contains(
          "rank 0 of 2: a checkpoint save was called on some ranks only or at different steps") &&
          Contains("step=3.ckpt at step 3") && Contains("save_checkpoint is a collective") &&
          Contains("is_global_zero()"));
  CHECK(run.checkpoints().empty());
}

namespace {

constexpr int64_t kOddSamples = 33;

// kOddSamples samples in batches of `batch_size`, shuffled from a fixed seed; the two drop_last
// options as given.
class OddData : public DataModule {
 public:
  OddData(int64_t batch_size, bool drop_last, bool distributed_drop_last)
      : options_(data::DataLoaderOptions()
                     .batch_size(batch_size)
                     .shuffle(true)
                     .seed(3)
                     .drop_last(drop_last)
                     .distributed_drop_last(distributed_drop_last)) {}
  std::shared_ptr<DataLoader> train_dataloader() override {
    const at::Tensor inputs = at::randn({kOddSamples, 32}, at::detail::createCPUGenerator(9));
    return std::make_shared<data::TensorDataLoader>(inputs, at::ones({kOddSamples, 2}), options_);
  }

 private:
  data::DataLoaderOptions options_;
};

// Saves `path` (synchronously) after the second batch of the first epoch.
class SaveAfterSecondBatch : public Callback {
 public:
  explicit SaveAfterSecondBatch(std::string path) : path_(std::move(path)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() == 0 && batch_idx == 1) trainer.save_checkpoint(path_);
  }

 private:
  std::string path_;
};

// A rank's batches an epoch, by DistributedSampler's arithmetic: ceil(N / W) samples (padded), or
// floor(N / W) with its drop_last; one process takes all N. Then the batch-level drop_last.
int64_t batches_per_rank(int64_t ranks, int64_t batch_size, bool drop_last,
                         bool distributed_drop_last) {
  const int64_t samples = ranks == 1              ? kOddSamples
                          : distributed_drop_last ? kOddSamples / ranks
                                                  : (kOddSamples + ranks - 1) / ranks;
  return drop_last ? samples / batch_size : (samples + batch_size - 1) / batch_size;
}

}  // namespace

TEST_CASE("a mid-epoch checkpoint resumes on another world size only where the epoch divides alike",
          "[checkpoint]") {
  // 33 samples: 2 ranks with batches of 4 against 1 process with batches of 8 (8 samples a step
  // either way). DistributedSampler gives each rank 17 (padded: 5 batches) or with its drop_last
  // 16 (4 batches); one process takes 5 batches of the 33, or 4 with the batch-level drop_last. A
  // position inside the epoch means the same samples where both have as many batches.
  const bool two_ranks_save = GENERATE(true, false);  // else one process saves, two resume
  const bool distributed_drop_last = GENERATE(false, true);
  const bool drop_last = GENERATE(false, true);
  CAPTURE(two_ranks_save, distributed_drop_last, drop_last);
  const int64_t two_ranks_batches = batches_per_rank(2, 4, false, distributed_drop_last);
  const int64_t one_process_batches = batches_per_rank(1, 8, drop_last, false);
  auto trainer_for = [](bool two_ranks, std::vector<std::shared_ptr<Callback>> callbacks) {
    TrainerOptions options =
        trainer_options().max_epochs(1).enable_model_summary(false).num_sanity_val_steps(0);
    if (two_ranks) options.strategy(std::make_shared<SimulatedPeers>());
    return std::make_unique<Trainer>(options, std::move(callbacks));
  };
  auto data_for = [&](bool two_ranks) {
    return two_ranks ? OddData(4, false, distributed_drop_last) : OddData(8, drop_last, false);
  };
  TempDir dir;
  const std::string checkpoint = dir.file("mid");
  {
    BoringModule module;
    OddData data = data_for(two_ranks_save);
    auto saver = trainer_for(two_ranks_save, {std::make_shared<SaveAfterSecondBatch>(checkpoint)});
    saver->fit(module, data);
    CHECK(saver->num_training_batches() ==
          (two_ranks_save ? two_ranks_batches : one_process_batches));
  }
  BoringModule module;
  OddData data = data_for(!two_ranks_save);
  auto resumer = trainer_for(!two_ranks_save, {});
  std::string error;
  try {
    resumer->fit(module, data, FitOptions().ckpt_path(checkpoint));
  } catch (const CheckpointError& e) {
    error = e.what();
  }
  CHECK(resumer->num_training_batches() ==
        (two_ranks_save ? one_process_batches : two_ranks_batches));
  if (two_ranks_batches == one_process_batches) {
    CHECK(error.empty());
    CHECK(resumer->global_step() == two_ranks_batches);
  } else {
    CHECK_THAT(error, Contains(two_ranks_save ? "saved inside an epoch by 2 ranks with "
                                              : "saved inside an epoch by 1 process with ") &&
                          Contains("batches per epoch each (8 samples a step)"));
  }
}
