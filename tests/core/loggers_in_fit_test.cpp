// The loggers in a real fit: metrics.csv and an event file TensorBoard can read, written on the
// pool.
#include <filesystem>
#include <memory>
#include <string>

#include "core/trainer.h"
#include "observers/csv_logger.h"
#include "observers/tensorboard_logger.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/log_files.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::observers;
using trainbus::testing::read_tensorboard_events;
using trainbus::testing::read_text_file;
using trainbus::testing::TempDir;

namespace {

/// Logs "a" every step and "val_metric" per validation, so both kinds of rows appear.
class Logging : public testing::BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    log("a", static_cast<double>(batch_idx),
        LogOptions().on_step(true).on_epoch(true).prog_bar(false));
    return BoringModule::training_step(batch, batch_idx);
  }
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    log("val_metric", 0.25);
    return {};
  }
};

}  // namespace

TEST_CASE("In a fit, the loggers write metrics.csv and an event file TensorBoard can read",
          "[observers][csv][tensorboard]") {
  TempDir dir;
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(2);
  options.limit_train_batches(4);
  options.limit_val_batches(2);
  options.log_every_n_steps(2);
  Trainer trainer(options);
  auto csv = std::make_shared<CsvLogger>(
      CsvLoggerOptions().log_dir(dir.file("run")).log_every_n_steps(options.log_every_n_steps()));
  auto tensorboard =
      std::make_shared<TensorBoardLogger>(TensorBoardLoggerOptions()
                                              .log_dir(dir.file("run"))
                                              .log_every_n_steps(options.log_every_n_steps()));
  trainer.add_observer(csv);
  trainer.add_observer(tensorboard);
  Logging module;
  testing::RandomDataModule data;
  trainer.fit(module, data);

  // Per epoch: steps 2 and 4 of the epoch (every 2nd), the train epoch means, the validation.
  CHECK(read_text_file(csv->metrics_file()) ==
        "a_epoch,a_step,epoch,step,val_metric\n"
        ",1,0,1,\n"
        ",3,0,3,\n"
        ",,0,3,0.25\n"
        "1.5,,0,3,\n"
        ",1,1,5,\n"
        ",3,1,7,\n"
        ",,1,7,0.25\n"
        "1.5,,1,7,\n");

  const std::vector<trainbus::tensorboard::Event> events =
      read_tensorboard_events(tensorboard->file_path());
  REQUIRE(events.size() == 1 + 8);
  CHECK(events[0].file_version() == "brain.Event:2");
  CHECK(std::filesystem::path(tensorboard->file_path())
            .filename()
            .string()
            .rfind("events.out.tfevents.", 0) == 0);
  CHECK(events[2].step() == 3);
  REQUIRE(events[2].summary().value_size() == 2);
  CHECK(events[2].summary().value(0).tag() == "a_step");
  CHECK(events[2].summary().value(0).simple_value() == 3.0f);
  CHECK(events[2].summary().value(1).tag() == "epoch");
}

namespace {

/// Saves a checkpoint at each train epoch end, as Lightning's default ModelCheckpoint does.
class SaveEveryEpochEnd : public Callback {
 public:
  explicit SaveEveryEpochEnd(std::string path) : path_(std::move(path)) {}
  CallbackKind kind() const override { return CallbackKind::kCheckpoint; }
  void on_train_epoch_end(Trainer& trainer, Module&) override { trainer.save_checkpoint(path_); }

 private:
  std::string path_;
};

/// 6 batches an epoch, accumulation 2 (3 optimizer steps an epoch), a row every 2 steps.
TrainerOptions accumulating_options(int64_t epochs) {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(epochs);
  options.limit_train_batches(6);
  options.limit_val_batches(0);
  options.accumulate_grad_batches(2);
  options.log_every_n_steps(2);
  return options;
}

std::string fit_and_read_csv(Trainer& trainer, const std::string& log_dir, FitOptions fit = {}) {
  auto csv = std::make_shared<CsvLogger>(CsvLoggerOptions().log_dir(log_dir).log_every_n_steps(2));
  trainer.add_observer(csv);
  Logging module;
  testing::RandomDataModule data;
  trainer.fit(module, data, fit);
  return read_text_file(csv->metrics_file());
}

}  // namespace

TEST_CASE("Loggers write a step row every log_every_n_steps optimizer steps, at Lightning's steps",
          "[observers][csv]") {
  // Lightning's _LoggerConnector.update_train_step_metrics: no row while a batch accumulates;
  // else a row when should_update_logs, i.e. (epoch_loop._batches_that_stepped + 1) %
  // log_every_n_steps == 0 (or should_stop), at step = _batches_that_stepped, which counts the
  // batches that stepped before this one (_TrainingEpochLoop.on_advance_end increments it after
  // the row). The epoch-end row is at _batches_that_stepped - 1 (_FitLoop.on_advance_end). So with
  // 6 batches and accumulation 2: steps after batches 1, 3, 5 of each epoch; rows at
  // _batches_that_stepped 1 (epoch 0, batch 3), 3 (epoch 1, batch 1) and 5 (epoch 1, batch 5).
  const std::string epoch_1_rows =
      ",1,1,3\n"
      ",5,1,5\n"
      "2.5,,1,5\n";
  TempDir dir;
  SECTION("in one fit") {
    Trainer trainer(accumulating_options(2));
    CHECK(fit_and_read_csv(trainer, dir.file("run")) ==
          "a_epoch,a_step,epoch,step\n"
          ",3,0,1\n"
          "2.5,,0,2\n" +
              epoch_1_rows);
  }
  SECTION("across a resume: _batches_that_stepped comes back with the checkpoint") {
    const std::string path = dir.file("epoch.ckpt");
    {
      Trainer first(accumulating_options(1).enable_checkpointing(true),
                    {std::make_shared<SaveEveryEpochEnd>(path)});
      fit_and_read_csv(first, dir.file("first"));
    }
    Trainer resumed(accumulating_options(2));
    CHECK(fit_and_read_csv(resumed, dir.file("resumed"), FitOptions().ckpt_path(path)) ==
          "a_epoch,a_step,epoch,step\n" + epoch_1_rows);
  }
}
