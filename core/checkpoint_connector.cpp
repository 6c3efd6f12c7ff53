#include "core/checkpoint_connector.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string_view>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/optim/schedulers/lr_scheduler.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "checkpoint/format.h"
#include "checkpoint/module_state.h"
#include "checkpoint/optimizer_state.h"
#include "checkpoint/snapshot.h"
#include "core/callback_order.h"
#include "core/checkpoint_callback.h"
#include "core/detail/save_agreement.h"
#include "core/detail/writer_stall.h"
#include "core/reduce_lr_on_plateau.h"
#include "core/trainer.h"
#include "distributed/strategy.h"

namespace trainbus {
namespace {

// LibTorch 1.13's LRScheduler keeps its step count protected and has no state_dict; this reaches
// it through a derived-class member pointer, the one standard way to read a protected member.
struct SchedulerStepCount : torch::optim::LRScheduler {
  static unsigned& of(torch::optim::LRScheduler& scheduler) {
    return scheduler.*(&SchedulerStepCount::step_count_);
  }
};

std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

// Samples one optimizer step takes over all ranks (a batch's size, times the ranks): with
// num_training_batches, what a position inside an epoch means. `batch_size`: of a batch this fit
// ran (0: none yet, then batch 0 is read).
int64_t global_batch_size(const Trainer& trainer, int64_t batch_size = 0) {
  if (batch_size > 0) return batch_size * trainer.world_size();
  const auto& loader = trainer.train_dataloader();
  if (!loader || loader->num_batches() == 0) return 0;
  return data::batch_size_of(loader->batch(0)) * trainer.world_size();
}

// Bytes on disk of a checkpoint (a directory of parts, or a file).
int64_t bytes_on_disk(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(path, error)) {
    const auto size = fs::file_size(path, error);
    return error ? 0 : static_cast<int64_t>(size);
  }
  int64_t bytes = 0;
  for (fs::recursive_directory_iterator it(path, error), end; !error && it != end;
       it.increment(error)) {
    checkpoint::note_write_step();  // on the writer's thread: an entry measured
    if (!it->is_regular_file(error)) continue;
    const auto size = it->file_size(error);
    if (!error) bytes += static_cast<int64_t>(size);
  }
  return bytes;
}

// How long rank 0 waits for its writer (earlier asynchronous saves) between two rounds of a
// save's agreement: far below any collective timeout (--ddp-timeout, 300 s by default), so that
// however long the writer takes, no rank waits in one collective longer than that.
constexpr std::chrono::milliseconds kWriterWaitRound{100};
// After how long of that rank 0 says that every rank waits for its writer (a disk that hangs
// keeps them waiting, as it keeps one process waiting).
constexpr std::chrono::seconds kWriterWaitWarning{60};

// What Trainer::save_checkpoint's saves are named in the agreement, unless told otherwise.
constexpr char kUserSaveAgreementName[] = "save_checkpoint";

// What names a save alike on every rank, for its agreement (CheckpointRequest::agreement_name).
std::string agreement_name(const CheckpointRequest& request) {
  if (!request.agreement_name.empty()) return request.agreement_name;
  std::string path = request.path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();  // a directory's "x/"
  return std::filesystem::path(path).filename().string();
}

// An asynchronous save's snapshot, for the writer: written on its thread, then its tensor copies
// go back to the buffers for the next snapshot.
class SnapshotPayload final : public checkpoint::CheckpointPayload {
 public:
  explicit SnapshotPayload(std::unique_ptr<checkpoint::CheckpointSnapshot> snapshot)
      : snapshot_(std::move(snapshot)) {}
  ~SnapshotPayload() override {
    // The archives and the data go first: then nothing but `copies` holds the tensor copies, and
    // they can be reused.
    snapshot_->parts.clear();
    snapshot_->data = CheckpointData();
    if (snapshot_->buffers == nullptr) return;
    try {
      snapshot_->buffers->give_back(std::move(snapshot_->copies));
    } catch (...) {
      // Out of memory keeping them: the next snapshot allocates its own.
    }
  }
  void write(const std::string& path) override { checkpoint::write_checkpoint(*snapshot_, path); }
  std::size_t bytes() const override { return snapshot_->tensor_bytes; }

 private:
  std::unique_ptr<checkpoint::CheckpointSnapshot> snapshot_;
};

}  // namespace

CheckpointConnector::CheckpointConnector(Trainer& trainer) : trainer_(trainer) {}

CheckpointConnector::~CheckpointConnector() = default;

std::unique_ptr<checkpoint::CheckpointSnapshot> CheckpointConnector::dump_checkpoint(
    const std::string& path, bool weights_only) {
  Trainer& t = trainer_;
  // As Lightning, also during validate/test/predict (the weights, and the optimizers a fit of
  // this Trainer left); outside any run there is no module to save.
  TRAINBUS_CHECK(t.module_ != nullptr, "Trainer::save_checkpoint(\"", path,
                 "\") needs a running fit, validate, test or predict: call it from a callback or "
                 "a module hook (after fit, from a Trainer::validate of the module)");
  TRAINBUS_CHECK_AS(CheckpointError, !optimizers_pending_, "Trainer::save_checkpoint(\"", path,
                    "\"): the run resumes from ", resumed_from_,
                    " and its optimizer states are loaded after on_fit_start; a checkpoint saved "
                    "before then would hold fresh optimizers beside the restored progress, so "
                    "none is written");
  auto snapshot = std::make_unique<checkpoint::CheckpointSnapshot>();
  snapshot->weights_only = weights_only;
  CheckpointData& data = snapshot->data;
  data.epoch = t.progress_.current_epoch;
  data.global_step = t.progress_.global_step;
  data.hyper_parameters = t.module_->hparams();
  data.callback_metrics = t.metrics_.callback_metrics();
  data.loops = t.progress_.state_dict();
  data.loops.insert("accumulate_grad_batches", t.accumulate_grad_batches_);
  data.loops.insert("world_size", static_cast<int64_t>(t.world_size()));
  data.loops.insert("num_training_batches", t.num_training_batches_);
  data.loops.insert("global_batch_size", global_batch_size(t, t.train_batch_size_));
  if (t.train_loader_) data.loops.insert("train_loader", t.train_loader_->state_dict());
  // As Lightning's dump_checkpoint: the whole checkpoint first (weights, optimizer states, the
  // callbacks' state_dict()), then the hooks, which may change any of it before it is written.
  checkpoint::add_module_and_optimizer_states(*t.module_, t.optimizers_, weights_only, *snapshot);
  if (!weights_only) {
    // As Lightning: every callback's state_dict(), kept when not empty. Two under one key would
    // overwrite each other: refused, naming both (stateful() lets the Trainer refuse it earlier).
    std::map<std::string, std::string> owners;  // state_key -> callback class
    for (const auto& callback : t.callbacks_) {
      StateDict state = callback->state_dict();
      if (state.empty()) continue;
      const std::string key = callback->state_key();
      auto [owner, first] = owners.emplace(key, callback_name(*callback));
      TRAINBUS_CHECK(first,
                     duplicate_state_key_message(key, owner->second, callback_name(*callback)));
      data.callbacks.emplace(key, std::move(state));
    }
    data.datamodule = t.data_->state_dict();
    for (const auto& callback : t.callbacks_) callback->on_save_checkpoint(t, *t.module_, data);
  }
  t.module_->on_save_checkpoint(data);
  return snapshot;
}

