// A real (short) Fashion-MNIST fit, recorded, then replayed through fresh callbacks: the replay
// reproduces the live decisions (the stop, the top-k set, the best path) and the trainer state the
// callbacks saw, writes nothing, answers what-if questions and regenerates the CSV log.
#include "replay/replay_session.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "apps/fashion_classifier.h"
#include "base/tfrecord.h"
#include "callbacks/early_stopping.h"
#include "callbacks/model_checkpoint.h"
#include "callbacks/on_exception_checkpoint.h"
#include "data/fashion_mnist.h"
#include "observers/csv_logger.h"
#include "record/record_file.h"
#include "record/recorder.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/log_files.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using callbacks::EarlyStopping;
using callbacks::EarlyStoppingOptions;
using callbacks::ModelCheckpoint;
using callbacks::ModelCheckpointOptions;
using replay::Decision;
using replay::ReplaySession;
using trainbus::testing::read_text_file;
using trainbus::testing::TempDir;

namespace {

// What a callback sees of the trainer at each epoch end and validation end.
class StateProbe : public Callback {
 public:
  std::vector<std::string> seen;  // one line per hook call
  void on_train_epoch_end(Trainer& t, Module&) override { note("train_epoch_end", t); }
  void on_validation_end(Trainer& t, Module&) override { note("validation_end", t); }
  void on_train_batch_end(Trainer& t, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (batch_idx == 0) note("train_batch_end 0", t);
  }

 private:
  void note(const std::string& hook, const Trainer& t) {
    std::ostringstream line;
    line.precision(17);
    line << hook << ": epoch " << t.current_epoch() << " step " << t.global_step() << " batches "
         << t.num_training_batches() << "/" << t.num_val_batches() << " sanity "
         << t.sanity_checking() << " stop " << t.should_stop() << " validates after 0 "
         << t.validates_after_batch(0);
    if (hook != "train_batch_end 0") {
      for (const auto& [name, value] : t.callback_metrics()) line << ' ' << name << '=' << value;
    }
    seen.push_back(line.str());
  }
};

EarlyStoppingOptions early_stopping_options() {
  return EarlyStoppingOptions().monitor("val_loss").patience(1).min_delta(0.02);
}

ModelCheckpointOptions checkpoint_options(const std::string& dirpath) {
  return ModelCheckpointOptions()
      .dirpath(dirpath)
      .filename("{epoch}-{val_loss:.3f}")
      .monitor("val_loss")
      .save_top_k(2)
      .save_last(ModelCheckpointOptions::SaveLast::kLink);
}

TrainerOptions fit_options() {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(8);
  options.limit_train_batches(25);
  options.limit_val_batches(4);
  options.log_every_n_steps(5);
  options.seed(3);
  return options;
}

struct LiveRun {
  std::shared_ptr<EarlyStopping> early_stopping;
  std::shared_ptr<ModelCheckpoint> checkpoint;
  std::shared_ptr<StateProbe> probe;
  std::string recording;
  std::string csv;
};

// The live run, once for every test here (a fit of a few seconds).
const LiveRun& live_run(const TempDir& dir) {
  static std::map<std::string, LiveRun> runs;
  auto [it, fresh] = runs.try_emplace(dir.path().string());
  LiveRun& run = it->second;
  if (!fresh) return run;
  run.early_stopping = std::make_shared<EarlyStopping>(early_stopping_options());
  run.checkpoint = std::make_shared<ModelCheckpoint>(checkpoint_options(dir.file("checkpoints")));
  run.probe = std::make_shared<StateProbe>();
  run.recording = dir.file("live/events.tbrec");
  Trainer trainer(fit_options().enable_checkpointing(true),
                  {run.probe, run.early_stopping, run.checkpoint});
  auto csv = std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir(dir.file("live")).log_every_n_steps(5));
  trainer.add_observer(csv);
  trainer.add_observer(
      std::make_shared<record::Recorder>(record::RecorderOptions().path(run.recording)));
  torch::manual_seed(3);
  apps::FashionClassifier model;
  data::FashionMnistDataModule data;
  trainer.fit(model, data);
  run.csv = csv->metrics_file();
  return run;
}

std::vector<std::string> paths(const std::vector<Decision>& decisions, Decision::Kind kind) {
  std::vector<std::string> out;
  for (const Decision& d : decisions) {
    if (d.kind == kind) out.push_back(d.what);
  }
  return out;
}

TempDir& shared_dir() {
  static TempDir dir;
  return dir;
}

}  // namespace

