#pragma once
/// ReplaySession: drives Callbacks and Observers through a recorded run, without a model or data,
/// to ask after the fact what they decide ("would patience 5 have stopped earlier?", "which
/// checkpoints would top-3 keep?") or to regenerate logs.

#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/callback.h"
#include "core/trainer.h"
#include "core/trainer_options.h"
#include "events/all.h"

namespace trainbus::record {
class RecordingReader;
}

namespace trainbus::replay {

/// A callback's exception while replaying, naming the record it replayed.
class ReplayError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A decision of a run: a stop request, a checkpoint saved or removed.
struct Decision {
  enum class Kind { kStop, kSave, kRemove };
  Kind kind = Kind::kStop;
  events::Progress progress;
  /// The stop's reason, or the checkpoint's path.
  std::string what;
  /// A save's ranking: the monitored metric and its value ("" and NaN for an unranked save).
  std::string monitor;
  double score = std::numeric_limits<double>::quiet_NaN();
};

/// Publishes a recording's events, in order, on a Trainer in replay mode (Trainer::replaying):
/// for each event it sets the trainer's state to the recorded one (current_epoch, global_step,
/// callback_metrics, logged and progress-bar metrics, loop sizes, stop requests, the stage and
/// phase), calls the callbacks' matching hook as the live loop did, then publishes the event on
/// the trainer's bus, where observers (CSV, TensorBoard, a progress bar) take it as they would
/// live.
///
/// The module is a stand-in without layers: a hook that needs the model (a step, configure_
/// optimizers) gets a ReplayError naming the hook. Checkpoint saves are dry runs, kept as
/// decisions(); nothing on disk is written or removed, and a name is taken only by a dry-run save
/// (the live run may have met older files and named its checkpoints "-v1"). Batches are empty
/// tensors of the recorded batch size; a training batch's outputs hold the recorded loss.
/// Callback state is what the replayed events build up, except when the recorded run resumed from
/// a checkpoint: the callbacks' states (and the loop progress) are then read from that checkpoint
/// if it still exists (a warning says when it does not). NOTE: a restored state holds the live
/// callback's options where it keeps them (EarlyStopping's patience), as Lightning's does.
/// trainer.optimizers() holds one stand-in optimizer without parameters, at the recorded learning
/// rate; trainer.datamodule() is null. A ModelCheckpoint with train_time_interval is refused (the
/// replay has no training time).
///
/// Training thread only, like the Trainer.
class ReplaySession {
 public:
  /// `options` and `callbacks` as the live run's Trainer took them (or others, for a what-if).
  explicit ReplaySession(TrainerOptions options = {},
                         std::vector<std::shared_ptr<Callback>> callbacks = {});
  ~ReplaySession();
  ReplaySession(const ReplaySession&) = delete;
  ReplaySession& operator=(const ReplaySession&) = delete;

  /// The trainer in replay mode: add_observer() on it, read its state from a callback.
  Trainer& trainer() noexcept { return trainer_; }

  /// Replays every event `reader` has left, in order; returns how many. Throws ReplayError for a
  /// callback's exception, naming the record, event, epoch and step.
  uint64_t replay(record::RecordingReader& reader);

  /// Replays one event (for a recording read some other way, or a test).
#define TRAINBUS_DETAIL_DECLARE_REPLAY(Type, hook) void replay(const events::Type& event);
  TRAINBUS_FOR_EACH_EVENT(TRAINBUS_DETAIL_DECLARE_REPLAY)
#undef TRAINBUS_DETAIL_DECLARE_REPLAY

  /// Waits for the observers to handle everything replayed (raising a failure of theirs) and
  /// leaves the trainer idle. The destructor does it too, quietly.
  void finish();

  /// What the replayed callbacks decided, in order: stop requests and dry-run saves (a save's
  /// removals follow it).
  std::vector<Decision> decisions() const;
  /// What the live run decided, as recorded: StopRequested, CheckpointCommitted and
  /// CheckpointRemoved events.
  const std::vector<Decision>& recorded_decisions() const noexcept { return recorded_; }
  /// Events replayed so far.
  uint64_t events_replayed() const noexcept { return events_; }

 private:
  class StandInModule;
  template <class Event, class Hook>
  void dispatch(const Event& event, const char* hook_name, Hook&& hook,
                const std::vector<std::shared_ptr<Callback>>* order = nullptr);
  template <class Event>
  void publish(const Event& event);
  void begin_stage(Stage stage);
  void set_progress(const events::Progress& progress);
  void restore_callbacks_from(const std::string& checkpoint_path);

  Trainer trainer_;
  std::string current_hook_;  // the hook running, for the stand-in module's errors
  // A format 1 recording: it may come from before FitStart and TrainEpochStart carried
  // num_val_batches (0 there), which the fit's first validation then gives.
  bool val_batches_unrecorded_ = false;
  std::unique_ptr<StandInModule> module_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;      // the stand-in hooks receive
  std::vector<std::shared_ptr<Callback>> epoch_end_order_;  // monitoring callbacks last
  std::vector<Decision> recorded_;
  std::vector<std::pair<std::size_t, Decision>> stops_;  // with the dry-run saves made before
  std::vector<std::string> pending_stops_;               // recorded, not applied yet (see dispatch)
  uint64_t events_ = 0;
  bool attached_ = false;
};

}  // namespace trainbus::replay
