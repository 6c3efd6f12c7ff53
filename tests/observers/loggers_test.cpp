// CsvLogger and TensorBoardLogger: what lands on disk, fed events directly and through the pool.
// No torch here: these also run under the sanitizers (the fit itself: core/loggers_in_fit_test.cpp).
#include <filesystem>
#include <fstream>

#include <catch2/catch.hpp>

#include "observers/csv_logger.h"
#include "observers/tensorboard_logger.h"
#include "events/observer_pool.h"
#include "observers/tfrecord.h"
#include "proto/tensorboard.pb.h"
#include "tests/support/log_files.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::observers;
using trainbus::testing::read_tensorboard_events;
using trainbus::testing::read_text_file;
using trainbus::testing::TempDir;

namespace {

events::TrainBatchEnd batch_end(int64_t epoch, int64_t global_step, Metrics metrics) {
  events::TrainBatchEnd event;
  event.progress = {epoch, global_step};
  event.metrics = std::move(metrics);
  return event;
}

}  // namespace

TEST_CASE("CsvLogger writes Lightning's layout: sorted columns, epoch and step, empty cells", "[observers][csv]") {
  TempDir dir;
  {
    CsvLogger logger({dir.file("run"), /*log_every_n_steps=*/1});
    logger.on_fit_start(events::FitStart{{}, {{"lr", "0.001"}, {"model", "mlp"}}});
    logger.on_train_batch_end(batch_end(0, 1, {{"loss", 0.5}}));
    logger.on_train_batch_end(batch_end(0, 2, {{"loss", 0.25}}));
    events::TrainEpochEnd epoch_end;
    epoch_end.progress = {0, 2};
    epoch_end.metrics = {{"loss_epoch", 0.375}};
    logger.on_train_epoch_end(epoch_end);  // flushes; a new column rewrites the header
    events::ValidationEpochEnd validation;
    validation.progress = {0, 2};
    validation.metrics = {{"val_acc", 0.875}};
    logger.on_validation_epoch_end(validation);
    logger.on_fit_end(events::FitEnd{});
  }
  CHECK(read_text_file(dir.file("run/metrics.csv")) ==
        "epoch,loss,loss_epoch,step,val_acc\n"
        "0,0.5,,0,\n"
        "0,0.25,,1,\n"
        "0,,0.375,1,\n"
        "0,,,1,0.875\n");
  CHECK(read_text_file(dir.file("run/hparams.yaml")) == "lr: 0.001\nmodel: 'mlp'\n");
}

TEST_CASE("CsvLogger skips the sanity check and flushes every N rows", "[observers][csv]") {
  TempDir dir;
  CsvLogger logger({dir.file("run"), 1, /*flush_logs_every_n_steps=*/2});
  logger.on_sanity_check_start({});
  events::ValidationEpochEnd sanity;
  sanity.metrics = {{"val_acc", 0.1}};
  logger.on_validation_epoch_end(sanity);
  logger.on_sanity_check_end({});
  logger.on_train_batch_end(batch_end(0, 1, {{"loss", 1.0}}));
  CHECK_FALSE(std::filesystem::exists(logger.metrics_file()));  // one row is still buffered
  logger.on_train_batch_end(batch_end(0, 2, {{"loss", 2.0}}));
  CHECK(read_text_file(logger.metrics_file()) == "epoch,loss,step\n0,1,0\n0,2,1\n");
}

TEST_CASE("CsvLogger names the file it cannot write", "[observers][csv]") {
  TempDir dir;
  std::ofstream(dir.file("taken")) << "a file where the run directory should go";
  CHECK_THROWS_WITH(CsvLogger({dir.file("taken/run")}), Catch::Contains(dir.file("taken/run")) &&
                                                           Catch::Contains("cannot create the run directory"));
}

TEST_CASE("TensorBoardLogger marks a resume with SessionLog START at the resumed step", "[observers][tensorboard]") {
  TempDir dir;
  std::string path;
  {
    TensorBoardLogger logger({dir.path().string(), 1});
    path = logger.file_path();
    logger.on_fit_start(events::FitStart{{3, 120}, {}});
  }
  const std::vector<trainbus::tensorboard::Event> events = read_tensorboard_events(path);
  REQUIRE(events.size() == 2);
  CHECK(events[1].step() == 120);
  CHECK(events[1].session_log().status() == trainbus::tensorboard::SessionLog::START);
}

TEST_CASE("CsvLogger on the observer pool writes every row in publish order", "[observers][csv][async]") {
  TempDir dir;
  auto logger = std::make_shared<CsvLogger>(CsvLoggerOptions{dir.file("run"), 1});
  EventBus bus;
  ObserverPool pool(2);
  pool.attach(bus, logger, {/*capacity=*/8});
  std::string expected = "epoch,loss,step\n";
  for (int64_t step = 1; step <= 500; ++step) {
    bus.publish(batch_end(0, step, {{"loss", static_cast<double>(step)}}));
    expected += "0," + std::to_string(step) + "," + std::to_string(step - 1) + "\n";
  }
  bus.publish(events::FitEnd{});
  pool.drain();
  CHECK(read_text_file(logger->metrics_file()) == expected);
}
