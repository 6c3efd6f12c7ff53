#pragma once
/// CheckpointConnector: the Trainer's checkpoint machinery (Lightning's checkpoint connector):
/// snapshots of the running fit, the background writer and its buffers, and the restore half of
/// fit(ckpt_path). A user saves with trainer.save_checkpoint(); checkpoint callbacks reach the
/// rest through trainer.checkpoints().

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/buffer_pool.h"
#include "checkpoint/writer.h"
#include "core/trainer_options.h"
#include "events/common.h"

namespace trainbus {

class Trainer;
namespace replay {
class ReplaySession;
}

namespace detail {
enum class SavePhase;
}
namespace checkpoint {
struct CheckpointSnapshot;
struct LoadedCheckpoint;
struct TensorBufferTraits;
}  // namespace checkpoint

/// An asynchronous save by a checkpoint callback, and what follows it once it is durable.
struct CheckpointRequest {
  std::string path;
  /// Only the model's weights and buffers (Lightning's save_weights_only).
  bool weights_only = false;
  /// Removed once this checkpoint is durable (top-k evictions).
  std::vector<std::string> remove_after_commit;
  /// Runs on the writer thread once this checkpoint is durable (updating `last`, say).
  std::function<void(const std::string& path)> after_commit;
  /// after_commit is made of checkpoint file steps only (checkpoint::link_checkpoint,
  /// copy_checkpoint_as_links, remove_checkpoint), called on the thread it runs on (the steps are
  /// counted per thread): under DDP a disk stuck in it then fails the job after the collective
  /// timeout, as one stuck in the write does. Leave false for a hook that may take long without a
  /// file step (an upload): it is waited for however long it takes.
  bool after_commit_makes_file_steps = false;
  /// Saves of one series that supersede each other: a newer one of the same non-empty group
  /// replaces this one while it is pending; any other waits for it to start (see CheckpointJob).
  std::string replace_group;
  /// Under DDP, what names this save alike on every rank: its hash is part of the ranks'
  /// agreement, so that ranks in different saves of one step (a save of one's own on some ranks
  /// beside a checkpoint callback's) fail instead of pairing up. Empty: the file name of `path`
  /// (its directory may differ between ranks: only rank 0 writes). Trainer::save_checkpoint
  /// names its saves "save_checkpoint" (or SaveCheckpointOptions::agreement_name) and a
  /// checkpoint callback by its state key, as their file names may differ between ranks (a
  /// timestamp, a version suffix for a file that only rank 0's disk holds, a metric not reduced).
  std::string agreement_name;
  /// What the checkpoint callback ranks it by, for the CheckpointCommitted event ("" and NaN for
  /// a save that is not ranked).
  std::string monitor;
  double score = std::numeric_limits<double>::quiet_NaN();
};

/// A save a trainer in replay mode did not make (see Trainer::replaying): what a checkpoint
/// callback decided, for comparing with the live run.
struct DryRunSave {
  events::Progress progress;
  std::string path;
  std::string monitor;
  double score = std::numeric_limits<double>::quiet_NaN();
  /// Checkpoints it would have removed once it was durable.
  std::vector<std::string> removes;
};

/// Lives in the Trainer, on the training thread (its writer runs saves on threads of its own).
class CheckpointConnector {
 public:
  explicit CheckpointConnector(Trainer& trainer);
  ~CheckpointConnector();
  CheckpointConnector(const CheckpointConnector&) = delete;
  CheckpointConnector& operator=(const CheckpointConnector&) = delete;

  /// For checkpoint callbacks: copies the running fit's state now and writes it in the background
  /// (see Trainer::save_checkpoint). Returns the path of a pending save it replaced (never
  /// written), if any. Throws the CheckpointError of an earlier background save that failed.
  std::optional<std::string> submit(CheckpointRequest request);
  /// Like submit(), but writes on the calling thread (after every pending save), then runs
  /// after_commit and removes remove_after_commit. Throws CheckpointError if the write fails.
  void save_now(CheckpointRequest request);
  /// An asynchronous save is expected within about a step: prepares the memory its snapshot copies
  /// into on a background thread (allocated, every page touched), so that the copy on the training
  /// thread runs at memory speed. Optional: without it the save is the same, its copy may stall
  /// longer.
  void prepare();
  /// Blocks until every asynchronous save is durable, then raises a failed one as CheckpointError.
  /// Publishes the CheckpointCommitted and CheckpointRemoved events of the saves that landed.
  void wait();
  /// For checkpoint callbacks: removes the checkpoint at `path` now (nothing in a replay, nor on
  /// a rank other than 0).
  void remove(const std::string& path);
  /// Whether a checkpoint (or anything) is at `path`; in a replay, whether a dry-run save put one
  /// there and none removed it (the disk is never looked at then).
  bool exists(const std::string& path) const;
  /// In a replay: every save the checkpoint callbacks asked for, in order (nothing is written).
  const std::vector<DryRunSave>& dry_run_saves() const noexcept { return dry_run_saves_; }
  /// The background writer, for stats; nullptr until the first asynchronous save.
  const checkpoint::CheckpointWriter* writer() const noexcept { return writer_.get(); }
  /// The checkpoint the running fit resumed from, or "" (checkpoint callbacks never delete it).
  const std::string& resumed_from() const noexcept { return resumed_from_; }
  /// The checkpoint the last validate, test or predict loaded its weights from (its ckpt_path,
  /// resolved), or "".
  const std::string& evaluated_from() const noexcept { return evaluated_from_; }