std::unique_ptr<checkpoint::CheckpointSnapshot> CheckpointConnector::take_snapshot(
    const std::string& path, bool weights_only, checkpoint::SnapshotBuffers* copies_into,
    bool announce) {
  Trainer& t = trainer_;
  const bool copy_tensors = copies_into != nullptr;
  std::unique_ptr<checkpoint::CheckpointSnapshot> snapshot = dump_checkpoint(path, weights_only);
  snapshot->buffers = copies_into;
  // Written later on another thread: nothing in it may share a tensor or a list with the state
  // that the module, the optimizers, callbacks and the data module go on changing once this
  // returns.
  if (copy_tensors) checkpoint::make_private(*snapshot);
  // Laid out (and so checked) before the save is announced: observers never see a save that a
  // hook's change then makes fail.
  checkpoint::add_model_and_optimizer_parts(*t.module_, *snapshot);
  if (announce) announce_save(path);
  torch::serialize::OutputArchive& trainer = checkpoint::add_trainer_part(*snapshot);
  if (!weights_only) {
    c10::List<int64_t> scheduler_steps;
    for (const auto& config : t.configured_schedulers_)
      scheduler_steps.push_back(SchedulerStepCount::of(*config.scheduler));
    trainer.write("schedulers", scheduler_steps);
    // What a scheduler keeps beyond its step count (ReduceLROnPlateau's best, bad steps and
    // cooldown); an empty dict for the others.
    c10::impl::GenericList scheduler_states(c10::AnyType::get());
    for (const auto& config : t.configured_schedulers_) {
      const auto* plateau = dynamic_cast<const ReduceLROnPlateau*>(config.scheduler.get());
      scheduler_states.push_back(plateau ? plateau->state_dict().to_ivalue()
                                         : StateDict().to_ivalue());
    }
    trainer.write("scheduler_states", scheduler_states);
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    trainer.write("rng.torch_cpu", generator.get_state());  // get_state returns a copy
  }
  return snapshot;
}

void CheckpointConnector::save(const std::string& path, SaveCheckpointOptions options) {
  CheckpointRequest request;
  request.path = path;
  request.weights_only = options.weights_only();
  // Alike on every rank, where the file name may not be (rank 0's is written). Still unlike a
  // checkpoint callback's save, which names its own.
  request.agreement_name =
      options.agreement_name().empty() ? kUserSaveAgreementName : options.agreement_name();
  if (options.async()) {
    // A newer save to the same path supersedes a pending one; saves to other paths all land.
    request.replace_group = path;
    submit(std::move(request));
  } else {
    save_now(std::move(request));
  }
}

void CheckpointConnector::announce_save(const std::string& path) {
  Trainer& t = trainer_;
  t.bus_.publish_lazy<events::SaveCheckpoint>([&] {
    return events::SaveCheckpoint{t.event_progress(), path};
  });
}

bool CheckpointConnector::agrees_on_saves() const {
  // Not while the run is failing: the rank that failed may be the one the others wait for.
  return trainer_.world_size() > 1 && trainer_.status_ != TrainerStatus::kInterrupted;
}

void CheckpointConnector::save_now(CheckpointRequest request) {
  if (trainer_.replaying()) return dry_run(request);
  // Under DDP in two phases (see agree_on_save): nothing is written unless every rank's part
  // went well.
  const bool agreed = agrees_on_saves();
  std::unique_ptr<checkpoint::CheckpointSnapshot> snapshot;
  std::exception_ptr failed;
  try {
    if (trainer_.is_global_zero()) {
      // In order with the background saves: an older one must not land after this one. Under
      // DDP the ranks wait for them together, in the agreement.
      if (!agreed) wait_for_earlier_saves(request.path);
      snapshot = take_snapshot(request.path, request.weights_only, nullptr, /*announce=*/!agreed);
    } else {
      dump_checkpoint(request.path, request.weights_only);  // the hooks; rank 0 writes
    }
  } catch (...) {
    failed = std::current_exception();
  }
  agree_on_save(request, failed, detail::SavePhase::kPartsReady,
                [this](std::chrono::milliseconds limit) {
                  if (writer_ && !writer_->wait_for_idle(limit)) return false;
                  wait();  // idle: publishes the earlier saves' commits, raises their failure
                  return true;
                });
  try {
    if (trainer_.is_global_zero()) {
      if (agreed) announce_save(request.path);
      write_now(request, std::move(snapshot));
    }
  } catch (...) {
    failed = std::current_exception();
  }
  // NOTE: a second agreement, for synchronous saves only (one collective more, next to a write
  // and an fsync): as Lightning's barrier after strategy.save_checkpoint, every rank returns once
  // the checkpoint is on disk (a hook may read it), and a write that fails on rank 0 (a full disk)
  // fails every rank here, naming rank 0 and the path, instead of at the next collective as a
  // rank that went away (or at the timeout, if rank 0 lives on). An asynchronous save has no
  // second one: its write fails later on rank 0's writer thread either way.
  agree_on_save(request, failed, detail::SavePhase::kWritten);
}

void CheckpointConnector::write_now(const CheckpointRequest& request,
                                    std::unique_ptr<checkpoint::CheckpointSnapshot> snapshot) {
  checkpoint::write_checkpoint(*snapshot, request.path);
  snapshot.reset();
  if (request.after_commit) request.after_commit(request.path);
  std::vector<std::string> removed;
  for (const std::string& old : request.remove_after_commit) {
    if (old == request.path) continue;
    checkpoint::remove_checkpoint(old);
    removed.push_back(old);
  }
  commit_notifier(request)(request.path, removed);
  publish_commits();
}

namespace {

// Rank 0's wait, inside a save's agreement, for what it must wait for before it goes on (its
// writer's earlier saves, or room in its queue), in steps of at most a given time so that the
// ranks can agree in between. Under DDP the wait fails once the writer has made no progress in
// its file work for the collective timeout (WriterStallWatch). Whatever fails becomes `failed`:
// this rank's part of the save failed.
class RankZeroWait {
 public:
  /// `ready`: nullptr on another rank. `on_stuck`: makes the error of a writer found stuck (and
  /// notes it), from how long it made no progress and the reading judged so.
  using OnStuck = std::function<std::exception_ptr(std::chrono::steady_clock::duration,
                                                   checkpoint::WriteActivity, std::string path)>;
  RankZeroWait(const std::function<bool(std::chrono::milliseconds)>* ready,
               const checkpoint::CheckpointWriter* writer,
               std::optional<std::chrono::milliseconds> timeout, const std::string& path,
               int64_t step, std::exception_ptr& failed, OnStuck on_stuck)
      : ready_(ready),
        writer_(writer),
        timeout_(timeout),
        path_(path),
        step_(step),
        failed_(failed),
        on_stuck_(std::move(on_stuck)),
        stall_(timeout, activity(), Clock::now()),
        since_(Clock::now()) {}

