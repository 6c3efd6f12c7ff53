// Checkpoints under a data-parallel strategy, on one process: a strategy that plays rank 0 of 2
// and makes up rank 1's part of each collective. (tests/distributed/ddp_test.cpp runs two real
// ranks.)

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>

#include "base/errors.h"
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
  explicit SimulatedPeers(int world_size = 2, int rank = 0) {
    environment_.world_size = world_size;
    environment_.local_world_size = world_size;
    environment_.rank = rank;
    environment_.local_rank = rank;
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
    if ((time_out_in && mine->phase == *time_out_in) ||
        (time_out_at_agreement && save_agreements == *time_out_at_agreement)) {
      // What DDPStrategy raises where the peers did not come within the timeout; no word of
      // Gloo's "Timed out" in it, as on the rank whose peer's timer fired first.
      throw distributed::PeerTimedOutError(environment_.rank_message(
          "all-reduce failed after 5 s: Connection closed by peer. Another rank did not reach "
          "this point within the timeout (5 s)"));
    }
    if (!peer_agreement) return;
    const std::vector<double> peer =
        trainbus::detail::encode_save_agreement(peer_agreement(*mine), environment_.world_size);
    for (size_t i = 0; i < values.size(); ++i) values[i] = std::min(values[i], peer[i]);
  }
  std::function<SaveAgreement(SaveAgreement)> peer_agreement;
  /// The agreement of this phase times out (the strategy says so by a PeerTimedOutError).
  std::optional<SavePhase> time_out_in;
  /// The save agreement of this number (1 for the first) times out.
  std::optional<int> time_out_at_agreement;
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

// Saves `path` (synchronously) at the end of batch `batch_idx` of the first epoch.
class SaveAtBatch : public Callback {
 public:
  SaveAtBatch(int64_t batch_idx, std::string path, SaveCheckpointOptions options = {})
      : batch_idx_(batch_idx), path_(std::move(path)), options_(std::move(options)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() == 0 && batch_idx == batch_idx_)
      trainer.save_checkpoint(path_, options_);
  }

 private:
  int64_t batch_idx_;
  std::string path_;
  SaveCheckpointOptions options_;
};

// A fit of one epoch on `strategy` that saves dir/saved.ckpt after batch 2 (step 3): its error,
// and whether that was an AnotherRankFailedError (exit 75 in `trainbus fit`).
std::pair<std::string, bool> fit_saving_at_batch_2(const std::shared_ptr<SimulatedPeers>& strategy,
                                                   const TempDir& dir) {
  Trainer trainer(
      trainer_options().max_epochs(1).enable_model_summary(false).num_sanity_val_steps(0).strategy(
          strategy),
      {std::make_shared<SaveAtBatch>(2, dir.file("saved.ckpt"))});
  BoringModule module;
  RandomDataModule data(64, 4);
  try {
    trainer.fit(module, data);
  } catch (const distributed::AnotherRankFailedError& e) {
    return {e.what(), true};
  } catch (const std::exception& e) {
    return {e.what(), false};
  }
  return {};
}

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
  // Another save of the same step and phase (another file name): not the same save, and what
  // the other rank is in can be read back.
  SaveAgreement other_name = ok;
  other_name.name_hash = trainbus::detail::save_name_hash("b.ckpt");
  CHECK(other_name.name_hash != trainbus::detail::save_name_hash("a.ckpt"));
  CHECK_FALSE(reduce({ok, other_name, ok, ok}).has_value());
  {
    std::vector<double> reduced = trainbus::detail::encode_save_agreement(ok, world);
    const std::vector<double> theirs = trainbus::detail::encode_save_agreement(later, world);
    for (size_t i = 0; i < reduced.size(); ++i) reduced[i] = std::min(reduced[i], theirs[i]);
    const auto other = trainbus::detail::other_save(reduced, ok, world);
    REQUIRE(other.has_value());
    CHECK(other->global_step == 13);
    CHECK_FALSE(trainbus::detail::other_save({0.5, 1.0}, ok, world).has_value());
  }
  // Rank 0 still waiting for its writer: agreed, waiting; a failed part wins over the wait.
  SaveAgreement waiting = ok;
  waiting.waiting = true;
  const auto waited = reduce({waiting, ok, ok, ok});
  REQUIRE(waited.has_value());
  CHECK(waited->waiting);
  CHECK(waited->first_failed == world);
  const auto failed_while_waiting = reduce({waiting, ok, failed_3, ok});
  REQUIRE(failed_while_waiting.has_value());
  CHECK_FALSE(failed_while_waiting->waiting);
  CHECK(failed_while_waiting->first_failed == 3);
  // The largest world and step keep the values exact.
  SaveAgreement largest = ok;
  largest.global_step = (int64_t{1} << 40) - 1;
  largest.name_hash = (int64_t{1} << trainbus::detail::kSaveAgreementNameBits) - 1;
  largest.first_failed = trainbus::detail::kSaveAgreementMaxWorld;
  const auto read_back = trainbus::detail::decode_save_agreement(
      trainbus::detail::encode_save_agreement(largest, trainbus::detail::kSaveAgreementMaxWorld),
      trainbus::detail::kSaveAgreementMaxWorld);
  REQUIRE(read_back.has_value());
  CHECK(read_back->name_hash == largest.name_hash);
  CHECK(read_back->global_step == largest.global_step % (int64_t{1} << 16));
  CHECK(read_back->first_failed == largest.first_failed);
  // Another rank's full step, from the low 16 bits the agreement compares.
  CHECK(trainbus::detail::nearest_step_with_low_bits(70000, 70001 % 65536) == 70001);
  CHECK(trainbus::detail::nearest_step_with_low_bits(70000, 69990 % 65536) == 69990);
  CHECK(trainbus::detail::nearest_step_with_low_bits(65540, 65530) == 65530);
  CHECK(trainbus::detail::nearest_step_with_low_bits(65530, 4) == 65540);
  CHECK(trainbus::detail::nearest_step_with_low_bits(3, 4) == 4);
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
          Contains("is_global_zero()") &&
          Contains("another rank is in a save at another step (4)"));
  CHECK(run.checkpoints().empty());
}

