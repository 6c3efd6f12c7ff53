// ProgressBar: in-place redraws on a terminal, plain lines elsewhere, one summary line per epoch.
#include "observers/progress_bar.h"

#include <sstream>

#include <catch2/catch.hpp>

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

TEST_CASE("Off a terminal the bar prints one plain summary line per epoch", "[observers][progress]") {
  std::ostringstream out;
  ProgressBarOptions options;
  options.out = &out;
  options.tty = false;
  ProgressBar bar(options);
  run_epoch(bar, 5);
  const std::string text = out.str();
  CHECK(text.find('\r') == std::string::npos);
  CHECK(text.rfind("epoch 1/3  5/5  ", 0) == 0);
  CHECK_THAT(text, Catch::EndsWith("s  train_acc 0.8000  val_acc 0.7000\n"));
}

TEST_CASE("Off a terminal, a long epoch also gets periodic progress lines", "[observers][progress]") {
  std::ostringstream out;
  ProgressBarOptions options;
  options.out = &out;
  options.tty = false;
  options.plain_interval_seconds = 0.0;
  ProgressBar bar(options);
  run_epoch(bar, 3);
  CHECK_THAT(out.str(), Catch::StartsWith("epoch 1/3  33% 1/3  ") && Catch::Contains(" it/s  ETA ") &&
                            Catch::Contains("loss 0.5000  train_acc_step 0.7500\n"));
}

TEST_CASE("On a terminal the bar redraws one line in place", "[observers][progress]") {
  std::ostringstream out;
  ProgressBarOptions options;
  options.out = &out;
  options.tty = true;
  options.refresh_seconds = 0.0;
  ProgressBar bar(options);
  run_epoch(bar, 4);
  const std::string text = out.str();
  CHECK_THAT(text, Catch::StartsWith("\repoch 1/3  25% [#####...............] 1/4"));
  CHECK_THAT(text, Catch::Contains("\rvalidating  50% [##########..........] 1/2"));
  CHECK_THAT(text, Catch::EndsWith("train_acc 0.8000  val_acc 0.7000\x1b[K\n"));
  CHECK(std::count(text.begin(), text.end(), '\n') == 1);
}

TEST_CASE("The epoch summary line", "[observers][progress]") {
  CHECK(ProgressBar::summary_line("epoch 3/15", 860, 860, 1.43, {{"train_loss", 0.312}, {"val_acc", 0.879}}) ==
        "epoch 3/15  860/860  1.4s  train_loss 0.3120  val_acc 0.8790");
}
