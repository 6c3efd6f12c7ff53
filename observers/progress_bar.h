#pragma once
/// ProgressBar: the terminal progress of training, validation and test, as an observer.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "base/arg.h"
#include "events/observer.h"

namespace trainbus::observers {

struct ProgressBarOptions {
  /// Where it draws; std::cout by default.
  TRAINBUS_ARG(std::ostream*, out) = nullptr;
  /// Whether `out` is a terminal: redraw in place (\r) when true (on rank 0 or one process), print
  /// plain lines when false; unset: isatty(terminal_fd).
  TRAINBUS_ARG(std::optional<bool>, tty);
  /// Least time between two redraws on a terminal.
  TRAINBUS_ARG(double, refresh_seconds) = 0.1;
  /// Least time between two plain progress lines when not on a terminal (CI logs, pipes).
  TRAINBUS_ARG(double, plain_interval_seconds) = 30.0;
  /// The terminal `out` writes to, asked for its width (TIOCGWINSZ) at every redraw, so that the
  /// bar follows a resized window.
  TRAINBUS_ARG(int, terminal_fd) = 1;
  /// Width of the redrawn line; unset: the terminal's, else $COLUMNS, else 80.
  TRAINBUS_ARG(std::optional<int>, columns);
};

/// Shows epoch, batch/total, it/s, ETA and the prog_bar metrics (as Lightning 2: values logged with
/// prog_bar=true; the loss only if the module logs it so), and prints one summary line per epoch
/// (train epoch means and validation results) and per test. On a terminal it redraws one line in
/// place, cut to the terminal's width (the bar graphic shrinks and goes first, then the metrics
/// that do not fit are cut), so that a redraw never wraps into a new line; elsewhere it prints a
/// plain line at most every plain_interval_seconds. It is an observer: drawing never slows the
/// training step. In data-parallel training it draws on rank 0, as Lightning's (whose bar disables
/// itself on the other ranks); added with ObserverOptions::every_rank it also runs on the other
/// ranks, where it never redraws (see attached).
class ProgressBar : public events::Observer {
 public:
  explicit ProgressBar(ProgressBarOptions options = {});

  bool is_progress_bar() const override { return true; }
  /// Where it runs. On a rank R > 0 (added with ObserverOptions::every_rank) it never redraws in
  /// place, which would draw over rank 0's bar on the terminal the ranks share: it prints plain
  /// lines as off a terminal (progress at most every plain_interval_seconds, the epoch and test
  /// summaries), each marked "[rank: R] " as Lightning marks a rank's messages. On a terminal
  /// each is written at once from the start of the line, erasing what rank 0's bar drew there
  /// (rank 0 redraws on the line below) instead of running on after it, and broken to the width
  /// as a summary line. On rank 0 and one process it draws as its options say.
  void attached(const events::Placement& placement) override;

  void select_events(events::EventSelection& selection) const override;
  void on_sanity_check_start(const events::SanityCheckStart& event) override {
    sanity_checking_ = true;
  }
  void on_sanity_check_end(const events::SanityCheckEnd& event) override {
    sanity_checking_ = false;
  }
  void on_train_epoch_start(const events::TrainEpochStart& event) override;
  void on_train_batch_end(const events::TrainBatchEnd& event) override;
  void on_train_epoch_end(const events::TrainEpochEnd& event) override;
  void on_validation_epoch_start(const events::ValidationEpochStart& event) override;
  void on_validation_batch_end(const events::ValidationBatchEnd& event) override;
  void on_validation_end(const events::ValidationEnd& event) override;
  void on_test_epoch_start(const events::TestEpochStart& event) override;
  void on_test_batch_end(const events::TestBatchEnd& event) override;
  void on_test_epoch_end(const events::TestEpochEnd& event) override;

  /// "epoch 3/15  860/860  1.4s  train_loss 0.3120  val_acc 0.8790": the summary line of an epoch.
  static std::string summary_line(const std::string& label, int64_t done, int64_t total,
                                  double seconds, const Metrics& metrics);

 private:
  using Clock = std::chrono::steady_clock;
  void start(std::string label, int64_t total);
  // Moves the bar to `done` and redraws it when due, with the step values of `progress_bar`.
  void advance(int64_t done, const Metrics& progress_bar, bool force);
  void finish_line(const std::string& line);
  // A line that stays: as it is off a terminal; on a terminal (a rank R > 0's: it does not redraw)
  // from the start of the line, broken to the width as a summary line. Marked with the rank.
  void print_line(const std::string& text);
  // Where a summary line on a terminal is broken.
  std::size_t summary_width() const;
  int columns() const;

  std::ostream& out_;
  bool terminal_;  // `out_` is a terminal (ProgressBarOptions::tty)
  bool redraw_;    // redraws one line in place: on a terminal, on rank 0 or one process
  // Starts every plain line: "" on rank 0 and one process, "[rank: R] " on a rank R > 0.
  std::string rank_mark_;
  ProgressBarOptions options_;
  bool sanity_checking_ = false;
  std::string label_;
  std::string train_label_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  Clock::time_point started_;
  // The training bar while a validation inside the epoch draws over it.
  int64_t train_done_before_validation_ = 0;
  int64_t train_total_before_validation_ = 0;
  Clock::time_point train_started_before_validation_;
  Clock::time_point last_drawn_;
  bool drawn_ = false;
};

}  // namespace trainbus::observers
