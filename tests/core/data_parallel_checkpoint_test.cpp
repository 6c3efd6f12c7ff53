// Checkpoints under a data-parallel strategy, on one process: a strategy that plays rank 0 of 2
// and makes up rank 1's part of each collective. (tests/distributed/ddp_test.cpp runs two real
// ranks.)

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>

#include "base/errors.h"
#include "callbacks/model_checkpoint.h"
#include "checkpoint/format.h"
#include "checkpoint/write_progress.h"
#include "core/detail/save_agreement.h"
#include "core/detail/writer_stall.h"
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
  std::optional<std::chrono::milliseconds> collective_timeout() const noexcept override {
    return timeout;
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
    if (mine->waiting) ++waiting_rounds;
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
  /// What collective_timeout() says (none: rank 0 waits for its writer without a bound).
  std::optional<std::chrono::milliseconds> timeout;
  /// The agreement of this phase times out (the strategy says so by a PeerTimedOutError).
  std::optional<SavePhase> time_out_in;
  /// The save agreement of this number (1 for the first) times out.
  std::optional<int> time_out_at_agreement;
  int all_reduces = 0;
  int save_agreements = 0;  // rounds of save agreements
  int waiting_rounds = 0;   // of those, where rank 0 still waited for its writer

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

// A fit of one epoch (16 batches of 4) on `strategy` with `callback`: its error ("" if none),
// and whether that was an AnotherRankFailedError (exit 75 in `trainbus fit`).
std::pair<std::string, bool> fit_with(const std::shared_ptr<SimulatedPeers>& strategy,
                                      std::shared_ptr<Callback> callback) {
  Trainer trainer(
      trainer_options().max_epochs(1).enable_model_summary(false).num_sanity_val_steps(0).strategy(
          strategy),
      {std::move(callback)});
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

// fit_with a save of dir/saved.ckpt after batch 2 (step 3).
std::pair<std::string, bool> fit_saving_at_batch_2(const std::shared_ptr<SimulatedPeers>& strategy,
                                                   const TempDir& dir) {
  return fit_with(strategy, std::make_shared<SaveAtBatch>(2, dir.file("saved.ckpt")));
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
  // The agreement compares a step's low 16 bits.
  CHECK(trainbus::detail::compared_step(70000) == 70000 % 65536);
  CHECK(trainbus::detail::compared_step(65535) == 65535);
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
  CHECK(run.strategy->save_agreements - run.strategy->waiting_rounds == (async ? 2 : 3));
}

TEST_CASE("under DDP a save agrees once (asynchronous) or twice (synchronous), alone: none",
          "[checkpoint]") {
  const bool async = GENERATE(true, false);
  CAPTURE(async);
  SavingFit ddp(async);
  CHECK(ddp.fit().empty());
  CHECK(ddp.checkpoints() == std::set<std::string>{"step=6.ckpt"});
  CHECK(ddp.strategy->save_agreements - ddp.strategy->waiting_rounds == (async ? 2 : 4));

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
          Contains("another rank is in a save at another step (4, steps are compared modulo "
                   "65536)"));
  CHECK(run.checkpoints().empty());
}

TEST_CASE("under DDP a save agreement that timed out says why: a save on some ranks, a rank gone",
          "[checkpoint]") {
  // The strategy tells a timeout by its type (DDPStrategy: PeerTimedOutError), whatever it is.
  // Before the parts are agreed the other ranks are elsewhere: save_checkpoint was not called on
  // every rank. After, every rank had joined the save: one stopped answering (rank 0 waits for its
  // writer in rounds, and fails on its own when that is stuck), and this rank stops because of it.
  const SavePhase phase = GENERATE(SavePhase::kPartsReady, SavePhase::kWritten);
  const int rank = GENERATE(0, 1);
  CAPTURE(phase, rank);
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>(2, rank);
  strategy->time_out_in = phase;
  const auto [error, another_rank_failed] = fit_saving_at_batch_2(strategy, dir);
  if (phase == SavePhase::kWritten) {
    CHECK_THAT(error,
               Contains(rank == 0 ? "rank 0 of 2: another rank stopped answering the "
                                    "agreement of"
                                  : "rank 1 of 2: a rank stopped answering the agreement of") &&
                   Contains("saved.ckpt at step 3 after every rank had joined this save") &&
                   Contains(rank == 0 ? ": it hangs or stopped"
                                      : ": rank 0, which waits there for its checkpoint "
                                        "writer, or another rank hangs or stopped"));
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
  const std::string error =
      fit_with(strategy, std::make_shared<SaveAtBatch>(2, dir.file("rank0-0800.ckpt"),
                                                       SaveCheckpointOptions().agreement_name(
                                                           strict ? "rank0-0800.ckpt" : "")))
          .first;
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

TEST_CASE(
    "under DDP a timeout after a round of the agreement names what is known, not a one-rank save",
    "[checkpoint]") {
  // Rank 0 said in the first round that it waits for its writer: every rank is in this save.
  // The second round times out: a rank stopped coming back. Rank 0, which waits between rounds
  // for at most a round, or any other rank: nobody can tell which.
  const int rank = GENERATE(0, 1);
  CAPTURE(rank);
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>(2, rank);
  strategy->peer_agreement = [](SaveAgreement agreement) {
    agreement.waiting = true;
    return agreement;
  };
  strategy->time_out_at_agreement = 2;
  const auto [error, another_rank_failed] = fit_saving_at_batch_2(strategy, dir);
  if (rank == 0) {
    CHECK_THAT(error, Contains("rank 0 of 2: another rank stopped answering the agreement of") &&
                          Contains("saved.ckpt at step 3 after every rank had joined this save"));
  } else {
    CHECK_THAT(error, Contains("rank 1 of 2: a rank stopped answering the agreement of") &&
                          Contains("saved.ckpt at step 3 after every rank had joined this save: "
                                   "rank 0, which waits there for its checkpoint writer, or "
                                   "another rank hangs or stopped"));
  }
  CHECK_THAT(error, !Contains("some ranks only"));
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
  const std::string error =
      fit_with(strategy, std::make_shared<SaveBehindGatedWrite>(dir.path().string(),
                                                                release.get_future().share()))
          .first;
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

namespace {

// For the scope: every step of a checkpoint write (a chunk, an fsync) on this process calls
// `hook` first (checkpoint::detail::simulate_slow_disk), which makes the disk slow or stuck.
class SimulatedDisk {
 public:
  explicit SimulatedDisk(std::function<void(const std::string& path)> hook) {
    checkpoint::detail::simulate_slow_disk(std::move(hook));
  }
  ~SimulatedDisk() { checkpoint::detail::simulate_slow_disk({}); }
  SimulatedDisk(const SimulatedDisk&) = delete;
  SimulatedDisk& operator=(const SimulatedDisk&) = delete;
};

// good.ckpt at batch 0 (synchronous), slow.ckpt at batch 1 (asynchronous: what the simulated
// disk delays), after.ckpt at batch 2 (synchronous: it waits for slow.ckpt). With `own_write`,
// slow.ckpt is the synchronous save at batch 2 instead, and there is no after.ckpt. Notes how
// long the save at batch 2 took, also when it failed; `on_failure` runs in on_exception (before
// the fit waits for the writer).
class SaveBehindSlowDisk : public Callback {
 public:
  SaveBehindSlowDisk(std::string dir, bool own_write, std::function<void()> on_failure = {})
      : dir_(std::move(dir)), own_write_(own_write), on_failure_(std::move(on_failure)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() != 0) return;
    if (batch_idx == 0) trainer.save_checkpoint(dir_ + "/good.ckpt");
    if (batch_idx == 1 && !own_write_)
      trainer.save_checkpoint(dir_ + "/slow.ckpt", SaveCheckpointOptions().async(true));
    if (batch_idx != 2) return;
    started_ = std::chrono::steady_clock::now();
    trainer.save_checkpoint(dir_ + (own_write_ ? "/slow.ckpt" : "/after.ckpt"));
    save_seconds = seconds_since_start();
  }
  void on_exception(Trainer&, Module&, const std::exception&) override {
    save_seconds = seconds_since_start();
    if (on_failure_) on_failure_();
  }
  double save_seconds = 0.0;

 private:
  double seconds_since_start() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  }
  std::string dir_;
  bool own_write_;
  std::function<void()> on_failure_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace

TEST_CASE("under DDP rank 0 fails a save whose writer made no progress for the collective timeout",
          "[checkpoint]") {
  // slow.ckpt's write blocks (a disk that hangs) until the fit fails, then fails as an I/O error
  // would. Bounded: without a bound on the rounds it ends after 20 s, and the test fails. The
  // save waits for it, or (own_write) it is the synchronous save itself.
  const bool own_write = GENERATE(false, true);
  CAPTURE(own_write);
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  strategy->timeout = std::chrono::milliseconds(500);
  int rounds_telling_failure = 0;
  strategy->peer_agreement = [&](SaveAgreement agreement) {
    if (agreement.first_failed == 0) ++rounds_telling_failure;  // what rank 1 learns
    return agreement;
  };
  std::promise<void> disk_back;
  std::shared_future<void> back = disk_back.get_future().share();
  SimulatedDisk disk([back](const std::string& path) {
    if (path.find("slow.ckpt") == std::string::npos) return;
    (void)back.wait_for(std::chrono::seconds(20));
    throw CheckpointError("cannot write " + path + ": Input/output error (simulated)");
  });
  auto saver = std::make_shared<SaveBehindSlowDisk>(dir.path().string(), own_write,
                                                    [&] { disk_back.set_value(); });
  const auto [error, another_rank_failed] = fit_with(strategy, saver);
  CHECK_THAT(error, Contains("rank 0's checkpoint writer has written nothing for") &&
                        Contains("while writing " + dir.file("slow.ckpt")) &&
                        Contains(own_write ? " at step 3 (every rank waits for it)"
                                           : " (the save of " + dir.file("after.ckpt") +
                                                 " at step 3 waits for it") &&
                        Contains("disk or filesystem is stuck") &&
                        Contains("--ddp-timeout, now 0.5 s"));
  CHECK_FALSE(another_rank_failed);  // rank 0's own failure: `trainbus fit` exits with 1
  CHECK(rounds_telling_failure == 1);
  CHECK(saver->save_seconds >= 0.5);
  CHECK(saver->save_seconds < 5.0);
  // The complete checkpoint before it is intact; nothing else is left, not even a temporary.
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"good.ckpt"});
  CHECK_NOTHROW(checkpoint::read_checkpoint(dir.file("good.ckpt")));
}

TEST_CASE("under DDP a slow writer that keeps making progress is waited for past the timeout",
          "[checkpoint]") {
  // Every step of slow.ckpt's write takes 200 ms (a fifth of the timeout: wide enough for
  // TSan and a busy CI machine), until 2 timeouts have passed. The save waits for it, or
  // (own_write) it is the synchronous save itself.
  const bool own_write = GENERATE(false, true);
  CAPTURE(own_write);
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  const auto timeout = std::chrono::milliseconds(1000);
  strategy->timeout = timeout;
  std::optional<std::chrono::steady_clock::time_point> slow_until;
  SimulatedDisk disk([&](const std::string& path) {
    if (path.find("slow.ckpt") == std::string::npos) return;
    const auto now = std::chrono::steady_clock::now();
    if (!slow_until) slow_until = now + 2 * timeout;
    if (now < *slow_until)
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          std::chrono::milliseconds(200), *slow_until - now));
  });
  auto saver = std::make_shared<SaveBehindSlowDisk>(dir.path().string(), own_write);
  const auto [error, another_rank_failed] = fit_with(strategy, saver);
  CHECK(error.empty());
  CHECK(saver->save_seconds > std::chrono::duration<double>(timeout).count());
  CHECK(names_in(dir.path().string()) ==
        (own_write ? std::set<std::string>{"good.ckpt", "slow.ckpt"}
                   : std::set<std::string>{"good.ckpt", "slow.ckpt", "after.ckpt"}));
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

namespace {

// good.ckpt at batch 0 (synchronous); at batch 2 a synchronous save of slow.ckpt that evicts
// good.ckpt and notes its after_commit. Its error is caught (the fit goes on): noted, with
// whether rank 0's writer still wrote then; `on_failure` runs (the disk comes back, say), then
// the callback waits for the writer.
class CatchingSlowSave : public Callback {
 public:
  CatchingSlowSave(std::string dir, std::function<void()> on_failure = {})
      : dir_(std::move(dir)), on_failure_(std::move(on_failure)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() != 0) return;
    if (batch_idx == 0) trainer.save_checkpoint(dir_ + "/good.ckpt");
    if (batch_idx != 2) return;
    CheckpointRequest request;
    request.path = dir_ + "/slow.ckpt";
    request.remove_after_commit = {dir_ + "/good.ckpt"};
    request.after_commit = [this](const std::string&) { after_commit_ran = true; };
    try {
      trainer.checkpoints().save_now(std::move(request));
    } catch (const std::exception& e) {
      error = e.what();
      writer_busy_at_error = !trainer.checkpoints().writer()->path_in_flight().empty();
      if (on_failure_) on_failure_();
      trainer.checkpoints().wait();
    }
  }
  std::string error;
  bool writer_busy_at_error = false;
  std::atomic<bool> after_commit_ran{false};

 private:
  std::string dir_;
  std::function<void()> on_failure_;
};

}  // namespace