  /// Waits at most `limit`: whether it is done, or failed (then `failed` is set). Without
  /// `ready` (another rank, or nothing to wait for) done at once.
  bool done_within(std::chrono::milliseconds limit) {
    if (failed_ || ready_ == nullptr || !*ready_) return true;
    try {
      if ((*ready_)(limit)) return true;
      const checkpoint::WriteActivity now_doing = activity();
      if (const auto stalled = stall_.stalled_for(now_doing, Clock::now())) {
        // The writer may have finished just after `limit`: then it is not stuck.
        if ((*ready_)(std::chrono::milliseconds(0))) return true;
        // Named by the save it is stuck in; moved on since (the disk came back): not stuck.
        std::optional<std::string> path =
            writer_ ? writer_->path_while(now_doing) : std::optional<std::string>("");
        if (!path) return false;
        failed_ = on_stuck_(*stalled, now_doing, std::move(*path));
        return true;
      }
      return false;
    } catch (...) {
      failed_ = std::current_exception();
      return true;
    }
  }

  /// Under DDP, after a while: says that every rank waits (once). `waits_for`: what rank 0
  /// waits for, as the message says it.
  void warn_if_long(const distributed::DistributedEnvironment& environment,
                    std::string_view waits_for) {
    if (warned_ || Clock::now() - since_ < kWriterWaitWarning) return;
    warned_ = true;
    const std::string bound =
        timeout_ ? detail::concat(
                       "; it fails once the writer makes no progress in a write (or in "
                       "a `last` link, copy or eviction, or in measuring it) for ",
                       timeout_->count() / 1000.0, " s (DDPOptions::timeout, --ddp-timeout)")
                 : std::string();
    warn(environment.rank_message(detail::concat(
        "checkpoint ", path_, " at step ", step_, " waits for ", waits_for, " (",
        kWriterWaitWarning.count(),
        " s so far), and every rank with it: rank 0's writer is still busy (writing, or running a "
        "save's after_commit or its evictions)",
        bound)));
  }

 private:
  using Clock = std::chrono::steady_clock;
  checkpoint::WriteActivity activity() const {
    return writer_ ? writer_->activity() : checkpoint::WriteActivity{};
  }

  const std::function<bool(std::chrono::milliseconds)>* ready_;
  const checkpoint::CheckpointWriter* writer_;
  std::optional<std::chrono::milliseconds> timeout_;
  const std::string& path_;
  int64_t step_;
  std::exception_ptr& failed_;
  OnStuck on_stuck_;
  detail::WriterStallWatch stall_;
  Clock::time_point since_;
  bool warned_ = false;
};

// What to fix when the ranks' collectives do not pair up: the usual cause.
constexpr char kCallOnEveryRank[] =
    "save_checkpoint is a collective: every rank must call it at the same point (with the same "
    "SaveCheckpointOptions::agreement_name, if one is given), not under `if "
    "(trainer.is_global_zero())` or another condition that differs between ranks (a checkpoint "
    "callback's decisions are agreed; a hook of one's own must agree too). A rank that did not "
    "call it is in another collective, which fails as well";

// The rounds of one agreement of a save on this rank: each all-reduces this rank's part and
// reads what every rank agreed, or throws where they are not in the same save, or one did not
// come.
class SaveAgreementRounds {
 public:
  SaveAgreementRounds(distributed::Strategy& strategy, const std::string& path,
                      const detail::SaveAgreement& mine)
      : strategy_(strategy),
        environment_(strategy.environment()),
        world_(strategy.world_size()),
        path_(path),
        mine_(mine) {}

  /// One round: this rank's part (`failed`: its error, else `waiting`: rank 0 still waits for
  /// its writer), then what the ranks agreed. Throws `failed` itself where the round fails.
  detail::SaveAgreement round(const std::exception_ptr& failed, bool waiting) {
    mine_.first_failed = failed ? environment_.rank : world_;
    mine_.waiting = waiting;
    std::vector<double> values = detail::encode_save_agreement(mine_, world_);
    try {
      strategy_.all_reduce(values, distributed::ReduceOp::kMin);
    } catch (const distributed::PeerTimedOutError&) {
      if (failed) std::rethrow_exception(failed);  // this rank's own error is the one to report
      throw_timed_out();
    } catch (...) {
      if (!failed) throw;
      std::rethrow_exception(failed);
    }
    const std::optional<detail::SaveAgreement> agreed =
        detail::decode_save_agreement(values, world_);
    if (!agreed) {
      if (failed) std::rethrow_exception(failed);
      throw_not_the_same_save(values);
    }
    ++rounds_agreed_;
    return *agreed;
  }

 private:
  // A round that waited for another rank past the timeout.
  [[noreturn]] void throw_timed_out() const {
    const bool rank_zero = environment_.rank == 0;
    // Every rank came to an earlier round of this save: one of them did not come back. Rank 0
    // waits for its writer between rounds, at most a round each (it fails on its own, and says
    // so in a round, when the writer is stuck), so rank 0 is not more likely than any other.
    TRAINBUS_CHECK_AS(
        distributed::AnotherRankFailedError, rounds_agreed_ == 0,
        environment_.rank_message(
            rank_zero
                ? detail::concat("another rank stopped answering the agreement of ", path_,
                                 " at step ", mine_.global_step, " (round ", rounds_agreed_ + 1,
                                 ") while this rank waited for its writer: it hangs or stopped; "
                                 "its error or the launcher's report says which")
                : detail::concat("a rank stopped answering the agreement of ", path_, " at step ",
                                 mine_.global_step, " (round ", rounds_agreed_ + 1,
                                 ", after every rank had joined it): rank 0, which waited there "
                                 "for its checkpoint writer, or another rank hangs or stopped; "
                                 "its error or the launcher's report says which")));
    // A rank that never came to the agreement: this rank's error says what to fix (the others
    // only see that this rank is not in their collective, so they end as after another rank's
    // failure). A rank that went away is any other DistributedError: its error, as for any
    // collective.
    // After the parts were agreed, only rank 0 works (the write and its fsync, on its training
    // thread): it is slow or stuck, not in another collective. This rank stops because of it.
    TRAINBUS_CHECK_AS(
        distributed::AnotherRankFailedError,
        mine_.phase != detail::SavePhase::kWritten || rank_zero,
        environment_.rank_message(detail::concat(
            "rank 0 did not finish writing checkpoint ", path_, " at step ", mine_.global_step,
            " within the timeout: its disk is that slow or it hangs; raise "
            "DDPOptions::timeout (--ddp-timeout) if writes take that long")));
    throw distributed::DistributedError(environment_.rank_message(detail::concat(
        "a checkpoint save was called on some ranks only, or a rank hangs: the other ranks did "
        "not join this rank's save of ",
        path_, " at step ", mine_.global_step, " within the timeout. ", kCallOnEveryRank,
        ". If every rank calls it here, one of them hangs (in a hook) or is slower than the "
        "timeout")));
  }

