// A real fit recorded by the Recorder: every event the fit publishes is in the recording, in
// order, and the loggers fed from the recording alone write the same metrics.csv and TensorBoard
// values as the live ones.
#include <memory>
#include <string>
#include <vector>

#include "core/trainer.h"
#include "events/event_bus.h"
#include "events/observer_pool.h"
#include "observers/csv_logger.h"
#include "observers/tensorboard_logger.h"
#include "record/event_codec.h"
#include "record/record_file.h"
#include "record/recorder.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/log_files.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::read_tensorboard_events;
using trainbus::testing::read_text_file;
using trainbus::testing::TempDir;

namespace {

class Logging : public testing::BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    log("a", static_cast<double>(batch_idx), LogOptions().on_step(true).on_epoch(true));
    return BoringModule::training_step(batch, batch_idx);
  }
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    log("val_metric", 0.25 * static_cast<double>(batch_idx));
    return {};
  }
};

// Every event name an observer sees, in order.
class NameLog : public events::Observer {
 public:
  std::vector<std::string> names;
#define TRAINBUS_TEST_NAME_HOOK(Type, hook) \
  void hook(const events::Type&) override { names.emplace_back(events::Type::kName); }
  TRAINBUS_FOR_EACH_EVENT(TRAINBUS_TEST_NAME_HOOK)
#undef TRAINBUS_TEST_NAME_HOOK
};

std::vector<std::vector<std::pair<std::string, float>>> scalar_values(const std::string& file) {
  std::vector<std::vector<std::pair<std::string, float>>> values;
  for (const auto& event : read_tensorboard_events(file)) {
    if (!event.has_summary()) continue;
    std::vector<std::pair<std::string, float>> step;
    for (const auto& value : event.summary().value()) {
      step.emplace_back(value.tag() + "@" + std::to_string(event.step()), value.simple_value());
    }
    values.push_back(step);
  }
  return values;
}

}  // namespace

TEST_CASE("A recorded fit replays through the loggers into the same logs", "[record][replay]") {
  TempDir dir;
  const std::string recording = dir.file("live/events.tbrec");
  auto names = std::make_shared<NameLog>();
  std::string live_csv, live_tensorboard;
  {
    TrainerOptions options = testing::trainer_options();
    options.max_epochs(2);
    options.limit_train_batches(4);
    options.limit_val_batches(2);
    options.log_every_n_steps(2);
    Trainer trainer(options);
    auto csv = std::make_shared<observers::CsvLogger>(
        observers::CsvLoggerOptions().log_dir(dir.file("live")).log_every_n_steps(2));
    auto tensorboard = std::make_shared<observers::TensorBoardLogger>(
        observers::TensorBoardLoggerOptions().log_dir(dir.file("live")).log_every_n_steps(2));
    trainer.add_observer(csv);
    trainer.add_observer(tensorboard);
    trainer.add_observer(names);
    trainer.add_observer(
        std::make_shared<record::Recorder>(record::RecorderOptions().path(recording)));
    Logging module;
    testing::RandomDataModule data;
    trainer.fit(module, data);
    trainer.test(module, data);
    live_csv = csv->metrics_file();
    live_tensorboard = tensorboard->file_path();
  }  // the trainer's pool lets the recorder go: the recording ends cleanly

  // Every event the fit and the test published, in the same order.
  record::RecordingReader reader(recording);
  std::vector<record::v1::Envelope> recorded;
  record::v1::Envelope envelope;
  while (reader.next(envelope)) recorded.push_back(envelope);
  CHECK(reader.summary().clean_end);
  REQUIRE(recorded.size() == names->names.size());
  for (std::size_t i = 0; i < recorded.size(); ++i) {
    INFO("event " << i);
    CHECK(record::event_name(recorded[i]) == names->names[i]);
  }

  // The same loggers, fed from the recording alone.
  std::string replayed_csv, replayed_tensorboard;
  {
    events::EventBus bus;
    events::ObserverPool pool(2);
    auto csv = std::make_shared<observers::CsvLogger>(
        observers::CsvLoggerOptions().log_dir(dir.file("replayed")).log_every_n_steps(2));
    auto tensorboard = std::make_shared<observers::TensorBoardLogger>(
        observers::TensorBoardLoggerOptions().log_dir(dir.file("replayed")).log_every_n_steps(2));
    pool.attach(bus, csv);
    pool.attach(bus, tensorboard);
    for (const auto& each : recorded) record::publish(each, bus);
    pool.drain();
    pool.check();
    replayed_csv = csv->metrics_file();
    replayed_tensorboard = tensorboard->file_path();
  }
  CHECK(read_text_file(replayed_csv) == read_text_file(live_csv));
  CHECK(read_text_file(dir.file("replayed/hparams.yaml")) ==
        read_text_file(dir.file("live/hparams.yaml")));
  // TensorBoard: the same tags, steps and values (its wall times are the replay's).
  CHECK(scalar_values(replayed_tensorboard) == scalar_values(live_tensorboard));
  CHECK(scalar_values(live_tensorboard).size() > 4);
}
