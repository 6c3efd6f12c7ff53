// CsvLogger and TensorBoardLogger: what lands on disk, fed events directly and through the pool.
// No torch here: these also run under the sanitizers (the fit itself:
// core/loggers_in_fit_test.cpp).
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "base/tfrecord.h"
#include "events/observer_pool.h"
#include "observers/csv_logger.h"
#include "observers/tensorboard_logger.h"
#include "proto/tensorboard.pb.h"
#include "tests/support/child_process.h"
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

/// Loggers of `log_dir` that write a row every step.
std::shared_ptr<CsvLogger> csv_logger(const std::string& log_dir) {
  return std::make_shared<CsvLogger>(CsvLoggerOptions().log_dir(log_dir).log_every_n_steps(1));
}
std::shared_ptr<TensorBoardLogger> tensorboard_logger(const std::string& log_dir) {
  return std::make_shared<TensorBoardLogger>(
      TensorBoardLoggerOptions().log_dir(log_dir).log_every_n_steps(1));
}

/// An observer pool of 2 threads and the bus it hears, as a trainer's on one rank of a job: what it
/// attaches is told `placement`.
struct PoolOnRank {
  explicit PoolOnRank(events::Placement where) : placement(where) {}
  void attach(std::shared_ptr<events::Observer> observer) {
    pool.attach(bus, std::move(observer), {}, placement);
  }
  /// Waits for every event published so far to be handled, then raises an observer's failure.
  void finish() {
    pool.drain();
    pool.check();
  }

  events::EventBus bus;  // outlives the pool
  events::ObserverPool pool{2};
  const events::Placement placement;
};

}  // namespace