  // Reduced values that are no agreement: the ranks are not in the same save.
  [[noreturn]] void throw_not_the_same_save(const std::vector<double>& values) const {
    const std::optional<detail::SaveAgreement> other = detail::other_save(values, mine_, world_);
    const std::string where =
        !other ? "another rank is in another collective"
        : other->global_step != detail::compared_step(mine_.global_step)
            ? detail::concat(
                  "another rank is in a save at another step (",
                  detail::nearest_step_with_low_bits(mine_.global_step, other->global_step),
                  ", steps are compared modulo ", detail::kSaveAgreementStepModulus, ")")
        : other->phase != mine_.phase
            ? std::string("another rank is at another point of a save at this step")
            : std::string(
                  "another rank saves another checkpoint at this step (a checkpoint callback's "
                  "save where this rank saves one of its own, or another agreement_name)");
    throw distributed::DistributedError(environment_.rank_message(detail::concat(
        "a checkpoint save was called on some ranks only or at different steps: this rank "
        "saves ",
        path_, " at step ", mine_.global_step, ", ", where, ". ", kCallOnEveryRank)));
  }

  distributed::Strategy& strategy_;
  const distributed::DistributedEnvironment& environment_;
  int64_t world_;
  const std::string& path_;
  detail::SaveAgreement mine_;
  int rounds_agreed_ = 0;
};

}  // namespace

namespace {

// What rank 0's writer was found doing in `phase` (its save in flight `in_flight`, "" if none),
// for its errors: "writing ...".
std::string writer_doing(checkpoint::WriterPhase phase, const std::string& in_flight) {
  if (in_flight.empty()) return "writing earlier saves";
  switch (phase) {
    case checkpoint::WriterPhase::kAfterCommitFileSteps:
      return detail::concat("writing what follows ", in_flight,
                            " now that it is on disk (its after_commit: ModelCheckpoint's `last` "
                            "link or copy, if it is ModelCheckpoint's)");
    case checkpoint::WriterPhase::kRemove:
      return detail::concat("removing the checkpoints that ", in_flight,
                            " replaces (top-k evictions) now that it is on disk");
    case checkpoint::WriterPhase::kCommitted:
      return detail::concat("measuring ", in_flight,
                            " on disk for its CheckpointCommitted event, once written");
    default:
      return "writing " + in_flight;
  }
}

// What becomes of what the writer was found doing, for the stuck writer's error.
std::string what_becomes_of(checkpoint::WriterPhase phase, const std::string& in_flight) {
  const auto waits = [](std::string_view what) {
    return detail::concat(" it is not cancelled, and this process waits for ", what,
                          " when it exits (`trainbus fit`'s launcher sends it SIGKILL after its "
                          "grace period, which a write stuck in the kernel can outlast)");
  };
  if (in_flight.empty() || phase == checkpoint::WriterPhase::kWrite) {
    const std::string writing = in_flight.empty() ? std::string("earlier saves") : in_flight;
    return detail::concat(
        "The write of ", writing, " did not finish within the limit:", waits("that write"),
        "; it lands only if the disk recovers by then (a checkpoint is renamed into place only "
        "once complete; those already complete are intact)");
  }
  switch (phase) {
    case checkpoint::WriterPhase::kAfterCommitFileSteps:
      return detail::concat(
          in_flight,
          " itself is on disk and complete; what follows it did not finish within the "
          "limit:",
          waits("it"),
          ". Until it does, `last` may still name the checkpoint before (or not exist yet), and "
          "the checkpoints it replaces are all kept");
    case checkpoint::WriterPhase::kRemove:
      return detail::concat(
          in_flight,
          " itself is on disk and complete, and its after_commit (ModelCheckpoint's `last`, if "
          "any) has run; removing the checkpoints it replaces did not finish within the limit:",
          waits("it"),
          ". Until it does, some of them may still be on disk: one still under its own name is "
          "not removed by a later run (delete it by hand), one renamed to `*.tmp-*.del` is "
          "removed by the next run's cleanup");
    default:
      return detail::concat(in_flight,
                            " itself is on disk and complete, as are what follows it and its "
                            "evictions; measuring it for its CheckpointCommitted event did not "
                            "finish within the limit:",
                            waits("it"));
  }
}

}  // namespace

std::optional<std::chrono::milliseconds> CheckpointConnector::writer_stall_limit() const {
  // Under DDP only: on one process nothing else waits, and a slow disk is waited for as long as
  // it takes.
  return trainer_.world_size() > 1 ? trainer_.strategy().collective_timeout() : std::nullopt;
}

std::exception_ptr CheckpointConnector::writer_stuck(const std::string& waiting_save, int64_t step,
                                                     const WriterStall& stall,
                                                     bool every_rank_waits) {
  // The reading judged stuck, not a later one: a step since then means the writer moved on.
  stuck_ = stall;
  const std::chrono::steady_clock::duration stalled = stall.stalled;
  const std::string& in_flight = stall.path;
  const double seconds = std::round(std::chrono::duration<double>(stalled).count() * 10) / 10;
  const std::chrono::milliseconds timeout =
      writer_stall_limit().value_or(std::chrono::milliseconds(0));
  const std::string message = detail::concat(
      "rank 0's checkpoint writer made no progress for ", seconds, " s while ",
      writer_doing(stall.at.phase, in_flight),
      waiting_save.empty()
          ? std::string(" at the end of the run (the other ranks have ended; nothing else would "
                        "stop this wait)")
          : detail::concat(" (the save of ", waiting_save, " at step ", step, " waits for it",
                           every_rank_waits ? ", and every rank with it)" : ")"),
      ": rank 0's disk or filesystem is stuck, or slower than DDPOptions::timeout allows. The job "
      "stops rather than wait without end",
      waiting_save.empty()
          ? std::string()
          : detail::concat("; ", waiting_save, " at step ", step, " is not written"),
      ". ", what_becomes_of(stall.at.phase, in_flight),
      ". If the disk is only that slow, raise DDPOptions::timeout (--ddp-timeout, now ",
      timeout.count() / 1000.0,
      " s), which bounds how long a checkpoint write may make no progress");
  // Said now as well: under a launcher other than `trainbus fit`'s, the error may not get out
  // before the process waits for its writer's thread at exit.
  warn(trainer_.strategy().environment().rank_message(message));
  return std::make_exception_ptr(CheckpointError(message));
}

