// ProgressBar: in-place redraws on a terminal, plain lines elsewhere, one summary line per epoch.
#include "observers/progress_bar.h"

#include <pty.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <ext/stdio_filebuf.h>

#include <algorithm>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "events/observer_pool.h"

using namespace trainbus;
using namespace trainbus::observers;

namespace {

void run_epoch(ProgressBar& bar, int64_t batches) {
  bar.on_train_epoch_start(events::TrainEpochStart{{0, 0}, batches, 3});
  for (int64_t i = 0; i < batches; ++i) {
    events::TrainBatchEnd end;
    end.progress = {0, i + 1};
    end.batch.batch_idx = i;
    end.loss = 0.5;
    end.progress_bar = {{"train_acc_step", 0.75}};
    bar.on_train_batch_end(end);
  }
  bar.on_validation_epoch_start(events::ValidationEpochStart{{0, batches}, 2});
  bar.on_validation_batch_end(events::ValidationBatchEnd{});
  bar.on_validation_end(events::ValidationEnd{});
  events::TrainEpochEnd epoch_end;
  epoch_end.progress_bar = {{"train_acc_epoch", 0.8}, {"train_acc_step", 0.75}, {"val_acc", 0.7}};
  bar.on_train_epoch_end(epoch_end);
}

}  // namespace

TEST_CASE("Off a terminal the bar prints one plain summary line per epoch",
          "[observers][progress]") {
  std::ostringstream out;
  ProgressBarOptions options;
  options.out(&out);
  options.tty(false);
  ProgressBar bar(options);
  run_epoch(bar, 5);
  const std::string text = out.str();
  CHECK(text.find('\r') == std::string::npos);
  CHECK(text.rfind("epoch 1/3  5/5  ", 0) == 0);
  CHECK_THAT(text, Catch::EndsWith("s  train_acc 0.8000  val_acc 0.7000\n"));
}

TEST_CASE("Off a terminal, a long epoch also gets periodic progress lines",
          "[observers][progress]") {
  std::ostringstream out;
  ProgressBarOptions options;
  options.out(&out);
  options.tty(false);
  options.plain_interval_seconds(0.0);
  ProgressBar bar(options);
  run_epoch(bar, 3);
  CHECK_THAT(out.str(), Catch::StartsWith("epoch 1/3  33% 1/3  ") &&
                                Catch::Contains(" it/s  ETA ") &&
                                Catch::EndsWith(" it/s  ETA 0:00  train_acc_step 0.7500\n") ||
                            Catch::Contains("ETA 0:00  train_acc_step 0.7500\n"));
  // Only what the module logs with prog_bar=true, as Lightning 2: no automatic loss beside it.
  CHECK_THAT(out.str(), !Catch::Contains("loss"));
}

TEST_CASE("On a terminal the bar redraws one line in place", "[observers][progress]") {
  std::ostringstream out;
  ProgressBarOptions options;
  options.out(&out);
  options.tty(true);
  options.columns(200);
  options.refresh_seconds(0.0);
  ProgressBar bar(options);
  run_epoch(bar, 4);
  const std::string text = out.str();
  CHECK_THAT(text, Catch::StartsWith("\repoch 1/3  25% [#####...............] 1/4"));
  CHECK_THAT(text, Catch::Contains("\rvalidating  50% [##########..........] 1/2"));
  CHECK_THAT(text, Catch::EndsWith("train_acc 0.8000  val_acc 0.7000\x1b[K\n"));
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
}

TEST_CASE("The epoch summary line", "[observers][progress]") {
  CHECK(ProgressBar::summary_line("epoch 3/15", 860, 860, 1.43,
                                  {{"train_loss", 0.312}, {"val_acc", 0.879}}) ==
        "epoch 3/15  860/860  1.4s  train_loss 0.3120  val_acc 0.8790");
}

namespace {

// What a redraw shows: the text of every "\r...\x1b[K" not followed by a newline (summary lines,
// which stay on screen, may be longer than the terminal and wrap).
std::vector<std::string> redraws(const std::string& screen) {
  std::vector<std::string> lines;
  for (std::size_t start = screen.find('\r'); start != std::string::npos;
       start = screen.find('\r', start + 1)) {
    const std::size_t end = screen.find("\x1b[K", start);
    if (end == std::string::npos) break;
    // A terminal turns "\n" into "\r\n" (ONLCR).
    const bool finished =
        screen.compare(end + 3, 2, "\r\n") == 0 || screen.compare(end + 3, 1, "\n") == 0;
    if (!finished && end > start + 1) lines.push_back(screen.substr(start + 1, end - start - 1));
  }
  return lines;
}

}  // namespace