TEST_CASE("Replaying a real fit through fresh callbacks reproduces the live decisions",
          "[replay][fashion]") {
  const TempDir& dir = shared_dir();
  const LiveRun& live = live_run(dir);
  // The run must have made the decisions this test compares.
  REQUIRE(live.early_stopping->stopped_epoch() > 0);
  REQUIRE(live.checkpoint->best_k_models().size() == 2);
  const std::set<std::string> files_before = testing::names_in(dir.file("checkpoints"));

  auto early_stopping = std::make_shared<EarlyStopping>(early_stopping_options());
  auto checkpoint = std::make_shared<ModelCheckpoint>(checkpoint_options(dir.file("checkpoints")));
  auto probe = std::make_shared<StateProbe>();
  ReplaySession session(fit_options().enable_checkpointing(true),
                        {probe, early_stopping, checkpoint});
  auto csv = std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir(dir.file("replayed")).log_every_n_steps(5));
  session.trainer().add_observer(csv);
  record::RecordingReader reader(live.recording);
  CHECK(session.replay(reader) > 100);
  session.finish();

  // The stop: the same epoch, reason and message.
  CHECK(early_stopping->stopped_epoch() == live.early_stopping->stopped_epoch());
  CHECK(early_stopping->stopping_reason() == live.early_stopping->stopping_reason());
  CHECK(early_stopping->stopping_reason_message() ==
        live.early_stopping->stopping_reason_message());
  CHECK(paths(session.decisions(), Decision::Kind::kStop) ==
        paths(session.recorded_decisions(), Decision::Kind::kStop));

  // The checkpoints: the same top-k set with the same scores, the same best and last.
  CHECK(checkpoint->best_k_models() == live.checkpoint->best_k_models());
  CHECK(checkpoint->best_model_path() == live.checkpoint->best_model_path());
  CHECK(checkpoint->best_model_score() == live.checkpoint->best_model_score());
  CHECK(checkpoint->last_model_path() == live.checkpoint->last_model_path());
  // Saved and removed in the same order as the live run committed and removed them.
  CHECK(paths(session.decisions(), Decision::Kind::kSave) ==
        paths(session.recorded_decisions(), Decision::Kind::kSave));
  CHECK(paths(session.decisions(), Decision::Kind::kRemove) ==
        paths(session.recorded_decisions(), Decision::Kind::kRemove));
  CHECK_FALSE(paths(session.decisions(), Decision::Kind::kRemove).empty());

  // What the callbacks saw of the trainer, hook by hook.
  CHECK(probe->seen.size() == live.probe->seen.size());
  for (std::size_t i = 0; i < std::min(probe->seen.size(), live.probe->seen.size()); ++i) {
    CHECK(probe->seen[i] == live.probe->seen[i]);
  }
  CHECK(probe->seen.size() >= 10);

  // A dry run: the live run's checkpoints are all still there, nothing was added.
  CHECK(testing::names_in(dir.file("checkpoints")) == files_before);
  // The CSV logger fed by the replay writes the live file.
  CHECK(read_text_file(csv->metrics_file()) == read_text_file(live.csv));
}

TEST_CASE(
    "A recording made before fit events carried num_val_batches replays it from the first "
    "validation on",
    "[replay][fashion]") {
  const TempDir& dir = shared_dir();
  const LiveRun& live = live_run(dir);
  // The live recording as a trainbus from before commit 2ad3c62 wrote it: format 1, no loop sizes
  // in FitStart, no num_val_batches in TrainEpochStart, no terminal record.
  const std::string old_recording = dir.file("old/events.tbrec");
  std::filesystem::create_directories(dir.file("old"));
  {
    record::RecordingReader reader(live.recording);
    record::v1::Header header = reader.header();
    header.set_format_version(1);
    std::string bytes(record::kMagic);
    append_tfrecord(bytes, header.SerializeAsString());
    while (const record::v1::Envelope* envelope = reader.next()) {
      record::v1::Envelope copy = *envelope;
      if (copy.has_fit_start()) {  // FitStart's loop sizes came with the same change
        copy.mutable_fit_start()->clear_num_batches();
        copy.mutable_fit_start()->clear_num_val_batches();
      }
      if (copy.has_train_epoch_start()) copy.mutable_train_epoch_start()->clear_num_val_batches();
      append_tfrecord(bytes, copy.SerializeAsString());
    }
    std::ofstream(old_recording, std::ios::binary) << bytes;
  }
  auto probe = std::make_shared<StateProbe>();
  ReplaySession session(fit_options(), {probe});
  record::RecordingReader reader(old_recording);
  REQUIRE(reader.header().format_version() == 1);
  session.replay(reader);
  session.finish();

  // Before the fit's first validation (the sanity check's, epoch 0's first batch) the count is
  // unknown, 0; from that validation on it is the live one.
  REQUIRE(probe->seen.size() == live.probe->seen.size());
  std::size_t i = 0;
  auto first_fit_validation = [](const std::string& line) {
    return line.rfind("validation_end: epoch 0", 0) == 0 &&
           line.find(" sanity 0 ") != std::string::npos;
  };
  for (; i < probe->seen.size() && !first_fit_validation(probe->seen[i]); ++i) {
    // The sanity check's line knows no loop size yet; epoch 0's first batch knows the training one.
    CHECK(probe->seen[i].find(i == 0 ? "batches 0/0 " : "batches 25/0 ") != std::string::npos);
  }
  REQUIRE(i == 2);
  REQUIRE(i < probe->seen.size());
  for (; i < probe->seen.size(); ++i) CHECK(probe->seen[i] == live.probe->seen[i]);
}