std::optional<CheckpointConnector::WriterStall>
CheckpointConnector::wait_for_writer_while_it_moves() {
  if (!writer_) return std::nullopt;
  using Clock = std::chrono::steady_clock;
  detail::WriterStallWatch stall(writer_stall_limit(), writer_->activity(), Clock::now());
  while (!writer_->wait_for_idle(kWriterWaitRound)) {
    const checkpoint::WriteActivity activity = writer_->activity();
    if (const auto stalled = stall.stalled_for(activity, Clock::now())) {
      // The writer may have finished just after the round: then it is not stuck.
      if (writer_->wait_for_idle(std::chrono::milliseconds(0))) break;
      // Named by the save it is stuck in; moved on since (the disk came back): not stuck.
      if (std::optional<std::string> path = writer_->path_while(activity))
        return WriterStall{*stalled, activity, std::move(*path)};
    }
  }
  return std::nullopt;
}

void CheckpointConnector::begin_run() { stuck_.reset(); }

bool CheckpointConnector::still_stuck() const {
  return writer_ && stuck_ && writer_stall_limit() && writer_->activity() == stuck_->at;
}

std::exception_ptr CheckpointConnector::still_stuck_error(const std::string& path) const {
  return std::make_exception_ptr(CheckpointError(detail::concat(
      "checkpoint ", path,
      " is not written: rank 0's checkpoint writer, found stuck in this "
      "run, has made no progress since, ",
      writer_doing(stuck_ ? stuck_->at.phase : checkpoint::WriterPhase::kWrite,
                   stuck_ ? stuck_->path : std::string()),
      " (its disk or filesystem is stuck; the limit is DDPOptions::timeout, --ddp-timeout, now ",
      writer_stall_limit().value_or(std::chrono::milliseconds(0)).count() / 1000.0, " s)")));
}

void CheckpointConnector::wait_for_earlier_saves(const std::string& path) {
  // Under DDP, a save without agreement (a failing run: OnExceptionCheckpoint's, say) is bound as
  // the end of a run is: nothing else would stop this wait.
  if (writer_ && writer_stall_limit()) {
    if (still_stuck() && !writer_->wait_for_idle(std::chrono::milliseconds(0)))
      std::rethrow_exception(still_stuck_error(path));
    if (const auto stall = wait_for_writer_while_it_moves()) {
      std::rethrow_exception(writer_stuck(path, trainer_.progress_.global_step, *stall,
                                          /*every_rank_waits=*/false));
    }
  }
  wait();
}

void CheckpointConnector::finish() {
  if (const auto stall = wait_for_writer_while_it_moves()) {
    // The saves that did land are still published (before the failure, as they came).
    try {
      publish_commits();
    } catch (...) {
      // A subscriber's: the stuck writer is the error to raise, and this one is said.
      warn_dropped_subscriber_error(std::current_exception(), "rank 0's stuck checkpoint writer");
    }
    std::rethrow_exception(writer_stuck("", trainer_.progress_.global_step, *stall));
  }
  wait();
}

void CheckpointConnector::warn_dropped_subscriber_error(std::exception_ptr error,
                                                        std::string_view raised_instead) const {
  warn(trainer_.strategy().environment().rank_message(
      detail::concat("a subscriber of the checkpoint events failed (", describe_exception(error),
                     "); not raised: ", raised_instead, " is the error raised")));
}

std::exception_ptr CheckpointConnector::left_stuck_quietly() {
  try {
    publish_commits();  // the saves that did land
  } catch (...) {
    // A subscriber's: the run's own failure is the one raised, and this one is said.
    warn_dropped_subscriber_error(std::current_exception(), "the run's own failure");
  }
  if (writer_->has_error()) {
    try {
      writer_->check();  // an earlier save's failure, as wait_quietly reports it
    } catch (...) {
      return std::current_exception();
    }
  }
  return nullptr;
}

std::exception_ptr CheckpointConnector::finish_quietly() {
  if (!writer_) return nullptr;
  // Found stuck in this run, and not moved since (reported): not waited for again.
  if (still_stuck() && !writer_->wait_for_idle(std::chrono::milliseconds(0)))
    return left_stuck_quietly();
  if (const auto stall = wait_for_writer_while_it_moves()) {
    stuck_ = stall;
    warn(trainer_.strategy().environment().rank_message(detail::concat(
        "rank 0's checkpoint writer made no progress for the collective timeout (--ddp-timeout, ",
        writer_stall_limit().value_or(std::chrono::milliseconds(0)).count() / 1000.0, " s) while ",
        writer_doing(stall->at.phase, stall->path),
        ": not waited for any longer (its disk or filesystem is stuck); it did not finish and "
        "stays with the writer, which this process waits for when it exits")));
    return left_stuck_quietly();
  }
  return wait_quietly();
}

void CheckpointConnector::agree_on_save(
    const CheckpointRequest& request, std::exception_ptr failed, detail::SavePhase phase,
    const std::function<bool(std::chrono::milliseconds)>& rank_zero_ready, bool waits_for_room) {
  const bool agreed_across_ranks = agrees_on_saves();
  const int64_t step = trainer_.progress_.global_step;
  // Under DDP bound also without agreement (a failing run's save: a user's in on_exception, an
  // asynchronous one waiting for room in the queue, say): nothing else would stop rank 0's wait.
  const std::optional<std::chrono::milliseconds> stall_limit = writer_stall_limit();
  RankZeroWait rank_zero(
      trainer_.is_global_zero() ? &rank_zero_ready : nullptr, writer_.get(), stall_limit,
      request.path, step, failed,
      [this, &request, step, agreed_across_ranks](std::chrono::steady_clock::duration stalled,
                                                  checkpoint::WriteActivity at, std::string path) {
        return writer_stuck(request.path, step, WriterStall{stalled, at, std::move(path)},
                            /*every_rank_waits=*/agreed_across_ranks);
      });
  if (!agreed_across_ranks) {
    // A writer this run found stuck that has not moved since fails it at once, as
    // wait_for_earlier_saves.
    if (!failed && still_stuck() && !rank_zero.done_within(std::chrono::milliseconds(0)))
      failed = still_stuck_error(request.path);
    const std::chrono::milliseconds round =
        stall_limit ? kWriterWaitRound : std::chrono::milliseconds(std::chrono::hours(1));
    while (!rank_zero.done_within(round)) {
    }
    if (failed) std::rethrow_exception(failed);
    return;
  }
  detail::SaveAgreement mine;
  mine.phase = phase;
  mine.global_step = step;
  mine.name_hash = detail::save_name_hash(agreement_name(request));
  SaveAgreementRounds rounds(trainer_.strategy(), request.path, mine);
  // NOTE: rank 0 may first have to wait for its writer (a synchronous save for the earlier
  // asynchronous ones to land, an asynchronous one for a pending save to start), for as long as
  // the disk takes, which may be longer than the collective timeout. So that nobody fails at the
  // timeout while nothing is wrong, it waits in rounds of kWriterWaitRound, each ending with this
  // agreement, where it says that it still waits; every rank sees the same reduced values, so
  // every rank goes round again as long as rank 0 waits. A part that failed ends it at once, as
  // does a writer that made no progress in its file work for the timeout (RankZeroWait): rank 0's
  // part fails then, and every rank learns it in that round.
  detail::SaveAgreement agreed;
  do {
    const bool waiting = !rank_zero.done_within(kWriterWaitRound);
    if (waiting) {
      rank_zero.warn_if_long(
          trainer_.strategy().environment(),
          waits_for_room ? "room in rank 0's checkpoint writer's queue (a pending save to start)"
                         : "earlier asynchronous saves to be written");
    }
    agreed = rounds.round(failed, waiting);
  } while (agreed.waiting);
  // Stopping for another rank's failure: `trainbus fit` exits with 75 (not this rank's fault).
  TRAINBUS_CHECK_AS(distributed::AnotherRankFailedError,
                    failed || agreed.first_failed == trainer_.world_size(),
                    trainer_.strategy().environment().rank_message(detail::concat(
                        "rank ", agreed.first_failed, "'s part of the save of checkpoint ",
                        request.path, " failed (its error says which), so this rank stops too")));
  if (failed) std::rethrow_exception(failed);
}