TEST_CASE("In an 80-column terminal every redraw fits its line, and follows a resize",
          "[observers][progress]") {
  int master = -1, slave = -1;
  winsize size{};
  size.ws_row = 24;
  size.ws_col = 80;
  REQUIRE(::openpty(&master, &slave, nullptr, nullptr, &size) == 0);
  std::string screen;
  std::thread reader([&] {  // a terminal reads what is drawn, or the drawing blocks
    char buffer[4096];
    for (ssize_t got; (got = ::read(master, buffer, sizeof buffer)) > 0;)
      screen.append(buffer, static_cast<std::size_t>(got));
  });
  constexpr int64_t kBatches = 40;
  {
    __gnu_cxx::stdio_filebuf<char> buffer(::dup(slave), std::ios::out);
    std::ostream out(&buffer);
    ProgressBarOptions options;
    options.out(&out);
    options.terminal_fd(slave);  // a terminal: redraws in place, at its width
    options.refresh_seconds(0.0);
    ProgressBar bar(options);
    bar.on_train_epoch_start(events::TrainEpochStart{{0, 0}, kBatches, 15});
    for (int64_t i = 0; i < kBatches; ++i) {
      if (i == kBatches / 2) {
        size.ws_col = 40;  // the window is made narrower mid-epoch
        REQUIRE(::ioctl(master, TIOCSWINSZ, &size) == 0);
      }
      events::TrainBatchEnd end;
      end.progress = {0, i + 1};
      end.batch.batch_idx = i;
      end.progress_bar = {{"loss", 0.5}};
      if (i % 2 == 1) end.progress_bar["a_rather_long_metric_name_that_never_fits"] = 1.0;
      bar.on_train_batch_end(end);
    }
    events::TrainEpochEnd epoch_end;
    epoch_end.progress_bar = {{"train_loss_epoch", 0.4}};
    bar.on_train_epoch_end(epoch_end);
    out.flush();
  }
  ::close(slave);  // the reader then sees the end of the terminal's output
  reader.join();
  ::close(master);
  const std::vector<std::string> lines = redraws(screen);
  REQUIRE(lines.size() == kBatches);  // one redraw per batch (refresh_seconds = 0)
  for (std::size_t i = 0; i < lines.size(); ++i) {
    INFO("redraw " << i << ": '" << lines[i] << "'");
    CHECK(lines[i].size() <= (static_cast<int64_t>(i) < kBatches / 2 ? 79u : 39u));
    CHECK(lines[i].rfind("epoch 1/15", 0) == 0);
  }
  INFO(lines[0]);
  CHECK(lines[0].find("[") !=
        std::string::npos);  // 80 columns: the bar graphic fits beside short metrics,
  CHECK(lines[1].find("[") == std::string::npos);      // gives way to long ones, which are cut;
  CHECK(lines.back().find('[') == std::string::npos);  // in 40 columns the numbers come first
  CHECK(screen.find("\r\n") != std::string::npos);     // one finished summary line
}

TEST_CASE("On a terminal, a summary line too wide continues on indented lines, between values",
          "[observers][progress]") {
  std::ostringstream out;
  ProgressBarOptions options;
  options.out(&out);
  options.tty(true);
  options.columns(40);
  ProgressBar bar(options);
  bar.on_test_epoch_start(events::TestEpochStart{{0, 0}, 1});
  bar.on_test_epoch_end(
      events::TestEpochEnd{{0, 0}, {{"test_acc", 0.9}, {"test_loss", 0.3}, {"test_f1", 0.8}}});
  std::vector<std::string> lines;
  std::istringstream text(out.str());
  for (std::string line; std::getline(text, line);)
    lines.push_back(line.substr(0, line.find("\x1b[K")));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "test  0/1  0.0s  test_acc 0.9000");
  CHECK(lines[1] == "    test_f1 0.8000  test_loss 0.3000");
}

TEST_CASE("The test bar counts the batches of every test loader", "[observers][progress]") {
  // Two test loaders: batch_idx starts again from 0 in the second; the bar counts 3 of 3.
  std::ostringstream out;
  ProgressBarOptions options;
  options.out(&out);
  options.tty(false);
  ProgressBar bar(options);
  bar.on_test_epoch_start(events::TestEpochStart{{0, 0}, 3});
  for (const auto& [batch_idx, dataloader_idx] :
       std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {1, 0}, {0, 1}}) {
    events::TestBatchEnd end;
    end.batch.batch_idx = batch_idx;
    end.batch.dataloader_idx = dataloader_idx;
    bar.on_test_batch_end(end);
  }
  bar.on_test_epoch_end(events::TestEpochEnd{{0, 0}, {{"test_acc", 0.9}}});
  CHECK(out.str().rfind("test  3/3  ", 0) == 0);
}