TEST_CASE("under DDP a synchronous save given up on a stuck disk never lands, even if it recovers",
          "[checkpoint]") {
  // slow.ckpt's write blocks until its save failed (a disk that hangs), then the disk comes back.
  // The fit goes on (the error is caught): the write, whose snapshot references the live
  // tensors, must not land as a mix of steps, update anything or evict good.ckpt.
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  strategy->timeout = std::chrono::milliseconds(500);
  std::promise<void> disk_back;
  std::shared_future<void> back = disk_back.get_future().share();
  SimulatedDisk disk([back](const std::string& path) {
    if (path.find("slow.ckpt") != std::string::npos) (void)back.wait_for(std::chrono::seconds(20));
  });
  auto saver =
      std::make_shared<CatchingSlowSave>(dir.path().string(), [&] { disk_back.set_value(); });
  const auto [error, another_rank_failed] = fit_with(strategy, saver);
  CHECK(error.empty());
  CHECK_THAT(saver->error, Contains("rank 0's checkpoint writer has written nothing for") &&
                               Contains(dir.file("slow.ckpt")));
  CHECK_FALSE(saver->after_commit_ran);
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"good.ckpt"});
  CHECK_NOTHROW(checkpoint::read_checkpoint(dir.file("good.ckpt")));
}