void CheckpointConnector::dry_run(const CheckpointRequest& request) {
  DryRunSave save;
  save.progress = trainer_.event_progress();
  save.path = request.path;
  save.monitor = request.monitor;
  save.score = request.score;
  for (const std::string& old : request.remove_after_commit) {
    if (old == request.path) continue;
    save.removes.push_back(old);
    dry_run_paths_.erase(old);
  }
  dry_run_paths_.insert(request.path);
  dry_run_saves_.push_back(std::move(save));
}

void CheckpointConnector::remove(const std::string& path) {
  if (trainer_.replaying()) {
    dry_run_paths_.erase(path);
    return;
  }
  if (!trainer_.is_global_zero()) return;
  checkpoint::remove_checkpoint(path);
}

bool CheckpointConnector::exists(const std::string& path) const {
  if (trainer_.replaying()) return dry_run_paths_.count(path) > 0;
  std::error_code error;
  return std::filesystem::exists(std::filesystem::symlink_status(path, error));
}

// Notes a durable save for publish_commits(); runs on the writer thread (or in save_now).
std::function<void(const std::string&, const std::vector<std::string>&)>
CheckpointConnector::commit_notifier(const CheckpointRequest& request) {
  Commit commit;
  commit.progress = trainer_.event_progress();
  commit.monitor = request.monitor;
  commit.score = request.score;
  return [this, commit = std::move(commit)](const std::string& path,
                                            const std::vector<std::string>& removed) mutable {
    try {
      commit.path = path;
      commit.bytes = bytes_on_disk(path);
      commit.removed = removed;
      std::lock_guard<std::mutex> lock(commits_mutex_);
      commits_.push_back(std::move(commit));
      has_commits_.store(true, std::memory_order_release);
    } catch (...) {
      // Out of memory noting it: the checkpoint is durable all the same, only its event is lost.
    }
  };
}

void CheckpointConnector::publish_commits() {
  if (!has_commits_.load(std::memory_order_acquire)) return;
  std::vector<Commit> commits;
  {
    std::lock_guard<std::mutex> lock(commits_mutex_);
    commits.swap(commits_);
    has_commits_.store(false, std::memory_order_relaxed);
  }
  events::EventBus& bus = trainer_.bus_;
  std::size_t next = 0;
  try {
    for (; next < commits.size(); ++next) {
      Commit& commit = commits[next];
      if (!commit.path.empty()) {  // empty: published before a subscriber threw at a removal
        bus.publish_lazy<events::CheckpointCommitted>([&] {
          return events::CheckpointCommitted{commit.progress, commit.path, commit.bytes,
                                             commit.monitor, commit.score};
        });
        commit.path.clear();
      }
      while (!commit.removed.empty()) {
        bus.publish_lazy<events::CheckpointRemoved>([&] {
          return events::CheckpointRemoved{commit.progress, commit.removed.front()};
        });
        commit.removed.erase(commit.removed.begin());
      }
    }
  } catch (...) {
    // A subscriber threw: what was not published yet goes out at the next chance, in order.
    const bool partly = !commits[next].path.empty() || !commits[next].removed.empty();
    const auto first_left = commits.begin() + static_cast<std::ptrdiff_t>(partly ? next : next + 1);
    std::lock_guard<std::mutex> lock(commits_mutex_);
    commits_.insert(commits_.begin(), std::make_move_iterator(first_left),
                    std::make_move_iterator(commits.end()));
    has_commits_.store(!commits_.empty(), std::memory_order_release);
    throw;
  }
}

checkpoint::CheckpointWriter& CheckpointConnector::writer_for_saves() {
  if (!writer_) {
    buffers_ = std::make_unique<checkpoint::SnapshotBuffers>();
    writer_ = std::make_unique<checkpoint::CheckpointWriter>(buffers_.get());
  }
  return *writer_;
}

std::optional<std::string> CheckpointConnector::submit(CheckpointRequest request) {
  if (trainer_.replaying()) {
    dry_run(request);
    return std::nullopt;
  }
  // Under DDP in two phases (see agree_on_save): nothing is queued, so nothing written or
  // evicted, unless every rank's part went well.
  const bool agreed = agrees_on_saves();
  std::unique_ptr<checkpoint::CheckpointPayload> payload;
  std::exception_ptr failed;
  try {
    if (trainer_.is_global_zero()) {
      checkpoint::CheckpointWriter& writer = writer_for_saves();
      payload = std::make_unique<SnapshotPayload>(
          take_snapshot(request.path, request.weights_only, buffers_.get(), /*announce=*/!agreed));
      writer.check();  // an earlier save's failure, as submit would raise it: in the agreement
    } else {
      dump_checkpoint(request.path, request.weights_only);  // the hooks; rank 0 writes
    }
  } catch (...) {
    failed = std::current_exception();
  }
  // A save of another group waits in submit() for the pending one to start, after the
  // agreement: the ranks wait for that together, in the agreement, instead.
  agree_on_save(
      request, failed, detail::SavePhase::kPartsReady,
      [this, &request](std::chrono::milliseconds limit) {
        if (writer_ && !writer_->wait_for_room(request.replace_group, limit)) return false;
        if (writer_) writer_->check();  // a failure meanwhile: in the agreement
        return true;
      },
      /*waits_for_room=*/true);
  if (!trainer_.is_global_zero()) return std::nullopt;
  // Rank 0 has its snapshot: every rank trains on. What fails from here (a subscriber of the
  // announcement, the writer out of memory) fails rank 0; the others learn at the next
  // collective.
  if (agreed) announce_save(request.path);
  checkpoint::CheckpointJob job;
  job.path = request.path;
  job.payload = std::move(payload);
  job.remove_after_commit = std::move(request.remove_after_commit);
  job.after_commit = std::move(request.after_commit);
  job.after_commit_makes_file_steps = request.after_commit_makes_file_steps;
  job.replace_group = std::move(request.replace_group);
  job.on_committed = commit_notifier(request);
  return writer_->submit(std::move(job));
}