TEST_CASE("under DDP a save agreement that timed out says why: a save on some ranks, a slow write",
          "[checkpoint]") {
  // The strategy tells a timeout by its type (DDPStrategy: PeerTimedOutError), whatever it is.
  // Before the parts are agreed the other ranks are elsewhere: save_checkpoint was not called on
  // every rank. After, on a rank other than 0: rank 0's write is slow (not this rank's failure).
  const SavePhase phase = GENERATE(SavePhase::kPartsReady, SavePhase::kWritten);
  const int rank = GENERATE(0, 1);
  CAPTURE(phase, rank);
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>(2, rank);
  strategy->time_out_in = phase;
  const auto [error, another_rank_failed] = fit_saving_at_batch_2(strategy, dir);
  if (phase == SavePhase::kWritten && rank == 1) {
    CHECK_THAT(error, Contains("rank 1 of 2: rank 0 did not finish writing checkpoint") &&
                          Contains("saved.ckpt at step 3 within the timeout") &&
                          Contains("--ddp-timeout"));
    CHECK(another_rank_failed);
  } else {
    CHECK_THAT(error,
               Contains("of 2: a checkpoint save was called on some ranks only, or a rank hangs") &&
                   Contains("saved.ckpt at step 3") && Contains("save_checkpoint is a collective"));
    CHECK_FALSE(another_rank_failed);
  }
}