TEST_CASE("under DDP a synchronous save that another rank fails waits for its write to end",
          "[checkpoint]") {
  // Rank 1 fails the second agreement while rank 0's disk is slow, not stuck: save_now returns
  // (throws) only once the writer no longer reads the live tensors. The checkpoint it wrote at
  // the step of the save is complete and labelled alike, so it lands as a good one.
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  strategy->timeout = std::chrono::seconds(3);
  strategy->peer_agreement = [](SaveAgreement agreement) {
    if (agreement.phase == SavePhase::kWritten &&
        agreement.name_hash == trainbus::detail::save_name_hash("slow.ckpt"))
      agreement.first_failed = 1;
    return agreement;
  };
  std::atomic<int> slow_steps{0};
  SimulatedDisk disk([&](const std::string& path) {
    if (path.find("slow.ckpt") != std::string::npos && slow_steps++ < 3)
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
  });
  auto saver = std::make_shared<CatchingSlowSave>(dir.path().string());
  const auto [error, another_rank_failed] = fit_with(strategy, saver);
  CHECK(error.empty());
  CHECK_THAT(saver->error, Contains("rank 1's part of the save of checkpoint"));
  CHECK_FALSE(saver->writer_busy_at_error);
  CHECK(saver->after_commit_ran);
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"slow.ckpt"});
}