void CheckpointConnector::prepare() {
  Trainer& t = trainer_;
  if (t.module_ == nullptr || t.fn_ != Stage::kFit || t.replaying()) return;
  if (!t.is_global_zero()) return;  // only rank 0 snapshots
  checkpoint::CheckpointWriter& writer = writer_for_saves();
  checkpoint::SnapshotBuffers& buffers = *buffers_;
  if (!buffers.request_prepare(checkpoint::snapshot_layouts(*t.module_, t.optimizers_)))
    return;  // folded
  try {
    writer.prepare_in_background([&buffers] { buffers.prepare(); });
  } catch (const std::exception& e) {
    // Preparing is only a speed-up: the save copies into new memory instead.
    buffers.cancel_prepare();  // else the next snapshot would wait for buffers nobody prepares
    warn(std::string("cannot prepare checkpoint buffers ahead (") + e.what() +
         "); the next save copies into new memory");
  }
}

void CheckpointConnector::wait() {
  if (!writer_) return;
  // A failed save is the error to fix: it wins over a subscriber's throwing on the way.
  std::exception_ptr failed = writer_->wait_quietly();
  try {
    publish_commits();
  } catch (...) {
    if (!failed) throw;
    warn_dropped_subscriber_error(std::current_exception(), "the failed checkpoint save");
  }
  if (failed) std::rethrow_exception(failed);
}

std::exception_ptr CheckpointConnector::wait_quietly() {
  if (!writer_) return nullptr;
  std::exception_ptr failed = writer_->wait_quietly();
  try {
    publish_commits();
  } catch (...) {
    if (!failed) failed = std::current_exception();  // a subscriber's: still reported
  }
  return failed;
}

void CheckpointConnector::check() {
  publish_commits();
  if (writer_ && writer_->has_error()) writer_->check();
}

std::string CheckpointConnector::resolve_ckpt_path(const std::string& ckpt_path) const {
  if (ckpt_path != "last" && ckpt_path != "best") return ckpt_path;
  if (trainer_.world_size() <= 1) return find_named_checkpoint(ckpt_path);
  // Rank 0 looks, and every rank loads what it found (or fails with its error): on a shared file
  // system the others would look while rank 0's run directory changes (a setup's renames, the
  // cleanup of old temporaries), and could settle on other checkpoints.
  std::string found_or_error;
  if (trainer_.is_global_zero()) {
    try {
      found_or_error = "path:" + find_named_checkpoint(ckpt_path);
    } catch (const std::exception& error) {
      found_or_error = std::string("error:") + error.what();
    }
  }
  found_or_error = trainer_.strategy().broadcast_text(std::move(found_or_error), /*root=*/0);
  constexpr std::string_view kPath = "path:";
  constexpr std::string_view kError = "error:";
  if (found_or_error.compare(0, kError.size(), kError) == 0) {
    throw CheckpointError(found_or_error.substr(kError.size()) +
                          (trainer_.is_global_zero() ? "" : " (on rank 0, which looks for all)"));
  }
  return found_or_error.substr(kPath.size());
}

std::string CheckpointConnector::find_named_checkpoint(const std::string& ckpt_path) const {
  std::string found;
  bool any = false;
  for (const auto& callback : trainer_.callbacks_) {
    const auto* saver = dynamic_cast<const CheckpointCallback*>(callback.get());
    if (saver == nullptr) continue;
    any = true;
    found = ckpt_path == "best" ? saver->best_model_path() : saver->find_last_checkpoint();
    if (!found.empty()) break;
  }
  TRAINBUS_CHECK_AS(
      CheckpointError, any, "ckpt_path=\"", ckpt_path,
      "\" needs a checkpoint callback (ModelCheckpoint) to find the checkpoint; pass one to the "
      "Trainer, or give ckpt_path as a directory");
  TRAINBUS_CHECK_AS(CheckpointError, !found.empty(), "ckpt_path=\"", ckpt_path, "\": ",
                    ckpt_path == "best"
                        ? "no best checkpoint is known yet (best_model_path is empty)"
                        : "no complete checkpoint found in the checkpoint callback's directory",
                    "; give ckpt_path as a directory, or start without one");
  return found;
}

void CheckpointConnector::restore_module_weights(const checkpoint::LoadedCheckpoint& checkpoint) {
  checkpoint::load_module_state(*trainer_.module_, checkpoint.data.state_dict, checkpoint.path);
}

void CheckpointConnector::load_for_evaluation(const std::string& ckpt_path) {
  evaluated_from_.clear();
  if (ckpt_path.empty()) return;
  const std::string path = resolve_ckpt_path(ckpt_path);
  checkpoint::LoadedCheckpoint checkpoint = checkpoint::read_checkpoint(path);
  // Lightning's restore_model order: the module's hook (which may change the checkpoint), then
  // its weights (as load_from_checkpoint); the data module's state only when the checkpoint has
  // one.
  trainer_.module_->on_load_checkpoint(checkpoint.data);
  restore_module_weights(checkpoint);
  if (!checkpoint.data.datamodule.empty())
    trainer_.data_->load_state_dict(checkpoint.data.datamodule);
  evaluated_from_ = path;
}

void CheckpointConnector::restore_modules_and_callbacks(checkpoint::LoadedCheckpoint& checkpoint) {
  Trainer& t = trainer_;
  // Lightning's _restore_modules_and_callbacks: the module's on_load_checkpoint, then its
  // weights, the data module's state, the callbacks' on_load_checkpoint and their load_state_dict.
  // What the hooks change in the checkpoint is what gets applied, here and later (the loops in
  // restore_training_state, the optimizers in restore_optimizers).
  checkpoint::read_optimizer_states(checkpoint);
  t.module_->on_load_checkpoint(checkpoint.data);
  restore_module_weights(checkpoint);
  t.data_->load_state_dict(checkpoint.data.datamodule);
  for (const auto& callback : t.callbacks_)
    callback->on_load_checkpoint(t, *t.module_, checkpoint.data);
  std::set<std::string> restored;
  for (const auto& callback : t.callbacks_) {
    auto it = checkpoint.data.callbacks.find(callback->state_key());
    if (it == checkpoint.data.callbacks.end()) continue;
    callback->load_state_dict(it->second);
    restored.insert(it->first);
  }
  for (const auto& [key, state] : checkpoint.data.callbacks) {
    if (restored.count(key) == 0) {
      warn("checkpoint " + checkpoint.path + " holds the state of callback `" + key +
           "`, which matches no callback of this Trainer; it is ignored. Pass the callbacks the "
           "checkpoint was "
           "made with to restore it.");
    }
  }
  t.bus_.publish_lazy<events::LoadCheckpoint>([&] {
    return events::LoadCheckpoint{t.event_progress(), checkpoint.path};
  });
}

