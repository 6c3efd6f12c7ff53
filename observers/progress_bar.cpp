#include "observers/progress_bar.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace trainbus::observers {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string clock_text(double seconds) {
  const auto total = static_cast<long long>(std::max(0.0, seconds));
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld", total / 60, total % 60);
  return text;
}

void append_metrics(std::ostringstream& line, const Metrics& metrics) {
  line << std::fixed << std::setprecision(4);
  for (const auto& [name, value] : metrics) line << "  " << name << ' ' << value;
}

// `line` cut to at most `width` columns, never inside a UTF-8 character.
std::string fit_to(std::string line, std::size_t width) {
  if (line.size() <= width) return line;
  std::size_t cut = width;
  while (cut > 0 && (static_cast<unsigned char>(line[cut]) & 0xC0) == 0x80) --cut;
  line.resize(cut);
  return line;
}

// `line` on a terminal `width` columns wide: too long, it continues on indented lines, broken
// between two values (at their double space), not inside a name. Every line ends by erasing what
// was drawn after it.
std::string broken_for_terminal(std::string rest, std::size_t width) {
  std::string text;
  while (rest.size() > width) {
    std::size_t cut = rest.rfind("  ", width);
    if (cut == std::string::npos || cut <= 4) cut = width;
    text += rest.substr(0, cut) + "\x1b[K\n";
    rest = "    " + rest.substr(rest.find_first_not_of(' ', cut));
  }
  return text + rest + "\x1b[K\n";
}

// What a summary line shows of the prog_bar metrics: epoch means under their plain name, no
// per-step values.
Metrics epoch_view(const Metrics& progress_bar) {
  Metrics shown;
  for (const auto& [name, value] : progress_bar) {
    if (ends_with(name, "_step")) continue;
    shown[ends_with(name, "_epoch") ? name.substr(0, name.size() - 6) : name] = value;
  }
  return shown;
}

}  // namespace

ProgressBar::ProgressBar(ProgressBarOptions options)
    : out_(options.out() ? *options.out() : std::cout),
      terminal_(options.tty().value_or(::isatty(options.terminal_fd()) == 1)),
      redraw_(terminal_),
      options_(options) {}

void ProgressBar::attached(const events::Placement& placement) {
  redraw_ = terminal_ && placement.global_rank == 0;
  rank_mark_ = placement.global_rank == 0
                   ? std::string()
                   : "[rank: " + std::to_string(placement.global_rank) + "] ";
}

void ProgressBar::select_events(events::EventSelection& selection) const {
  selection.add<events::SanityCheckStart>()
      .add<events::SanityCheckEnd>()
      .add<events::TrainEpochStart>()
      .add<events::TrainBatchEnd>()
      .add<events::TrainEpochEnd>()
      .add<events::ValidationEpochStart>()
      .add<events::ValidationBatchEnd>()
      .add<events::ValidationEnd>()
      .add<events::TestEpochStart>()
      .add<events::TestBatchEnd>()
      .add<events::TestEpochEnd>();
}

std::string ProgressBar::summary_line(const std::string& label, int64_t done, int64_t total,
                                      double seconds, const Metrics& metrics) {
  std::ostringstream line;
  line << label << "  " << done << '/' << total << "  " << std::fixed << std::setprecision(1)
       << seconds << 's';
  append_metrics(line, metrics);
  return line.str();
}

void ProgressBar::start(std::string label, int64_t total) {
  label_ = std::move(label);
  total_ = total;
  done_ = 0;
  started_ = Clock::now();
  last_drawn_ = started_;
}

int ProgressBar::columns() const {
  if (options_.columns()) return *options_.columns();
  winsize size{};
  if (::ioctl(options_.terminal_fd(), TIOCGWINSZ, &size) == 0 && size.ws_col > 0)
    return size.ws_col;
  if (const char* env = std::getenv("COLUMNS")) {
    const int from_env = std::atoi(env);
    if (from_env > 0) return from_env;
  }
  return 80;
}