TEST_CASE("Replay answers what-if questions with other options", "[replay][fashion]") {
  const TempDir& dir = shared_dir();
  const LiveRun& live = live_run(dir);

  // More patience: no stop within the recorded epochs; top-1: only the best one is kept.
  auto patient = std::make_shared<EarlyStopping>(early_stopping_options().patience(50));
  auto top1 =
      std::make_shared<ModelCheckpoint>(checkpoint_options(dir.file("checkpoints")).save_top_k(1));
  ReplaySession session(fit_options().enable_checkpointing(true), {patient, top1});
  record::RecordingReader reader(live.recording);
  session.replay(reader);
  session.finish();
  CHECK(patient->stopped_epoch() == 0);
  CHECK(paths(session.decisions(), Decision::Kind::kStop).empty());
  CHECK(top1->best_k_models().size() == 1);
  CHECK(top1->best_model_path() == live.checkpoint->best_model_path());
}

TEST_CASE("A replayed callback that needs the model gets an error naming the hook",
          "[replay][fashion]") {
  struct NeedsModel : Callback {
    void on_train_batch_end(Trainer&, Module& module, const StepOutput&, const Batch& batch,
                            int64_t batch_idx) override {
      module.training_step(batch, batch_idx);
    }
  };
  const LiveRun& live = live_run(shared_dir());
  ReplaySession session(fit_options(), {std::make_shared<NeedsModel>()});
  record::RecordingReader reader(live.recording);
  CHECK_THROWS_AS(session.replay(reader), replay::ReplayError);
  record::RecordingReader again(live.recording);
  ReplaySession second(fit_options(), {std::make_shared<NeedsModel>()});
  CHECK_THROWS_WITH(
      second.replay(again),
      Catch::Matchers::Contains("(train_batch_end, epoch 0, step 1)") &&
          Catch::Matchers::Contains("training_step cannot run (called from on_train_batch_end)"));
}

TEST_CASE("A replay never removes or writes a file, and its trainer runs nothing",
          "[replay][fashion]") {
  const TempDir& dir = shared_dir();
  const LiveRun& live = live_run(dir);
  // OnExceptionCheckpoint removes its checkpoint at teardown, live; the recording has a teardown.
  const std::string kept = dir.file("exceptions/on_exception.ckpt");
  std::filesystem::create_directories(kept);
  ReplaySession session(
      fit_options().enable_checkpointing(true),
      {std::make_shared<callbacks::OnExceptionCheckpoint>(dir.file("exceptions"), "on_exception")});
  record::RecordingReader reader(live.recording);
  session.replay(reader);
  session.finish();
  CHECK(std::filesystem::is_directory(kept));

  apps::FashionClassifier model;
  data::FashionMnistDataModule data;
  CHECK_THROWS_WITH(session.trainer().fit(model, data),
                    Catch::Matchers::Contains("the trainer of a replay"));
}

namespace {

// The (batch_idx, dataloader_idx) of every validation batch hook it sees.
class LoaderIndices : public Callback {
 public:
  void on_validation_batch_start(Trainer&, Module&, const Batch&, int64_t batch_idx,
                                 int64_t dataloader_idx) override {
    seen.push_back(std::to_string(batch_idx) + "/" + std::to_string(dataloader_idx));
  }
  std::vector<std::string> seen;
};

}  // namespace

TEST_CASE("A replayed validation with two loaders gives the hooks the recorded dataloader_idx",
          "[replay][dataloaders]") {
  TempDir dir;
  const std::string recording = dir.file("events.tbrec");
  auto live = std::make_shared<LoaderIndices>();
  {
    Trainer trainer(testing::trainer_options(), {live});
    trainer.add_observer(
        std::make_shared<record::Recorder>(record::RecorderOptions().path(recording)));
    testing::BoringModule module;
    auto loader = [](int64_t samples) {
      return std::make_shared<data::TensorDataLoader>(torch::randn({samples, 32}), at::Tensor(),
                                                      data::DataLoaderOptions().batch_size(2));
    };
    data::LoaderDataModule data(loader(4));
    data.with_val_dataloaders({loader(4), loader(2)});
    trainer.validate(module, data);
  }
  REQUIRE(live->seen == std::vector<std::string>{"0/0", "1/0", "0/1"});
  auto replayed = std::make_shared<LoaderIndices>();
  ReplaySession session(testing::trainer_options(), {replayed});
  record::RecordingReader reader(recording);
  session.replay(reader);
  session.finish();
  CHECK(replayed->seen == live->seen);
}