void CheckpointConnector::restore_training_state(const checkpoint::LoadedCheckpoint& checkpoint) {
  Trainer& t = trainer_;
  const std::string& path = checkpoint.path;
  TRAINBUS_CHECK_AS(
      CheckpointError, !checkpoint.weights_only, "checkpoint ", path,
      " holds only the model weights (save_weights_only), so training cannot resume from it; "
      "load the weights into the module instead, or resume from a full checkpoint");
  auto& archive = const_cast<torch::serialize::InputArchive&>(checkpoint.trainer);
  TRAINBUS_CHECK_AS(CheckpointError,
                    checkpoint.data.optimizer_states.size() == t.optimizers_.size(), "checkpoint ",
                    path, " holds the state of ", checkpoint.data.optimizer_states.size(),
                    " optimizers but configure_optimizers() returned ", t.optimizers_.size());
  try {
    at::Tensor rng_state;
    archive.read("rng.torch_cpu", rng_state);
    // The default generator is shared; LibTorch hands out a const handle to the same impl.
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng_state);
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        "checkpoint ", path, ": cannot restore the random number generator: ",
        first_line(error.what_without_backtrace())));
  }

  const StateDict& loops = checkpoint.data.loops;
  // A position inside an epoch counts one rank's batches. With another number of ranks it means
  // the same only if the epoch still has as many batches (the global batch size kept); at an
  // epoch's end any number of ranks may go on.
  const int64_t saved_world = loops.contains("world_size") ? loops.at("world_size").toInt() : 1;
  const int64_t saved_batches =
      loops.contains("num_training_batches") ? loops.at("num_training_batches").toInt() : -1;
  const int64_t saved_global_batch =
      loops.contains("global_batch_size") ? loops.at("global_batch_size").toInt() : -1;
  const int64_t global_batch = saved_world != t.world_size() ? global_batch_size(t) : 0;
  if (saved_world != t.world_size() && !loops.at("epoch_batches_finished").toBool() &&
      (saved_batches != t.num_training_batches_ || saved_global_batch != global_batch)) {
    throw CheckpointError(::trainbus::detail::concat(
        "checkpoint ", path, " was saved inside an epoch by ", saved_world,
        saved_world == 1 ? " process" : " ranks", " with ", saved_batches,
        " batches per epoch each (", saved_global_batch, " samples a step); this run has ",
        t.world_size(), t.world_size() == 1 ? " process" : " ranks", " with ",
        t.num_training_batches_, " (", global_batch,
        " samples a step), so the position would point at other samples. Resume it with ",
        saved_world, saved_world == 1 ? " process" : " ranks (`--nproc-per-node`)",
        " or a batch size that keeps the epoch's batches, or from a checkpoint saved at an "
        "epoch's end (ModelCheckpoint's default)"));
  }
  t.progress_ = FitProgress::resumed_from(loops);
  t.batches_that_stepped_ = t.progress_.global_step;  // Lightning restores it with the loops
  t.accumulate_grad_batches_ = loops.at("accumulate_grad_batches").toInt();
  if (loops.contains("train_loader") && t.train_loader_) {
    t.train_loader_->load_state_dict(loops.dict_at("train_loader"));
  }
  t.metrics_.restore_callback_metrics(checkpoint.data.callback_metrics);
  optimizers_pending_ = true;
}

void CheckpointConnector::restore_optimizers(const checkpoint::LoadedCheckpoint& checkpoint) {
  Trainer& t = trainer_;
  optimizers_pending_ = false;  // restored, or the fit ends with what this throws
  const std::string& path = checkpoint.path;
  auto& archive = const_cast<torch::serialize::InputArchive&>(checkpoint.trainer);
  try {
    for (size_t i = 0; i < t.optimizers_.size(); ++i) {
      const std::size_t groups = t.optimizers_[i]->param_groups().size();
      try {
        checkpoint::load_optimizer_state(*t.optimizers_[i], checkpoint.data.optimizer_states[i],
                                         "checkpoint.optimizer_states[" + std::to_string(i) + "]");
      } catch (const CheckpointError& error) {
        throw CheckpointError(::trainbus::detail::concat(
            "checkpoint ", path, ": cannot restore the state of optimizer ", i, " (", groups,
            " param groups after on_fit_start): ", error.what(),
            ". The optimizer must have the param groups it had when the checkpoint was saved: "
            "a callback that added groups (BaseFinetuning) must be given again"));
      }
    }
    c10::IValue scheduler_steps;
    archive.read("schedulers", scheduler_steps);
    const auto steps = scheduler_steps.toIntList();
    TRAINBUS_CHECK_AS(CheckpointError, steps.size() == t.configured_schedulers_.size(),
                      "checkpoint ", path, " holds ", steps.size(),
                      " LR schedulers but configure_optimizers() returned ",
                      t.configured_schedulers_.size());
    for (size_t i = 0; i < t.configured_schedulers_.size(); ++i) {
      SchedulerStepCount::of(*t.configured_schedulers_[i].scheduler) =
          static_cast<unsigned>(steps.get(i));
    }
    c10::IValue scheduler_states;  // absent from checkpoints written before ReduceLROnPlateau
    if (archive.try_read("scheduler_states", scheduler_states)) {
      const auto states = scheduler_states.toListRef();
      for (size_t i = 0; i < t.configured_schedulers_.size() && i < states.size(); ++i) {
        auto* plateau =
            dynamic_cast<ReduceLROnPlateau*>(t.configured_schedulers_[i].scheduler.get());
        if (plateau == nullptr) continue;
        try {
          plateau->load_state_dict(StateDict::from_ivalue(states[i], "scheduler_states"));
        } catch (const std::exception& error) {
          throw CheckpointError(::trainbus::detail::concat(
              "checkpoint ", path, ": cannot restore LR scheduler ", i,
              " (a ReduceLROnPlateau now; was it another scheduler when saved?): ", error.what()));
        }
      }
    }
  } catch (const c10::Error& error) {
    throw CheckpointError(::trainbus::detail::concat(
        "checkpoint ", path,
        ": cannot restore the LR schedulers: ", first_line(error.what_without_backtrace())));
  }
}

}  // namespace trainbus