TEST_CASE("under DDP save_checkpoint agrees on a fixed name, or on SaveCheckpointOptions's name",
          "[checkpoint]") {
  // Rank 1 saves under another file name (a timestamp, a hostname in it): by default the same
  // save, and rank 0's file is written; with an agreement_name of rank 0's own, a mismatch.
  const bool strict = GENERATE(false, true);
  CAPTURE(strict);
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  strategy->peer_agreement = [](SaveAgreement agreement) {
    agreement.name_hash = trainbus::detail::save_name_hash(
        "save_checkpoint");  // what rank 1's trainer.save_checkpoint("rank1-....ckpt") sends
    return agreement;
  };
  Trainer trainer(
      trainer_options().max_epochs(1).enable_model_summary(false).num_sanity_val_steps(0).strategy(
          strategy),
      {std::make_shared<SaveAtBatch>(
          2, dir.file("rank0-0800.ckpt"),
          SaveCheckpointOptions().agreement_name(strict ? "rank0-0800.ckpt" : ""))});
  BoringModule module;
  RandomDataModule data(64, 4);
  std::string error;
  try {
    trainer.fit(module, data);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (strict) {
    CHECK_THAT(error, Contains("another rank saves another checkpoint at this step") &&
                          Contains("rank0-0800.ckpt at step 3"));
    CHECK_FALSE(std::filesystem::exists(dir.file("rank0-0800.ckpt")));
  } else {
    CHECK(error.empty());
    CHECK(std::filesystem::exists(dir.file("rank0-0800.ckpt")));
  }
}

TEST_CASE("a world too large for the save agreement is refused when the Trainer is made",
          "[checkpoint]") {
  const int largest = static_cast<int>(trainbus::detail::kSaveAgreementMaxWorld);
  CHECK_NOTHROW(Trainer(trainer_options().strategy(std::make_shared<SimulatedPeers>(largest))));
  CHECK_THROWS_MATCHES(
      Trainer(trainer_options().strategy(std::make_shared<SimulatedPeers>(largest + 1))),
      MisconfigurationError,
      Catch::Message("trainbus agrees checkpoint saves across at most 65534 ranks; this job has "
                     "65535: run fewer ranks (--nnodes x --nproc-per-node)"));
}

TEST_CASE("under DDP a timeout after a round of the agreement blames rank 0, not a one-rank save",
          "[checkpoint]") {
  // Rank 0 said in the first round that it waits for its writer: every rank is in this save.
  // The second round times out: rank 0 stopped coming back (its writer hangs or it died).
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>(2, /*rank=*/1);
  strategy->peer_agreement = [](SaveAgreement agreement) {
    agreement.waiting = true;
    return agreement;
  };
  strategy->time_out_at_agreement = 2;
  const auto [error, another_rank_failed] = fit_saving_at_batch_2(strategy, dir);
  CHECK_THAT(error, Contains("rank 1 of 2: rank 0 stopped answering the agreement of") &&
                        Contains("saved.ckpt at step 3 while waiting for its writer") &&
                        !Contains("some ranks only"));
  CHECK(another_rank_failed);
  CHECK(strategy->save_agreements == 2);
}

namespace {

// At step 2 an asynchronous save (slow.ckpt) that rank 0's writer finishes only once `release`
// is set; at step 3 a synchronous one (after.ckpt), which must wait for it.
class SaveBehindGatedWrite : public Callback {
 public:
  SaveBehindGatedWrite(std::string dir, std::shared_future<void> release)
      : dir_(std::move(dir)), release_(std::move(release)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() != 0) return;
    if (batch_idx == 1) {
      CheckpointRequest request;
      request.path = dir_ + "/slow.ckpt";
      // Bounded: without agreement rounds nobody releases it, and the test fails instead of
      // hanging (the promise outlives the Trainer, whose end waits for this write).
      request.after_commit = [release = release_](const std::string&) {
        if (release.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
          throw std::runtime_error("slow.ckpt never released: no agreement rounds");
      };
      trainer.checkpoints().submit(std::move(request));
    } else if (batch_idx == 2) {
      trainer.save_checkpoint(dir_ + "/after.ckpt");
    }
  }

 private:
  std::string dir_;
  std::shared_future<void> release_;
};

}  // namespace

TEST_CASE("under DDP a save that waits for rank 0's writer agrees in rounds until it is done",
          "[checkpoint]") {
  // Rank 0 says in each round that it still waits (the peers then come again), instead of
  // keeping them in one collective for as long as its disk takes.
  const bool peer_fails = GENERATE(false, true);
  CAPTURE(peer_fails);
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  std::promise<void> release;
  int waiting_rounds = 0;
  strategy->peer_agreement = [&](SaveAgreement agreement) {
    if (agreement.waiting && ++waiting_rounds == 3) {
      release.set_value();
      if (peer_fails) agreement.first_failed = 1;  // ends the rounds at once
    }
    agreement.waiting = false;
    return agreement;
  };
  Trainer trainer(
      trainer_options().max_epochs(1).enable_model_summary(false).num_sanity_val_steps(0).strategy(
          strategy),
      {std::make_shared<SaveBehindGatedWrite>(dir.path().string(), release.get_future().share())});
  BoringModule module;
  RandomDataModule data(64, 4);
  std::string error;
  try {
    trainer.fit(module, data);
  } catch (const std::exception& e) {
    error = e.what();
  }
  // The rounds released the write (else it failed after 10 s, saying so).
  CHECK_THAT(error, !Contains("never released"));
  CHECK(waiting_rounds >= 3);
  CHECK(std::filesystem::exists(dir.file("slow.ckpt")));
  if (peer_fails) {
    CHECK_THAT(error,
               Contains("rank 1's part of the save of checkpoint") && Contains("after.ckpt"));
    CHECK(waiting_rounds == 3);
    CHECK_FALSE(std::filesystem::exists(dir.file("after.ckpt")));
  } else {
    CHECK(error.empty());
    CHECK(std::filesystem::exists(dir.file("after.ckpt")));
  }
}

TEST_CASE("under DDP a save names its checkpoint in the agreement: another file name does not pair",
          "[checkpoint]") {
  SavingFit run(/*async=*/false);
  run.strategy->peer_agreement = [](SaveAgreement agreement) {
    agreement.name_hash = trainbus::detail::save_name_hash("another.ckpt");
    return agreement;
  };
  const std::string error = run.fit();
  CHECK_THAT(error, Contains("rank 0 of 2: a checkpoint save was called on some ranks only") &&
                        Contains("step=3.ckpt at step 3") &&
                        Contains("another rank saves another checkpoint at this step") &&
                        Contains("save_checkpoint is a collective"));
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