namespace {

// The lines of `text`, each without its '\n'.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("On a rank other than 0 the bar never redraws: plain lines marked with the rank",
          "[observers][progress][ranks]") {
  // Added with every_rank, a bar on rank 1 shares the terminal with rank 0's: redrawing there
  // would draw over rank 0's line.
  std::ostringstream out;
  ProgressBarOptions options;
  options.out(&out);
  options.columns(200);
  options.refresh_seconds(0.0);
  options.plain_interval_seconds(0.0);
  SECTION("on a terminal: each line starts over what rank 0's bar drew there") {
    options.tty(true);
    ProgressBar bar(options);
    bar.attached(events::Placement{1, 1, 2});
    run_epoch(bar, 4);
    const std::vector<std::string> lines = lines_of(out.str());
    REQUIRE(lines.size() == 4);  // batches 1 to 3, then the summary (as off a terminal)
    const std::string start = "\r[rank: 1] ";
    for (const std::string& line : lines) {
      INFO(line);
      CHECK(line.rfind(start + "epoch 1/3  ", 0) == 0);
      CHECK_THAT(line, Catch::EndsWith("\x1b[K"));  // erases the rest of rank 0's bar
      // Nothing else: no redraw, no bar graphic.
      CHECK(line.find_first_of("\r\x1b[", start.size()) == line.size() - 3);
    }
    CHECK(lines[0].rfind(start + "epoch 1/3  25% 1/4  ", 0) == 0);
    CHECK_THAT(lines[3], Catch::EndsWith("s  train_acc 0.8000  val_acc 0.7000\x1b[K"));
  }
  SECTION("on a narrow terminal: a long line continues on indented lines, as a summary") {
    options.tty(true);
    options.columns(50);
    ProgressBar bar(options);
    bar.attached(events::Placement{1, 1, 2});
    bar.on_test_epoch_start(events::TestEpochStart{{0, 0}, 1});
    bar.on_test_epoch_end(
        events::TestEpochEnd{{0, 0}, {{"test_acc", 0.9}, {"test_loss", 0.3}, {"test_f1", 0.8}}});
    CHECK(lines_of(out.str()) ==
          std::vector<std::string>{"\r[rank: 1] test  0/1  0.0s  test_acc 0.9000\x1b[K",
                                   "    test_f1 0.8000  test_loss 0.3000\x1b[K"});
  }
  SECTION("off a terminal: as rank 0's plain lines, marked") {
    options.tty(false);
    ProgressBar bar(options);
    bar.attached(events::Placement{3, 1, 4});
    run_epoch(bar, 4);
    const std::vector<std::string> lines = lines_of(out.str());
    REQUIRE(lines.size() == 4);
    for (const std::string& line : lines) CHECK(line.rfind("[rank: 3] epoch 1/3  ", 0) == 0);
    CHECK(out.str().find_first_of("\r\x1b") == std::string::npos);
  }
  SECTION("rank 0 of 2 draws as one process does") {
    options.tty(true);
    ProgressBar bar(options);
    bar.attached(events::Placement{0, 0, 2});
    run_epoch(bar, 4);
    const std::string text = out.str();
    CHECK_THAT(text, Catch::StartsWith("\repoch 1/3  25% [#####...............] 1/4"));
    CHECK(std::count(text.begin(), text.end(), '\n') == 1);
  }
}

TEST_CASE("A bar attached to a pool on rank 1 of 2 prints its test line marked with the rank",
          "[observers][progress][ranks]") {
  // As Trainer::add_observer attaches it with every_rank: the placement reaches the bar before
  // any event, and its hooks then run on the pool's threads.
  std::ostringstream out;
  auto bar = std::make_shared<ProgressBar>(ProgressBarOptions().out(&out).tty(true).columns(200));
  {
    events::EventBus bus;
    events::ObserverPool pool(2);
    pool.attach(bus, bar, {}, events::Placement{1, 1, 2});
    bus.publish(events::TestEpochStart{{0, 0}, 2});
    bus.publish(events::TestBatchEnd{});
    bus.publish(events::TestBatchEnd{});
    bus.publish(events::TestEpochEnd{{0, 0}, {{"test_acc", 0.9}}});
    pool.drain();
    pool.check();
  }
  CHECK_THAT(out.str(), Catch::Matches("\r\\[rank: 1\\] test  2/2  [0-9.]+s  test_acc "
                                       "0\\.9000\x1b\\[K\n"));
}
