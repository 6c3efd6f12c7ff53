#pragma once
/// CsvLogger: metrics.csv and hparams.yaml in a run directory, in Lightning CSVLogger's layout.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/arg.h"
#include "observers/logger.h"

namespace trainbus::observers {

struct CsvLoggerOptions {
  /// Run directory; created if missing (see next_version_dir) when the logger is attached or first
  /// writes, not when it is constructed.
  TRAINBUS_ARG(std::string, log_dir);
  TRAINBUS_ARG(int64_t, log_every_n_steps) = 50;
  /// Rows kept in memory before they are appended to the file (Lightning: 100); epoch ends,
  /// validation, test and the end of fit flush too.
  TRAINBUS_ARG(int64_t, flush_logs_every_n_steps) = 100;
};

/// One row per log_metrics call: the logged names as columns (sorted), plus `epoch` and `step`;
/// an empty cell where a row has no value. When a new name appears the file is rewritten with
/// the wider header, as Lightning's CSVLogger does. Throws std::runtime_error naming the file
/// when it cannot be written. Its files are in files_dir(): on a rank R > 0 (added with
/// ObserverOptions::every_rank) log_dir/rank_R/metrics.csv and hparams.yaml, beside rank 0's.
class CsvLogger : public Logger {
 public:
  explicit CsvLogger(CsvLoggerOptions options);

  /// files_dir()'s metrics.csv and hparams.yaml (rank 0's until the logger is attached).
  const std::string& metrics_file() const noexcept { return metrics_file_; }
  const std::string& hparams_file() const noexcept { return hparams_file_; }

  /// Appends the rows logged since the last flush to metrics.csv (widening its header if needed).
  void flush() override;
  std::string log_dir() const override { return options_.log_dir(); }
  /// "CsvLogger(<log_dir>)": unique among the loggers of a run (Trainer::loggers()).
  std::string name() const override { return "CsvLogger(" + options_.log_dir() + ")"; }

 protected:
  void log_metrics(const Metrics& metrics, int64_t step, int64_t epoch) override;
  void log_hyperparams(const std::map<std::string, std::string>& hparams) override;
  /// Creates `dir` and continues the metrics.csv there, if any (use_dir).
  void open_files_in(const std::string& dir) override;

 private:
  using Row = std::map<std::string, std::string>;
  /// Creates `dir`, where metrics.csv (continuing one there: its header is read) and hparams.yaml
  /// go from now on. Changes nothing when it throws.
  void use_dir(const std::string& dir);
  void rewrite_with(const std::vector<std::string>& columns);

  CsvLoggerOptions options_;
  std::string dir_;         // files_dir(): where metrics_file_ and hparams_file_ are
  bool dir_ready_ = false;  // dir_ created and metrics.csv's header read (use_dir)
  std::string metrics_file_;
  std::string hparams_file_;
  std::vector<std::string> columns_;  // sorted; those of the file's header
  std::vector<Row> pending_;
};

}  // namespace trainbus::observers
