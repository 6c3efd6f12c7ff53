// The loggers in a real fit: metrics.csv and an event file TensorBoard can read, written on the
// pool.
#include <filesystem>

#include "core/trainer.h"
#include "observers/csv_logger.h"
#include "observers/tensorboard_logger.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/log_files.h"
#include "tests/support/temp_dir.h"

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
  TrainerOptions options;
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
