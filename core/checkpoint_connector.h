#pragma once
/// CheckpointConnector: the Trainer's checkpoint machinery (Lightning's checkpoint connector):
/// snapshots of the running fit, the background writer and its buffers, and the restore half of
/// fit(ckpt_path). A user saves with trainer.save_checkpoint(); checkpoint callbacks reach the
/// rest through trainer.checkpoints().

#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/buffer_pool.h"
#include "checkpoint/writer.h"
#include "core/trainer_options.h"

namespace trainbus {

class Trainer;

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
  /// Saves of one series that supersede each other: a newer one of the same non-empty group
  /// replaces this one while it is pending; any other waits for it to start (see CheckpointJob).
  std::string replace_group;
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
  /// An asynchronous save is expected within about a step: prepares the memory its snapshot copies
  /// into on a background thread (allocated, every page touched), so that the copy on the training
  /// thread runs at memory speed. Optional: without it the save is the same, its copy may stall
  /// longer.
  void prepare();
  /// Blocks until every asynchronous save is durable, then raises a failed one as CheckpointError.
  void wait();
  /// The background writer, for stats; nullptr until the first asynchronous save.
  const checkpoint::CheckpointWriter* writer() const noexcept { return writer_.get(); }
  /// The checkpoint the running fit resumed from, or "" (checkpoint callbacks never delete it).
  const std::string& resumed_from() const noexcept { return resumed_from_; }

 private:
  friend class Trainer;
  using SnapshotBuffers = checkpoint::BufferPool<checkpoint::TensorBufferTraits>;

  void save(const std::string& path, SaveCheckpointOptions options);
  /// With `copies_into`, the snapshot holds private copies (made in those buffers); without, it
  /// references the live tensors and must be written before training goes on.
  std::unique_ptr<checkpoint::CheckpointSnapshot> take_snapshot(const std::string& path,
                                                                bool weights_only,
                                                                SnapshotBuffers* copies_into);
  checkpoint::CheckpointWriter& writer_for_saves();
  /// Raises the CheckpointError of a background save, if one failed (cheap: every batch).
  void check();
  std::exception_ptr wait_quietly();
  std::string resolve_ckpt_path(const std::string& ckpt_path) const;
  void restore_modules_and_callbacks(const checkpoint::LoadedCheckpoint& checkpoint);
  void restore_training_state(const checkpoint::LoadedCheckpoint& checkpoint);

  Trainer& trainer_;
  std::string resumed_from_;
  // Made by the first asynchronous save. The buffers outlive the writer, whose thread gives
  // snapshots' buffers back to them.
  std::unique_ptr<SnapshotBuffers> buffers_;
  std::unique_ptr<checkpoint::CheckpointWriter> writer_;
};

}  // namespace trainbus