TEST_CASE("CsvLogger writes Lightning's layout: sorted columns, epoch and step, empty cells",
          "[observers][csv]") {
  TempDir dir;
  {
    CsvLogger logger(observers::CsvLoggerOptions().log_dir(dir.file("run")).log_every_n_steps(1));
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
  CsvLogger logger(observers::CsvLoggerOptions()
                       .log_dir(dir.file("run"))
                       .log_every_n_steps(1)
                       .flush_logs_every_n_steps(2));
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
  // When it is attached, or at its first write: constructing it creates nothing.
  auto logger =
      std::make_shared<CsvLogger>(observers::CsvLoggerOptions().log_dir(dir.file("taken/run")));
  events::EventBus bus;
  events::ObserverPool pool(1);
  CHECK_THROWS_WITH(
      pool.attach(bus, logger),
      Catch::Contains(dir.file("taken/run")) && Catch::Contains("cannot create the run directory"));
  CHECK(pool.size() == 0);
  CsvLogger direct(observers::CsvLoggerOptions().log_dir(dir.file("taken/run")));
  CHECK_THROWS_WITH(
      direct.on_hyperparams_logged(events::HyperparamsLogged{{}, {{"lr", "0.1"}}}),
      Catch::Contains(dir.file("taken/run")) && Catch::Contains("cannot create the run directory"));
}

TEST_CASE("Loggers create no directory nor file until attached or given something to write",
          "[observers][csv][tensorboard]") {
  TempDir dir;
  CsvLogger csv(CsvLoggerOptions().log_dir(dir.file("run")).log_every_n_steps(1));
  TensorBoardLogger tensorboard(TensorBoardLoggerOptions().log_dir(dir.file("run")));
  csv.flush();
  tensorboard.flush();
  CHECK_FALSE(std::filesystem::exists(dir.file("run")));
  // Fed events directly, without a pool: one process's files, in log_dir.
  csv.on_train_batch_end(batch_end(0, 1, {{"loss", 0.5}}));
  csv.flush();
  CHECK(read_text_file(dir.file("run/metrics.csv")) == "epoch,loss,step\n0,0.5,0\n");
}

TEST_CASE("TensorBoardLogger marks a resume with SessionLog START at the resumed step",
          "[observers][tensorboard]") {
  TempDir dir;
  std::string path;
  {
    TensorBoardLogger logger(
        TensorBoardLoggerOptions().log_dir(dir.path().string()).log_every_n_steps(1));
    path = logger.file_path();
    logger.on_fit_start(events::FitStart{{3, 120}, {}});
  }
  const std::vector<trainbus::tensorboard::Event> events = read_tensorboard_events(path);
  REQUIRE(events.size() == 2);
  CHECK(events[1].step() == 120);
  CHECK(events[1].session_log().status() == trainbus::tensorboard::SessionLog::START);
}

TEST_CASE("CsvLogger on the observer pool writes every row in publish order",
          "[observers][csv][async]") {
  TempDir dir;
  auto logger = csv_logger(dir.file("run"));
  events::EventBus bus;
  events::ObserverPool pool(2);
  pool.attach(bus, logger, events::ObserverOptions().capacity(8));
  std::string expected = "epoch,loss,step\n";
  for (int64_t step = 1; step <= 500; ++step) {
    bus.publish(batch_end(0, step, {{"loss", static_cast<double>(step)}}));
    expected += "0," + std::to_string(step) + "," + std::to_string(step - 1) + "\n";
  }
  bus.publish(events::FitEnd{});
  pool.drain();
  CHECK(read_text_file(logger->metrics_file()) == expected);
}

TEST_CASE("Loggers attached on rank 2 write in log_dir/rank_2, nothing in log_dir itself",
          "[observers][csv][tensorboard]") {
  TempDir dir;
  const std::string run = dir.file("run");
  auto csv = csv_logger(run);
  auto tensorboard = tensorboard_logger(run);
  CHECK(csv->metrics_file() == dir.file("run/metrics.csv"));  // rank 0's until attached
  {
    PoolOnRank rank_two(events::Placement{2, 0, 3});
    rank_two.attach(csv);
    rank_two.attach(tensorboard);
    rank_two.bus.publish(events::FitStart{{}, {{"lr", "0.1"}}});
    rank_two.bus.publish(batch_end(0, 1, {{"loss", 0.5}}));
    rank_two.bus.publish(events::FitEnd{});
    rank_two.finish();
  }
  CHECK(csv->files_dir() == dir.file("run/rank_2"));
  CHECK(csv->metrics_file() == dir.file("run/rank_2/metrics.csv"));
  CHECK(csv->log_dir() == run);  // the run's directory (Trainer::log_dir) stays rank 0's
  CHECK(csv->name() == "CsvLogger(" + run + ")");
  CHECK(read_text_file(dir.file("run/rank_2/metrics.csv")) == "epoch,loss,step\n0,0.5,0\n");
  CHECK(read_text_file(dir.file("run/rank_2/hparams.yaml")) == "lr: 0.1\n");
  CHECK(std::filesystem::path(tensorboard->file_path()).parent_path() ==
        std::filesystem::path(run) / "rank_2");
  CHECK(read_tensorboard_events(tensorboard->file_path()).size() == 1 + 2);  // hparams, a row
  CHECK(trainbus::testing::names_in(run) == std::set<std::string>{"rank_2"});
}

TEST_CASE("A logger attached on one rank refuses another, and is attached again on its own",
          "[observers][csv][tensorboard]") {
  TempDir dir;
  const std::string run = dir.file("run");
  auto csv = csv_logger(run);
  auto tensorboard = tensorboard_logger(run);
  std::string event_file;
  {
    PoolOnRank rank_one(events::Placement{1, 1, 2});
    rank_one.attach(csv);
    rank_one.attach(tensorboard);
    event_file = tensorboard->file_path();
    rank_one.bus.publish(batch_end(0, 1, {{"loss", 0.5}}));
    // Its files are rank 1's, written on its pool's threads: moving them now would race with
    // them.
    const events::Placement rank_zero{0, 0, 2};
    CHECK_THROWS_WITH(rank_one.pool.attach(rank_one.bus, csv, {}, rank_zero),
                      "CsvLogger(" + run + ") writes rank 1's files already (" +
                          dir.file("run/rank_1") +
                          "); it cannot also be added on rank 0: make a logger for each rank");
    CHECK_THROWS_WITH(rank_one.pool.attach(rank_one.bus, tensorboard, {}, rank_zero),
                      Catch::Contains("make a logger for each rank"));
    CHECK(rank_one.pool.size() == 2);
    rank_one.finish();
  }
  {
    // On its own rank again (another trainer's pool): the same files, kept.
    PoolOnRank rank_one_again(events::Placement{1, 1, 2});
    rank_one_again.attach(csv);
    rank_one_again.attach(tensorboard);
    CHECK(tensorboard->file_path() == event_file);
    rank_one_again.bus.publish(batch_end(0, 2, {{"loss", 0.25}}));
    rank_one_again.finish();
  }
  CHECK(csv->files_dir() == dir.file("run/rank_1"));
  CHECK(read_text_file(dir.file("run/rank_1/metrics.csv")) ==
        "epoch,loss,step\n0,0.5,0\n0,0.25,1\n");
  CHECK(read_tensorboard_events(event_file).size() == 1 + 2);  // file_version, two rows
  CHECK(trainbus::testing::names_in(run) == std::set<std::string>{"rank_1"});
}

TEST_CASE("rank_files_dir: log_dir for rank 0, log_dir/rank_R else, nothing without a log_dir",
          "[observers]") {
  CHECK(rank_files_dir("/runs/v0", 0) == "/runs/v0");
  CHECK(rank_files_dir("/runs/v0", 3) == "/runs/v0/rank_3");
  CHECK(rank_files_dir("", 0).empty());
  CHECK(rank_files_dir("", 3).empty());  // not a relative rank_3
}

TEST_CASE("A TensorBoardLogger creates its event file when attached, not when constructed",
          "[observers][tensorboard]") {
  TempDir dir;
  auto logger = tensorboard_logger(dir.file("run"));
  CHECK_FALSE(std::filesystem::exists(dir.file("run")));
  events::EventBus bus;
  events::ObserverPool pool(1);
  pool.attach(bus, logger);  // one process: log_dir itself
  CHECK(std::filesystem::path(logger->file_path()).parent_path() == dir.file("run"));
  CHECK(read_tensorboard_events(logger->file_path()).size() == 1);  // file_version, flushed
}

namespace {

constexpr int kCrashRecords = 5;

// The TensorBoard event file in `dir`, or "" if there is none yet.
std::string event_file_in(const std::string& dir) {
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0)
      return entry.path().string();
  }
  return {};
}

}  // namespace