 private:
  friend class Trainer;
  friend class replay::ReplaySession;  // sets resumed_from_ as the recorded run had it
  using SnapshotBuffers = checkpoint::BufferPool<checkpoint::TensorBufferTraits>;

  void save(const std::string& path, SaveCheckpointOptions options);
  /// Lightning's dump_checkpoint, on every rank: the checkpoint's data (referencing the live
  /// tensors), every callback's state_dict(), then the callbacks' and the module's
  /// on_save_checkpoint.
  std::unique_ptr<checkpoint::CheckpointSnapshot> dump_checkpoint(const std::string& path,
                                                                  bool weights_only);
  /// Rank 0's save: dump_checkpoint, then the parts to write. With `copies_into`, the snapshot
  /// holds private copies (made in those buffers); without, it references the live tensors and
  /// must be written before training goes on. With `announce`, publishes SaveCheckpoint (under
  /// DDP that waits for the ranks' agreement: announce_save).
  std::unique_ptr<checkpoint::CheckpointSnapshot> take_snapshot(const std::string& path,
                                                                bool weights_only,
                                                                SnapshotBuffers* copies_into,
                                                                bool announce);
  /// Publishes SaveCheckpoint: the save at `path` is laid out and going to be written.
  void announce_save(const std::string& path);
  checkpoint::CheckpointWriter& writer_for_saves();
  /// Raises the CheckpointError of a background save, if one failed (cheap: every batch).
  void check();
  std::exception_ptr wait_quietly();
  /// The start of a run: nothing of the last run's is kept (a writer it found stuck is waited for
  /// again, with the whole limit).
  void begin_run();
  /// The end of a run: wait(), but under DDP throws a CheckpointError (also warned at once,
  /// naming the rank) once the writer made no progress in its file work for the collective timeout:
  /// the other ranks have ended, nothing else would stop rank 0's wait.
  void finish();
  /// The end of a failing run: wait_quietly(), but under DDP not for a writer that made no
  /// progress in its file work for the collective timeout (warned), nor again for one that this run
  /// found stuck and that has not moved since.
  std::exception_ptr finish_quietly();
  /// finish_quietly() leaving a stuck writer: publishes the commits of the saves that landed and
  /// returns an earlier save's failure the writer holds, if any.
  std::exception_ptr left_stuck_quietly();
  /// Says on stderr that a subscriber of the checkpoint events failed (`error`) where
  /// `raised_instead` is the error raised (the event it threw on is published again later).
  void warn_dropped_subscriber_error(std::exception_ptr error,
                                     std::string_view raised_instead) const;
  /// Under DDP, how long rank 0's writer may go without progress in its file work (a write, `last`,
  /// evictions) while rank 0 waits for it: the strategy's collective_timeout. None on one process.
  std::optional<std::chrono::milliseconds> writer_stall_limit() const;
  /// A writer judged stuck: for how long it had made no progress, the reading judged so, and the
  /// path of the save it was stuck in ("" for none), read while that reading held.
  struct WriterStall {
    std::chrono::steady_clock::duration stalled;
    checkpoint::WriteActivity at;
    std::string path;
  };
  /// Rank 0: waits until the writer is idle; under DDP stops waiting once it made no progress in
  /// its file work for writer_stall_limit() (and was still not idle just after), and returns that.
  std::optional<WriterStall> wait_for_writer_while_it_moves();
  /// Rank 0's writer made no progress for `stall.stalled` while `waiting_save` (at `step`; "" at
  /// the end of a run) waited for it: notes the reading judged stuck (stuck_), warns, and
  /// returns the error to raise. `every_rank_waits`: the other ranks wait with it (a save's
  /// agreement).
  std::exception_ptr writer_stuck(const std::string& waiting_save, int64_t step,
                                  const WriterStall& stall, bool every_rank_waits = true);
  /// Rank 0, a save without agreement rounds (one process, a failing run): wait(), but under
  /// DDP bound as finish() is (a writer this run found stuck that has not moved since fails it at
  /// once).
  void wait_for_earlier_saves(const std::string& path);
  /// Under DDP: whether this run found rank 0's writer stuck and it has not moved since.
  bool still_stuck() const;
  /// The error of a save at `path` that would wait for a writer still_stuck().
  std::exception_ptr still_stuck_error(const std::string& path) const;
  /// Training thread: publishes the events of the commits the writer thread noted.
  void publish_commits();
  void dry_run(const CheckpointRequest& request);
  /// Rank 0's synchronous save, once the ranks agreed: writes `snapshot`, then after_commit and
  /// the removals, and notes the commit.
  void write_now(const CheckpointRequest& request,
                 std::unique_ptr<checkpoint::CheckpointSnapshot> snapshot);
  /// Whether saves are agreed across ranks: under DDP, unless the run is failing.
  bool agrees_on_saves() const;
  /// A save under DDP has two phases (as Lightning's Trainer.save_checkpoint, every rank runs
  /// the hooks and rank 0 alone writes): every rank runs its hooks (rank 0 also takes its
  /// snapshot), then the ranks agree here, in one all-reduce, that every part went well; only
  /// then does rank 0 write or queue it, and evict older checkpoints. A synchronous save agrees
  /// again after the write (kWritten). `failed` (this rank's error) is rethrown; a rank whose
  /// part went well throws a distributed::AnotherRankFailedError naming the first rank that
  /// failed, at once rather than at the timeout. The values carry the phase, the global step and
  /// the hash of the request's agreement_name: ranks that are not in the same save (one called
  /// save_checkpoint and another did not) throw a DistributedError that says save_checkpoint
  /// must be called on every rank.
  /// `rank_zero_ready`, on rank 0: waits at most the given time for what rank 0 must wait for
  /// before it goes on (its writer's earlier saves, or room in its queue) and returns whether that
  /// is done; it may throw (an earlier save's failure: this rank's part failed). While it is not
  /// done, the ranks agree again, every kWriterWaitRound, until the writer has made no progress in
  /// a write for writer_stall_limit() (then rank 0's part fails with a CheckpointError saying its
  /// disk is stuck, and every rank learns it in that round). Without agreement (one process, a
  /// failing run): only waits for it, and rethrows; under DDP that wait fails as well once the
  /// writer made no progress in its file work for writer_stall_limit(), or at once if
  /// still_stuck(). `waits_for_room`: rank_zero_ready waits for room in the writer's queue (an
  /// asynchronous save), for the warning after a minute.
  void agree_on_save(const CheckpointRequest& request, std::exception_ptr failed,
                     detail::SavePhase phase,
                     const std::function<bool(std::chrono::milliseconds)>& rank_zero_ready = {},
                     bool waits_for_room = false);
  std::function<void(const std::string&, const std::vector<std::string>&)> commit_notifier(
      const CheckpointRequest& request);
  // "last" / "best" as the path of a checkpoint; rank 0's under DDP (a collective there), so
  // every rank must call it at the same point.
  std::string resolve_ckpt_path(const std::string& ckpt_path) const;
  // "last" / "best" as this process finds it through the checkpoint callbacks.
  std::string find_named_checkpoint(const std::string& ckpt_path) const;
  /// Runs the on_load_checkpoint hooks, which may change `checkpoint` before anything of it is
  /// applied.
  void restore_modules_and_callbacks(checkpoint::LoadedCheckpoint& checkpoint);
  /// validate/test/predict with a ckpt_path: the module's on_load_checkpoint, then the module's
  /// weights and the data module's state from it (not the callbacks' nor the loops', as
  /// Lightning). Empty: nothing.
  void load_for_evaluation(const std::string& ckpt_path);
  /// The module's weights from `checkpoint`; CheckpointError naming the path if they do not fit.
  void restore_module_weights(const checkpoint::LoadedCheckpoint& checkpoint);
  /// The loops' progress, the RNG, the train loader's position and the callback metrics.
  void restore_training_state(const checkpoint::LoadedCheckpoint& checkpoint);
  /// The optimizers' states (their param groups' options included) and the schedulers' steps:
  /// after on_fit_start, as Lightning, so that a callback can rebuild the param groups a
  /// checkpoint's optimizer had (BaseFinetuning) before they are loaded into.
  void restore_optimizers(const checkpoint::LoadedCheckpoint& checkpoint);

