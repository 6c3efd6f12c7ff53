#pragma once
/// ModelCheckpoint: Lightning's checkpoint saver (same options and behaviour), writing in the
/// background.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/arg.h"
#include "core/checkpoint_callback.h"

namespace trainbus::callbacks {

/// Lightning's ModelCheckpoint arguments and defaults.
struct ModelCheckpointOptions {
  /// Directory for the checkpoints; "" -> the first logger's log_dir/checkpoints, or
  /// `default_root_dir`/checkpoints without a logger (Lightning's, decided at setup: rank 0's
  /// directory on every rank).
  TRAINBUS_ARG(std::string, dirpath);
  /// Name template without extension: "{epoch}-{step}" by default; "{val_loss:.2f}" formats a
  /// metric (missing metrics are 0). ".ckpt" is appended.
  TRAINBUS_ARG(std::string, filename);
  /// Metric in callback_metrics to rank checkpoints by; "" -> keep the latest.
  TRAINBUS_ARG(std::string, monitor);
  TRAINBUS_ARG(bool, verbose) = false;
  /// Also keep `last.ckpt`: a copy (hard links of the parts) or a relative symlink to the newest
  /// save.
 public:
  enum class SaveLast { kNo, kCopy, kLink };
  TRAINBUS_ARG(SaveLast, save_last) = SaveLast::kNo;
  /// The k best by `monitor` are kept; -1 keeps all, 0 none. Without `monitor`: -1, 0 or 1 only.
  TRAINBUS_ARG(int64_t, save_top_k) = 1;
  /// Save a checkpoint (and `last`) when fit fails.
  TRAINBUS_ARG(bool, save_on_exception) = false;
  TRAINBUS_ARG(bool, save_weights_only) = false;
  /// "min" or "max".
  TRAINBUS_ARG(std::string, mode) = "min";
  /// "{val_loss:.2f}" becomes "val_loss=0.12"; false for metric names with '/'.
  TRAINBUS_ARG(bool, auto_insert_metric_name) = true;
  /// Triggers, mutually exclusive; none set -> every_n_epochs = 1.
  TRAINBUS_ARG(std::optional<int64_t>, every_n_train_steps);
  TRAINBUS_ARG(std::optional<std::chrono::milliseconds>, train_time_interval);
  TRAINBUS_ARG(std::optional<int64_t>, every_n_epochs);
  /// Save in on_train_epoch_end (true) or on_validation_end (false); unset: as Lightning decides.
  TRAINBUS_ARG(std::optional<bool>, save_on_train_epoch_end);
  /// A name already taken gets "-v1", "-v2", ...; false: overwrite.
  TRAINBUS_ARG(bool, enable_version_counter) = true;
  /// Write through the Trainer's background checkpoint writer (default); false: on the training
  /// thread.
  TRAINBUS_ARG(bool, async) = true;
  /// With `async`: have the snapshot's buffers prepared from a batch ahead of each save (and at
  /// train start for the first), so that the copy on the training thread runs at memory speed
  /// (trainer.checkpoints().prepare()). The same memory is used either way; false only for
  /// comparison.
  TRAINBUS_ARG(bool, prepare_ahead) = true;
};

/// Saves checkpoints during fit and keeps the best `save_top_k`. A new checkpoint is durable
/// before an evicted one is removed; the checkpoint fit resumed from and files outside `dirpath`
/// are never removed. Its own state (best_k_models, best_model_path, ...) is saved and restored.
/// `last` (a link or a copy) exists at every instant once the first save is durable: it is
/// replaced in one atomic exchange, whatever kind it was. At the start of fit it removes the
/// temporary entries (`*.ckpt.tmp-<pid>-<nonce>-<n>`) that no live writer holds in `dirpath`
/// (checkpoint::remove_stale_temporaries), and only those.
///
/// As Lightning (its fix of #20185): a step- or time-triggered save whose `monitor` is not logged
/// yet, or would be stale because validation runs right after this batch, is deferred to
/// on_validation_end, where it sees fresh metrics. With `save_last`, a run that ends after steps
/// no save has covered writes `last` in on_train_end, so `last` is always the final state.
class ModelCheckpoint : public CheckpointCallback {
 public:
  /// Throws MisconfigurationError for an invalid combination of options, as Lightning.
  explicit ModelCheckpoint(ModelCheckpointOptions options = {});

  static constexpr const char* kFileExtension = ".ckpt";
  static constexpr const char* kNameLast = "last";

  /// "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, ...}".
  std::string state_key() const override;
  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override;