// Run only as the child of the test below (hidden tag): logs, then waits to be killed.
TEST_CASE("tensorboard crash child: logs on the pool, then waits to be killed",
          "[.tensorboard-crash-child]") {
  const std::string dir = trainbus::testing::test_child_dir();
  if (dir.empty()) return;
  events::EventBus bus;
  events::ObserverPool pool(1);
  pool.attach(bus, std::make_shared<TensorBoardLogger>(
                       TensorBoardLoggerOptions().log_dir(dir).log_every_n_steps(1)));
  for (int64_t step = 1; step <= kCrashRecords; ++step)
    bus.publish(batch_end(0, step, {{"loss", 1.0 / step}}));
  std::ofstream(dir + "/published") << "done";
  for (;;) ::pause();  // no epoch end, no exit: only the pool's timer can flush
}

TEST_CASE("After SIGKILL, TensorBoard holds every record written more than flush_interval before",
          "[observers][tensorboard][faults]") {
  TempDir dir;
  const pid_t child =
      trainbus::testing::spawn_test_child("[.tensorboard-crash-child]", dir.path().string());
  // The records reach the file within the pool's flush interval (1 s) of being published; allow
  // as much again for a loaded machine, and no more.
  const auto started = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> published;
  std::size_t on_disk = 0;
  while (std::chrono::steady_clock::now() - started < std::chrono::seconds(60)) {
    if (!published && std::filesystem::exists(dir.file("published")))
      published = std::chrono::steady_clock::now();
    if (published) {
      on_disk = read_tfrecords(event_file_in(dir.path().string())).records.size();
      if (on_disk == 1 + kCrashRecords) break;  // file_version, then one per step
      if (std::chrono::steady_clock::now() - *published > std::chrono::seconds(2)) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polls another process's file
  }
  REQUIRE(::kill(child, SIGKILL) == 0);
  trainbus::testing::wait_for_child(child);
  CHECK(on_disk == 1 + kCrashRecords);
  const TfRecords records = read_tfrecords(event_file_in(dir.path().string()));
  CHECK(records.complete);
  CHECK(records.records.size() == 1 + kCrashRecords);
}
