#pragma once
/// TensorBoardLogger: native `events.out.tfevents.*` files, written from C++, read by TensorBoard.

#include <cstdint>
#include <fstream>
#include <map>
#include <string>

#include "base/arg.h"
#include "observers/logger.h"

namespace trainbus::observers {

struct TensorBoardLoggerOptions {
  /// Run directory (TensorBoard's --logdir, or a subdirectory of it); created if missing.
  TRAINBUS_ARG(std::string, log_dir);
  TRAINBUS_ARG(int64_t, log_every_n_steps) = 50;
  /// Appended to the file name, as torch.utils.tensorboard's filename_suffix.
  TRAINBUS_ARG(std::string, filename_suffix);
};

/// Writes a TFRecord stream of tensorboard.Event protos: first `file_version = "brain.Event:2"`
/// (flushed at once), then one Event per logged row with a float scalar per metric and `epoch`
/// (none for values logged straight to the loggers, events::MetricsLogged). When fit resumes from a
/// checkpoint at step N it writes SessionLog{START} at step N, so that TensorBoard drops what the
/// interrupted run logged after N. Records are buffered and handed to the operating system at every
/// training epoch end, validation end, test end, end of fit and exception, and by the observer pool
/// at most events::ObserverOptions::flush_interval (1 s) after a record was written: a crash of the
/// process loses at most that last second (TensorBoard's own writers flush every 120 s). A torn
/// last record is skipped by readers. Throws std::runtime_error naming the file when it cannot
/// write. The event file is created in files_dir() when the logger is attached (or at its first
/// record, fed events without a pool): on a rank R > 0 (added with ObserverOptions::every_rank)
/// in log_dir/rank_R, which TensorBoard shows as a run of its own, with that rank's hparams.yaml.
class TensorBoardLogger : public Logger {
 public:
  explicit TensorBoardLogger(TensorBoardLoggerOptions options);

  /// The event file, in files_dir() (rank 0's until the logger is attached); created when the
  /// logger is attached, or at its first record.
  const std::string& file_path() const noexcept { return path_; }

  /// Hands the buffered records to the operating system.
  void flush() override;
  std::string log_dir() const override { return options_.log_dir(); }
  /// "TensorBoardLogger(<log_dir>)": unique among the loggers of a run (Trainer::loggers()).
  std::string name() const override { return "TensorBoardLogger(" + options_.log_dir() + ")"; }

 protected:
  void log_metrics(const Metrics& metrics, int64_t step, int64_t epoch) override;
  void resume_at(int64_t step) override;
  /// As Lightning's TensorBoardLogger: the hyper-parameters in hparams.yaml beside the event file,
  /// and in the event file for TensorBoard's HPARAMS tab (the hparams plugin's session start info;
  /// TensorBoard shows the first a run wrote, as with Lightning's).
  void log_hyperparams(const std::map<std::string, std::string>& hparams) override;
  /// Creates `dir` and the event file in it.
  void open_files_in(const std::string& dir) override;

 private:
  /// Creates `dir` and the event file there, starting with the file_version record; then dir_ and
  /// path_ name them (unchanged when it throws).
  void create_file(const std::string& dir);
  void write_record(const std::string& payload);

  TensorBoardLoggerOptions options_;
  std::string file_name_;  // events.out.tfevents.<time>.<host>.<pid>.<n><suffix>
  std::string dir_;        // files_dir(): path_'s directory
  std::string path_;
  std::ofstream file_;
};

}  // namespace trainbus::observers