  void setup(Trainer& trainer, Module& module, Stage stage) override;
  /// With `async` and `prepare_ahead`, also has the trainer prepare buffers for the first save.
  void on_train_start(Trainer& trainer, Module& module) override;
  /// With `async` and `prepare_ahead`: when this batch or the next ends in a save, has the trainer
  /// prepare its buffers.
  void on_train_batch_start(Trainer& trainer, Module& module, const Batch& batch,
                            int64_t batch_idx) override;
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override;
  void on_train_epoch_end(Trainer& trainer, Module& module) override;
  /// With `async` and `prepare_ahead`: when this validation ends in a save, has the trainer prepare
  /// its buffers meanwhile.
  void on_validation_start(Trainer& trainer, Module& module) override;
  void on_validation_end(Trainer& trainer, Module& module) override;
  void on_train_end(Trainer& trainer, Module& module) override;
  void on_exception(Trainer& trainer, Module& module, const std::exception& error) override;

  std::string best_model_path() const override { return best_model_path_; }
  std::string find_last_checkpoint() const override;

  const std::string& dirpath() const noexcept { return dirpath_; }
  std::optional<double> best_model_score() const noexcept { return best_model_score_; }
  /// Path -> score of the checkpoints kept by top-k.
  const std::map<std::string, double>& best_k_models() const noexcept { return best_k_models_; }
  const std::string& kth_best_model_path() const noexcept { return kth_best_model_path_; }
  const std::string& last_model_path() const noexcept { return last_model_path_; }
  std::optional<double> current_score() const noexcept { return current_score_; }

  /// The file name `filename` gives for these metrics, as Lightning's format_checkpoint_name.
  std::string format_checkpoint_name(const Metrics& metrics, const std::string& filename,
                                     std::optional<int64_t> version = std::nullopt) const;

 private:
  bool should_skip_saving(const Trainer& trainer) const;
  bool saves_on_train_epoch_end(const Trainer& trainer) const;
  bool saves_on_validation_end(const Trainer& trainer) const;  // an epoch-triggered save, that is
  bool saves_this_epoch(const Trainer& trainer) const;
  bool prepares_ahead() const;
  bool defers_to_validation(const Trainer& trainer, int64_t batch_idx) const;
  Metrics monitor_candidates(const Trainer& trainer) const;
  void save_topk_and_last(Trainer& trainer);
  void save_monitor_checkpoint(Trainer& trainer, const Metrics& metrics, double current);
  void save_none_monitor_checkpoint(Trainer& trainer, const Metrics& metrics);
  void save_last_checkpoint(Trainer& trainer, const Metrics& metrics);
  std::string interpolated_path(const Trainer& trainer, const Metrics& metrics,
                                const std::string& template_name,
                                const std::string& replacing = {}) const;
  std::string next_last_path(const Trainer& trainer, const Metrics& metrics,
                             std::vector<std::string>& remove_after);
  void save(Trainer& trainer, const Metrics& metrics, const std::string& path,
            std::vector<std::string> remove_after, bool with_last);
  void forget_replaced(const std::string& path);
  void update_best_and_kth();
  bool removable(const Trainer& trainer, const std::string& path) const;

  ModelCheckpointOptions options_;
  int64_t every_n_train_steps_ = 0;
  int64_t every_n_epochs_ = 1;
  std::string dirpath_;
  std::string resumed_from_;
  std::map<std::string, double> best_k_models_;
  std::string best_model_path_;
  std::optional<double> best_model_score_;
  std::string kth_best_model_path_;
  std::optional<double> kth_value_;
  std::string last_model_path_;
  std::optional<double> current_score_;
  std::string last_saved_path_;  // the newest checkpoint submitted (for `last`)
  int64_t last_global_step_saved_ = -1;
  bool save_deferred_to_validation_ = false;
  bool validation_ran_ = false;  // in this fit, sanity check aside: a missing monitor is an error
                                 // then  // a step/time-triggered save waits for on_validation_end
  std::chrono::steady_clock::time_point last_time_check_;
  std::set<std::string> submitted_;  // names taken by saves not yet on disk
};

/// Lightning's trainer.checkpoint_callback: the first ModelCheckpoint of `trainer`, or nullptr.
ModelCheckpoint* checkpoint_callback(const Trainer& trainer);
/// Lightning's trainer.checkpoint_callbacks: every ModelCheckpoint of `trainer`, in its order.
std::vector<ModelCheckpoint*> checkpoint_callbacks(const Trainer& trainer);

}  // namespace trainbus::callbacks