  Trainer& trainer_;
  std::string resumed_from_;
  std::string evaluated_from_;
  // Between restore_training_state and restore_optimizers (on_fit_start): a save now would pair
  // the restored progress with fresh optimizers, so it is refused.
  bool optimizers_pending_ = false;
  // Commits noted on the writer thread, published on the training thread (check(), wait()).
  // Before writer_: a save still pending when the writer is destroyed notes its commit here.
  struct Commit {
    events::Progress progress;
    std::string path;
    int64_t bytes = 0;
    std::string monitor;
    double score = 0.0;
    std::vector<std::string> removed;
  };
  std::mutex commits_mutex_;
  std::vector<Commit> commits_;
  std::atomic<bool> has_commits_{false};

  // Made by the first asynchronous save. The buffers outlive the writer, whose thread gives
  // snapshots' buffers back to them.
  std::unique_ptr<SnapshotBuffers> buffers_;
  std::unique_ptr<checkpoint::CheckpointWriter> writer_;
  // What rank 0's writer was doing when this run found it stuck (no progress in its file work for
  // the collective timeout): a failing run's end does not wait for it again while it has not moved.
  // Reset by begin_run.
  std::optional<WriterStall> stuck_;

  std::vector<DryRunSave> dry_run_saves_;
  std::set<std::string> dry_run_paths_;  // what the dry-run saves left on the "disk"
};

}  // namespace trainbus