void ProgressBar::advance(int64_t done, const Metrics& progress_bar, bool force) {
  done_ = done;
  const auto now = Clock::now();
  const double since_drawn = std::chrono::duration<double>(now - last_drawn_).count();
  const double interval = redraw_ ? options_.refresh_seconds() : options_.plain_interval_seconds();
  if (!force && since_drawn < interval) return;
  if (!redraw_ && force) return;  // the summary line follows
  last_drawn_ = now;
  const double elapsed = std::chrono::duration<double>(now - started_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const int64_t percent = total_ > 0 ? done * 100 / total_ : 100;
  std::ostringstream head, counts, metrics;
  head << label_ << ' ' << std::setw(3) << percent << "% ";
  counts << done << '/' << total_ << "  " << std::fixed << std::setprecision(1) << rate
         << " it/s  ETA " << clock_text(rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0);
  // Built only for a line drawn (at most every refresh_seconds), not for every batch: the step
  // values, without the epoch means.
  Metrics shown;
  for (const auto& [name, value] : progress_bar) {
    if (!ends_with(name, "_epoch")) shown[name] = value;
  }
  append_metrics(metrics, shown);
  if (!redraw_) {
    print_line(head.str() + counts.str() + metrics.str());
    return;
  }
  // One column short of the width: a line that fills the last column wraps on many terminals.
  const std::size_t width = static_cast<std::size_t>(std::max(columns() - 1, 1));
  // The graphic takes what the numbers leave, up to 20 columns; below 10 it goes, then metrics are
  // cut.
  const std::string numbers = counts.str() + metrics.str();
  const std::size_t used = head.str().size() + numbers.size();
  const int bar_width =
      used + 13 <= width ? static_cast<int>(std::min<std::size_t>(20, width - used - 3)) : 0;
  std::string bar;
  if (bar_width > 0) {
    const auto filled = static_cast<int>(total_ > 0 ? done * bar_width / total_ : bar_width);
    bar = '[' + std::string(filled, '#') + std::string(bar_width - filled, '.') + "] ";
  }
  out_ << '\r' << fit_to(head.str() + bar + numbers, width) << "\x1b[K" << std::flush;
  drawn_ = true;
}

void ProgressBar::print_line(const std::string& text) {
  const std::string line = rank_mark_ + text;
  // One write, so that rank 0's redraws never land between its lines.
  out_ << (terminal_ ? '\r' + broken_for_terminal(line, summary_width()) : line + '\n')
       << std::flush;
}

std::size_t ProgressBar::summary_width() const {
  return static_cast<std::size_t>(std::max(columns() - 1, 20));
}

void ProgressBar::finish_line(const std::string& line) {
  if (!redraw_) {
    print_line(line);
    return;
  }
  out_ << (drawn_ ? "\r" : "") + broken_for_terminal(line, summary_width()) << std::flush;
  drawn_ = false;
}

void ProgressBar::on_train_epoch_start(const events::TrainEpochStart& event) {
  train_label_ = "epoch " + std::to_string(event.progress.epoch + 1);
  if (event.max_epochs > 0) train_label_ += "/" + std::to_string(event.max_epochs);
  start(train_label_, event.num_batches);
}

void ProgressBar::on_train_batch_end(const events::TrainBatchEnd& event) {
  advance(event.batch.batch_idx + 1, event.progress_bar, event.batch.batch_idx + 1 == total_);
}

void ProgressBar::on_train_epoch_end(const events::TrainEpochEnd& event) {
  const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
  finish_line(summary_line(train_label_, done_, total_, seconds, epoch_view(event.progress_bar)));
}

void ProgressBar::on_validation_epoch_start(const events::ValidationEpochStart& event) {
  // Validation inside an epoch draws over the training bar, then gives the line back.
  train_done_before_validation_ = done_;
  train_total_before_validation_ = total_;
  train_started_before_validation_ = started_;
  start(sanity_checking_ ? "sanity check" : "validating", event.num_batches);
}

void ProgressBar::on_validation_batch_end(const events::ValidationBatchEnd& event) {
  // Counted, not taken from batch_idx: with several val loaders each starts again from 0.
  if (redraw_) advance(done_ + 1, {}, false);
}

void ProgressBar::on_validation_end(const events::ValidationEnd& event) {
  if (redraw_ && drawn_) {
    out_ << "\r\x1b[K" << std::flush;
    drawn_ = false;
  }
  label_ = train_label_;
  done_ = train_done_before_validation_;
  total_ = train_total_before_validation_;
  started_ = train_started_before_validation_;
}

void ProgressBar::on_test_epoch_start(const events::TestEpochStart& event) {
  start("testing", event.num_batches);
}

void ProgressBar::on_test_batch_end(const events::TestBatchEnd& event) {
  // Counted across the test loaders, as validation's.
  advance(done_ + 1, {}, done_ + 1 == total_);
}

void ProgressBar::on_test_epoch_end(const events::TestEpochEnd& event) {
  const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
  finish_line(summary_line("test", done_, total_, seconds, event.metrics));
}

}  // namespace trainbus::observers
