// The module's hyper-parameters in a fit: hparams.yaml keeps each one's type, as Lightning's does,
// so that PyYAML and Lightning's load_hparams_from_yaml read back what the module saved; those a
// callback logs through trainer.loggers() join them in every logger and the recording.

#include <memory>
#include <string>
#include <vector>

#include "core/trainer.h"
#include "observers/csv_logger.h"
#include "observers/tensorboard_logger.h"
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

class WithHyperParameters : public testing::BoringModule {
 public:
  WithHyperParameters() {
    StateDict hparams;
    hparams.insert("lr", 1e-4);
    hparams.insert("eps", 1e-8);
    hparams.insert("batch_size", int64_t{64});
    hparams.insert("model", "mlp");
    hparams.insert("a: b", 0.5);
    hparams.insert("amsgrad", false);
    hparams.insert("betas", std::vector<double>{0.9, 0.999});
    hparams.insert("note", "it's");
    save_hyperparameters(hparams);
  }
};

}  // namespace

TEST_CASE("hparams.yaml keeps the hyper-parameters' types and quotes keys that need it",
          "[observers][csv][hparams]") {
  TempDir dir;
  Trainer trainer(
      testing::trainer_options().max_epochs(1).limit_train_batches(1).limit_val_batches(0));
  trainer.add_observer(std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir(dir.file("run"))));
  WithHyperParameters module;
  testing::RandomDataModule data;
  trainer.fit(module, data);

  // Lightning (save_hparams_to_yaml, PyYAML 6.0.3's yaml.dump) writes the same mapping as
  //   'a: b': 0.5 / amsgrad: false / batch_size: 64 / betas: [0.9, 0.999] / eps: 1.0e-08 /
  //   lr: 0.0001 / model: mlp / note: it's
  // trainbus quotes every string ('mlp'), which PyYAML reads back as the same str. Before typed
  // hparams, eps was written `1e-08`, which PyYAML reads as the string '1e-08', and the key
  // `a: b` unquoted broke the file.
  CHECK(read_text_file(dir.file("run/hparams.yaml")) ==
        "'a: b': 0.5\n"
        "amsgrad: false\n"
        "batch_size: 64\n"
        "betas: [0.9, 0.999]\n"
        "eps: 1.0e-08\n"
        "lr: 0.0001\n"
        "model: 'mlp'\n"
        "note: 'it''s'\n");
}

namespace {

/// Logs hyper-parameters of its own to every logger, as a Lightning callback calls
/// `trainer.loggers[i].log_hyperparams(...)`: one at train start, and one that replaces the
/// module's `lr`.
class LogsHyperparams : public Callback {
 public:
  void on_train_start(Trainer& trainer, Module&) override {
    for (const LoggerHandle& logger : trainer.loggers()) {
      StateDict params;
      params.insert("warmup_steps", int64_t{100});
      params.insert("schedule", "cosine");
      params.insert("lr", 0.5);
      logger.log_hyperparams(params);
    }
  }
};

}  // namespace

TEST_CASE(
    "hparams logged through trainer.loggers() join the module's in every logger and the "
    "recording",
    "[observers][csv][tensorboard][hparams]") {
  TempDir dir;
  const std::string recording = dir.file("events.tbrec");
  std::string tensorboard_file;
  {
    Trainer trainer(
        testing::trainer_options().max_epochs(1).limit_train_batches(1).limit_val_batches(0),
        {std::make_shared<LogsHyperparams>()});
    trainer.add_observer(std::make_shared<observers::CsvLogger>(
        observers::CsvLoggerOptions().log_dir(dir.file("csv"))));
    auto tensorboard = std::make_shared<observers::TensorBoardLogger>(
        observers::TensorBoardLoggerOptions().log_dir(dir.file("tb")));
    trainer.add_observer(tensorboard);
    trainer.add_observer(
        std::make_shared<record::Recorder>(record::RecorderOptions().path(recording)));
    WithHyperParameters module;
    testing::RandomDataModule data;
    trainer.fit(module, data);
    tensorboard_file = tensorboard->file_path();
  }  // the trainer's pool lets the recorder go: the recording ends cleanly

  // Lightning's loggers update their hparams: the module's, then the callback's over them.
  const std::string expected =
      "'a: b': 0.5\n"
      "amsgrad: false\n"
      "batch_size: 64\n"
      "betas: [0.9, 0.999]\n"
      "eps: 1.0e-08\n"
      "lr: 0.5\n"
      "model: 'mlp'\n"
      "note: 'it''s'\n"
      "schedule: 'cosine'\n"
      "warmup_steps: 100\n";
  CHECK(read_text_file(dir.file("csv/hparams.yaml")) == expected);
  CHECK(read_text_file(dir.file("tb/hparams.yaml")) == expected);

  // TensorBoard's hparams plugin: the module's at fit start, then all of them.
  std::vector<trainbus::tensorboard::SessionStartInfo> sessions;
  for (const auto& event : read_tensorboard_events(tensorboard_file)) {
    for (const auto& value : event.summary().value()) {
      if (value.tag() != "_hparams_/session_start_info") continue;
      CHECK(value.metadata().plugin_data().plugin_name() == "hparams");
      trainbus::tensorboard::HParamsPluginData plugin_data;
      REQUIRE(plugin_data.ParseFromString(value.metadata().plugin_data().content()));
      sessions.push_back(plugin_data.session_start_info());
    }
  }
  REQUIRE(sessions.size() == 2);
  CHECK(sessions[0].hparams().count("warmup_steps") == 0);
  CHECK(sessions[0].hparams().at("lr").number_value() == 1e-4);
  const auto& all = sessions[1].hparams();
  CHECK(all.at("lr").number_value() == 0.5);
  CHECK(all.at("warmup_steps").number_value() == 100);
  CHECK(all.at("schedule").string_value() == "cosine");
  CHECK(all.at("note").string_value() == "it's");
  // A boolean, not the text "false" (whose bool_value() would read false too).
  CHECK(all.at("amsgrad").kind_case() == tensorboard::HParamValue::kBoolValue);
  CHECK(all.at("amsgrad").bool_value() == false);
  CHECK(all.at("betas").string_value() == "[0.9, 0.999]");

  // The recording holds the event, with the logger it was for.
  record::RecordingReader reader(recording);
  record::v1::Envelope envelope;
  std::vector<std::string> loggers;
  while (reader.next(envelope)) {
    if (!envelope.has_hyperparams_logged()) continue;
    loggers.push_back(envelope.hyperparams_logged().logger());
    REQUIRE(envelope.hyperparams_logged().hparams_size() == 3);
    CHECK(envelope.hyperparams_logged().hparams(0).key() == "lr");
    CHECK(envelope.hyperparams_logged().hparams(0).value() == "0.5");
  }
  CHECK(loggers == std::vector<std::string>{"CsvLogger(" + dir.file("csv") + ")",
                                            "TensorBoardLogger(" + dir.file("tb") + ")"});
}