namespace {

// An asynchronous save of slow.ckpt at the end of the (only) epoch; notes how long from then until
// the fit failed, and runs `on_failure` in on_exception.
class SaveAtTheEnd : public Callback {
 public:
  SaveAtTheEnd(std::string dir, std::function<void()> on_failure)
      : dir_(std::move(dir)), on_failure_(std::move(on_failure)) {}
  void on_train_epoch_end(Trainer& trainer, Module&) override {
    started_ = std::chrono::steady_clock::now();
    trainer.save_checkpoint(dir_ + "/slow.ckpt", SaveCheckpointOptions().async(true));
  }
  void on_exception(Trainer&, Module&, const std::exception&) override {
    failed_after_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    on_failure_();
  }
  double failed_after_seconds = 0.0;

 private:
  std::string dir_;
  std::function<void()> on_failure_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace

TEST_CASE("under DDP rank 0's end of a fit fails once its writer made no progress for the timeout",
          "[checkpoint]") {
  // The other ranks have ended: without a bound rank 0 waits for a disk that hangs for ever
  // (here: 10 s, then the disk fails as an I/O error would).
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  strategy->timeout = std::chrono::milliseconds(500);
  std::promise<void> disk_back;
  std::shared_future<void> back = disk_back.get_future().share();
  SimulatedDisk disk([back](const std::string& path) {
    if (path.find("slow.ckpt") == std::string::npos) return;
    (void)back.wait_for(std::chrono::seconds(10));
    throw CheckpointError("cannot write " + path + ": Input/output error (simulated)");
  });
  auto saver = std::make_shared<SaveAtTheEnd>(dir.path().string(), [&] { disk_back.set_value(); });
  const auto [error, another_rank_failed] = fit_with(strategy, saver);
  CHECK_THAT(error, Contains("rank 0's checkpoint writer has written nothing for") &&
                        Contains("while writing " + dir.file("slow.ckpt")) &&
                        Contains("at the end of the run") && Contains("--ddp-timeout, now 0.5 s"));
  CHECK_FALSE(another_rank_failed);
  CHECK(saver->failed_after_seconds >= 0.5);
  CHECK(saver->failed_after_seconds < 5.0);
  CHECK(names_in(dir.path().string()).empty());
}

namespace {

// At batch 1 an asynchronous save of slow.ckpt whose after_commit (an upload, say) takes
// `after_commit_takes`; at batch 2 a synchronous save of after.ckpt, which waits for it.
class SaveBehindSlowAfterCommit : public Callback {
 public:
  SaveBehindSlowAfterCommit(std::string dir, std::chrono::milliseconds after_commit_takes)
      : dir_(std::move(dir)), after_commit_takes_(after_commit_takes) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() != 0) return;
    if (batch_idx == 1) {
      CheckpointRequest request;
      request.path = dir_ + "/slow.ckpt";
      request.after_commit = [takes = after_commit_takes_](const std::string&) {
        std::this_thread::sleep_for(takes);  // the upload's time: what is waited for
      };
      trainer.checkpoints().submit(std::move(request));
    } else if (batch_idx == 2) {
      trainer.save_checkpoint(dir_ + "/after.ckpt");
    }
  }

 private:
  std::string dir_;
  std::chrono::milliseconds after_commit_takes_;
};

}  // namespace

TEST_CASE(
    "under DDP a slow after_commit is waited for past the timeout, not taken for a stuck disk",
    "[checkpoint]") {
  TempDir dir;
  auto strategy = std::make_shared<SimulatedPeers>();
  strategy->timeout = std::chrono::milliseconds(300);
  const auto [error, another_rank_failed] =
      fit_with(strategy, std::make_shared<SaveBehindSlowAfterCommit>(
                             dir.path().string(), std::chrono::milliseconds(1500)));
  CHECK(error.empty());
  CHECK(strategy->waiting_rounds > 0);
  CHECK(names_in(dir.path().string()) == std::set<std::string>{"slow.ckpt", "after.ckpt"});
}

TEST_CASE("the writer's stall watch fails only after the limit without progress while it writes",
          "[checkpoint]") {
  using std::chrono::milliseconds;
  using trainbus::detail::WriterStallWatch;
  const WriterStallWatch::Clock::time_point t0{};
  WriterStallWatch watch(milliseconds(1000), 5, t0);
  CHECK_FALSE(watch.stalled_for(5, t0 + milliseconds(999)));
  CHECK(watch.stalled_for(5, t0 + milliseconds(1000)) == milliseconds(1000));
  // Progress restarts the clock.
  CHECK_FALSE(watch.stalled_for(6, t0 + milliseconds(1500)));
  CHECK_FALSE(watch.stalled_for(6, t0 + milliseconds(2499)));
  CHECK(watch.stalled_for(6, t0 + milliseconds(2600)) == milliseconds(1100));
  // Outside the write (after_commit, evictions) nothing counts, and the clock restarts after it.
  CHECK_FALSE(watch.stalled_for(6, t0 + milliseconds(5000), /*writing=*/false));
  CHECK_FALSE(watch.stalled_for(6, t0 + milliseconds(5999)));
  CHECK(watch.stalled_for(6, t0 + milliseconds(6000)) == milliseconds(1000));
  // Without a limit, never.
  WriterStallWatch unbounded(std::nullopt, 0, t0);
  CHECK_FALSE(unbounded.stalled_for(0, t0 + std::chrono::hours(24)));
}
