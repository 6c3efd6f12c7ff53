// Observers that write files, added with every_rank on a rank other than 0: each rank writes files
// of its own beside rank 0's (a CsvLogger's and a TensorBoardLogger's in log_dir/rank_R, a
// Recorder's with .rankR before the extension), never into rank 0's; one process and rank 0 keep
// their paths. One process plays rank 1 of 2 (testing::PlaysRank) in the same directory as a run
// of rank 0 made before it.
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
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
#include "tests/support/plays_rank.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::read_tensorboard_events;
using trainbus::testing::read_text_file;
using trainbus::testing::TempDir;

namespace {

namespace fs = std::filesystem;

/// Logs a value every step, so that every logger has rows to write.
class LogsEveryStep : public testing::BoringModule {
 public:
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    log("a", static_cast<double>(batch_idx), LogOptions().on_step(true).on_epoch(false));
    return BoringModule::training_step(batch, batch_idx);
  }
};

/// Rank `rank` of a job of `world_size` (one process when world_size is 1), default_root_dir
/// `root` unless empty.
Trainer trainer_playing(int rank, int world_size = 2, const std::string& root = "") {
  TrainerOptions options = testing::trainer_options();
  if (!root.empty()) options.default_root_dir(root);
  options.max_epochs(1).limit_train_batches(3).limit_val_batches(0).log_every_n_steps(1);
  options.enable_model_summary(false).num_sanity_val_steps(0);
  if (world_size > 1)
    options.strategy(std::make_shared<testing::PlaysRank>(world_size, rank, rank));
  return Trainer(options);
}

void fit_logging(Trainer& trainer) {
  LogsEveryStep module;
  testing::RandomDataModule data;
  trainer.fit(module, data);
}

/// Every file under `dir`, by its path relative to it, with its content.
std::map<std::string, std::string> contents_under(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file())
      files[fs::relative(entry.path(), dir).string()] = read_text_file(entry.path().string());
  }
  return files;
}

/// What changed under a directory between two contents_under: "+name" (new), "-name" (gone),
/// "~name" (another content), in name order. Names only, so that a failure prints no binary.
std::vector<std::string> changes(const std::map<std::string, std::string>& before,
                                 const std::map<std::string, std::string>& after) {
  std::vector<std::string> changed;
  std::set<std::string> names;
  for (const auto& [name, content] : before) names.insert(name);
  for (const auto& [name, content] : after) names.insert(name);
  for (const std::string& name : names) {
    const auto was = before.find(name);
    const auto is = after.find(name);
    if (was == before.end()) {
      changed.push_back("+" + name);
    } else if (is == after.end()) {
      changed.push_back("-" + name);
    } else if (was->second != is->second) {
      changed.push_back("~" + name);
    }
  }
  return changed;
}

std::vector<std::string> sorted_names_in(const std::string& dir) {
  const std::set<std::string> names = testing::names_in(dir);
  return {names.begin(), names.end()};
}

bool is_tensorboard_file(const std::string& name) {
  return name.rfind("events.out.tfevents.", 0) == 0;
}

/// The observers each test adds: the loggers write a row every step, the Recorder at `path` (with
/// .rankR before the extension on a rank R > 0).
std::shared_ptr<observers::CsvLogger> csv_logger(const std::string& log_dir) {
  return std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir(log_dir).log_every_n_steps(1));
}
std::shared_ptr<observers::TensorBoardLogger> tensorboard_logger(const std::string& log_dir) {
  return std::make_shared<observers::TensorBoardLogger>(
      observers::TensorBoardLoggerOptions().log_dir(log_dir).log_every_n_steps(1));
}
std::shared_ptr<record::Recorder> recorder(const std::string& path) {
  return std::make_shared<record::Recorder>(record::RecorderOptions().path(path));
}

/// add_observer's options for an observer that runs on every rank.
events::ObserverOptions every_rank() { return events::ObserverOptions().every_rank(true); }

/// `run` holds what one process (or rank 0) writes: metrics.csv of fit_logging's three steps,
/// hparams.yaml, an event file and events.tbrec, nothing else.
void check_rank_zero_files(const std::string& run) {
  const std::vector<std::string> names = sorted_names_in(run);
  REQUIRE(names.size() == 4);
  CHECK(is_tensorboard_file(names[0]));
  CHECK(names[1] == "events.tbrec");
  CHECK(names[2] == "hparams.yaml");
  CHECK(names[3] == "metrics.csv");
  CHECK(read_text_file(run + "/metrics.csv") == "a,epoch,step\n0,0,0\n1,0,1\n2,0,2\n");
}

/// The recording at `path` is a whole one of rank `rank` of `world_size`: its header and every
/// record name that rank, and it ended cleanly.
void check_recording_of(const std::string& path, int rank, int world_size) {
  record::RecordingReader reader(path);
  CHECK(reader.header().rank() == rank);
  CHECK(reader.header().world_size() == world_size);
  record::v1::Envelope envelope;
  int events = 0;
  while (reader.next(envelope)) {
    CHECK(envelope.rank() == rank);
    ++events;
  }
  CHECK(events > 0);
  CHECK(reader.summary().clean_end);
}

/// Rank 0's run in `run` (one process: the paths rank 0 of a job uses too), checked to be where
/// one process has always written: metrics.csv, hparams.yaml, the event file and events.tbrec in
/// `run` itself, the recording naming rank 0 of 1.
void write_rank_zero_run(const std::string& run) {
  Trainer trainer = trainer_playing(0, 1);
  auto csv = csv_logger(run);
  auto tensorboard = tensorboard_logger(run);
  auto recording = recorder(run + "/events.tbrec");
  trainer.add_observer(csv);
  trainer.add_observer(tensorboard);
  trainer.add_observer(recording);
  fit_logging(trainer);
  CHECK(csv->metrics_file() == (fs::path(run) / "metrics.csv").string());
  CHECK(csv->hparams_file() == (fs::path(run) / "hparams.yaml").string());
  CHECK(fs::path(tensorboard->file_path()).parent_path() == fs::path(run));
  CHECK(recording->path() == run + "/events.tbrec");
  check_rank_zero_files(run);
  // The recording is still open (the trainer's pool holds the Recorder): its header only.
  record::RecordingReader reader(recording->path());
  CHECK(reader.header().rank() == 0);
  CHECK(reader.header().world_size() == 1);
}

/// A directory where rank 0's run was written (write_rank_zero_run), for a test of what another
/// rank adds beside it.
struct RankZeroRun {
  TempDir dir;
  const std::string run = dir.file("run");
  const std::map<std::string, std::string> rank_zero = [this] {
    write_rank_zero_run(run);
    return contents_under(run);
  }();

  /// What changed under `run` since rank 0's run, as changes().
  std::vector<std::string> changed() const { return changes(rank_zero, contents_under(run)); }
};

}  // namespace

TEST_CASE_METHOD(RankZeroRun,
                 "A CsvLogger with every_rank on rank 1 writes log_dir/rank_1, rank 0's files "
                 "untouched",
                 "[core][observers][csv][ranks]") {
  Trainer trainer = trainer_playing(1, 2);
  auto csv = csv_logger(run);
  trainer.add_observer(csv, every_rank());
  fit_logging(trainer);

  CHECK(csv->metrics_file() == (fs::path(run) / "rank_1" / "metrics.csv").string());
  CHECK(read_text_file(dir.file("run/rank_1/metrics.csv")) ==
        "a,epoch,step\n0,0,0\n1,0,1\n2,0,2\n");
  CHECK(fs::exists(dir.file("run/rank_1/hparams.yaml")));
  // The logger's directory, and the trainer's (where checkpoints go), stay rank 0's.
  CHECK(csv->log_dir() == run);
  CHECK(trainer.log_dir() == run);
  // Rank 1's files are new; none of rank 0's changed.
  CHECK(changed() == std::vector<std::string>{"+rank_1/hparams.yaml", "+rank_1/metrics.csv"});
}

TEST_CASE_METHOD(RankZeroRun,
                 "A TensorBoardLogger with every_rank on rank 1 writes its event file in "
                 "log_dir/rank_1",
                 "[core][observers][tensorboard][ranks]") {
  Trainer trainer = trainer_playing(1, 2);
  auto tensorboard = tensorboard_logger(run);
  trainer.add_observer(tensorboard, every_rank());
  fit_logging(trainer);

  // TensorBoard reads a directory as one run: rank 1's is a run of its own.
  CHECK(fs::path(tensorboard->file_path()).parent_path() == fs::path(run) / "rank_1");
  const std::vector<std::string> names = sorted_names_in(dir.file("run/rank_1"));
  REQUIRE(names.size() == 2);
  CHECK(is_tensorboard_file(names[0]));
  CHECK(names[1] == "hparams.yaml");
  CHECK(read_tensorboard_events(tensorboard->file_path()).size() == 1 + 3);  // version, 3 steps
  CHECK(tensorboard->log_dir() == run);
  CHECK(changed() == std::vector<std::string>{"+rank_1/" + names[0], "+rank_1/hparams.yaml"});
}

TEST_CASE_METHOD(RankZeroRun,
                 "A Recorder with every_rank on rank 1 records events.rank1.tbrec as rank 1 of 2",
                 "[core][record][ranks]") {
  {
    Trainer trainer = trainer_playing(1, 2);
    // Neither rank nor world size set: the trainer's.
    auto recording = recorder(run + "/events.tbrec");
    trainer.add_observer(recording, every_rank());
    CHECK(recording->path() == run + "/events.rank1.tbrec");
    fit_logging(trainer);
  }  // the trainer's pool lets the recorder go: the recording ends

  check_recording_of(run + "/events.rank1.tbrec", 1, 2);
  CHECK(changed() == std::vector<std::string>{"+events.rank1.tbrec"});
}

TEST_CASE("Observers a trainer does not run on rank 1 (no every_rank) write no file",
          "[core][observers][ranks]") {
  TempDir dir;
  const std::string run = dir.file("run");
  {
    Trainer trainer = trainer_playing(1, 2);
    trainer.add_observer(csv_logger(run));
    trainer.add_observer(tensorboard_logger(run));
    trainer.add_observer(recorder(run + "/events.tbrec"));
    fit_logging(trainer);
  }
  // Not even an empty event file or recording where rank 0's go, nor the run directory.
  CHECK(changes({}, contents_under(dir.path().string())) == std::vector<std::string>{});
  CHECK_FALSE(fs::exists(run));
}

TEST_CASE("Rank 0 of a job of 2 writes in log_dir itself and records events.tbrec as rank 0 of 2",
          "[core][observers][record][ranks]") {
  TempDir dir;
  const std::string run = dir.file("run");
  {
    Trainer trainer = trainer_playing(0, 2);
    auto csv = csv_logger(run);
    auto tensorboard = tensorboard_logger(run);
    auto recording = recorder(run + "/events.tbrec");
    trainer.add_observer(csv, every_rank());
    trainer.add_observer(tensorboard, every_rank());
    trainer.add_observer(recording, every_rank());
    fit_logging(trainer);
    CHECK(csv->files_dir() == run);
    CHECK(csv->metrics_file() == (fs::path(run) / "metrics.csv").string());
    CHECK(fs::path(tensorboard->file_path()).parent_path() == fs::path(run));
    CHECK(recording->path() == run + "/events.tbrec");
    CHECK(trainer.log_dir() == run);
  }
  check_rank_zero_files(run);
  check_recording_of(run + "/events.tbrec", 0, 2);
}

TEST_CASE("An observer that cannot write its rank's files is not added, and the trainer still fits",
          "[core][observers][ranks]") {
  TempDir dir;
  const std::string run = dir.file("run");
  fs::create_directories(run);
  std::ofstream(run + "/rank_1") << "a file where rank 1's directory should go";
  Trainer trainer = trainer_playing(1, 2, dir.file("root"));
  trainer.add_observer(recorder(dir.file("events.tbrec")), every_rank());
  REQUIRE(trainer.observer_pool() != nullptr);
  const size_t observers = trainer.observer_pool()->size();
  CHECK_THROWS_WITH(
      trainer.add_observer(tensorboard_logger(run), every_rank()),
      Catch::Contains(run + "/rank_1") && Catch::Contains("cannot create the run directory"));
  CHECK(trainer.loggers().empty());
  CHECK(trainer.log_dir() == dir.file("root"));
  CHECK(trainer.observer_pool()->size() == observers);
  fit_logging(trainer);
  CHECK(trainer.observer_pool()->size() == observers);
  CHECK(read_text_file(run + "/rank_1") == "a file where rank 1's directory should go");
}

TEST_CASE("A Recorder's explicit world size must be the trainer's", "[core][record][ranks]") {
  TempDir dir;
  Trainer trainer = trainer_playing(1, 2);
  CHECK_THROWS_MATCHES(
      trainer.add_observer(
          std::make_shared<record::Recorder>(
              record::RecorderOptions().path(dir.file("events.tbrec")).rank(1).world_size(3)),
          every_rank()),
      MisconfigurationError,
      Catch::Matchers::Message("Recorder(" + dir.file("events.tbrec") +
                               "): RecorderOptions::world_size is 3 but the job it is added in has "
                               "2 processes; leave world_size unset"));
  CHECK(sorted_names_in(dir.path().string()).empty());
}

TEST_CASE("A Recorder's explicit rank must be the rank it is added on, and a named file is kept",
          "[core][record][ranks]") {
  TempDir dir;
  Trainer trainer = trainer_playing(1, 2);
  SECTION("rank 0 set on rank 1: refused, nothing written") {
    CHECK_THROWS_MATCHES(
        trainer.add_observer(std::make_shared<record::Recorder>(
                                 record::RecorderOptions().path(dir.file("events.tbrec")).rank(0)),
                             every_rank()),
        MisconfigurationError,
        Catch::Matchers::Message("Recorder(" + dir.file("events.tbrec") +
                                 "): RecorderOptions::rank is 0 but it is added on rank 1 of 2; "
                                 "leave rank unset and each rank's Recorder records under its "
                                 "own"));
    CHECK(changes({}, contents_under(dir.path().string())) == std::vector<std::string>{});
  }
  SECTION("rank 1 of 2 set with the rank's own file (as trainbus fit did): that file") {
    auto recording = std::make_shared<record::Recorder>(
        record::RecorderOptions().path(dir.file("events.rank1.tbrec")).rank(1).world_size(2));
    trainer.add_observer(recording, every_rank());
    CHECK(recording->path() == dir.file("events.rank1.tbrec"));
    CHECK(sorted_names_in(dir.path().string()) == std::vector<std::string>{"events.rank1.tbrec"});
  }
  SECTION(
      "the rank's own file without the rank set: marked again (the same options on rank 0 "
      "would be refused, never the same file)") {
    auto recording = recorder(dir.file("events.rank1.tbrec"));
    trainer.add_observer(recording, every_rank());
    CHECK(recording->path() == dir.file("events.rank1.rank1.tbrec"));
  }
}

TEST_CASE("The same Recorder options on rank 0 and rank 1 of a job record two files",
          "[core][record][ranks]") {
  TempDir dir;
  const auto recorder_on = [&](int rank, const std::string& path) {
    Trainer trainer = trainer_playing(rank, 2);
    auto recording = recorder(path);
    trainer.add_observer(recording, every_rank());
    return recording->path();
  };
  SECTION("events.tbrec") {
    CHECK(recorder_on(0, dir.file("events.tbrec")) == dir.file("events.tbrec"));
    CHECK(recorder_on(1, dir.file("events.tbrec")) == dir.file("events.rank1.tbrec"));
  }
  SECTION(
      "a path marked .rank1 (trainbus fit --record-path x/events.rank1.tbrec): rank 0 refuses") {
    CHECK_THROWS_AS(recorder_on(0, dir.file("events.rank1.tbrec")), MisconfigurationError);
    CHECK_THROWS_WITH(
        recorder_on(0, dir.file("events.rank1.tbrec")),
        Catch::Contains(dir.file("events.rank1.tbrec")) && Catch::Contains("without .rank1"));
    CHECK(recorder_on(1, dir.file("events.rank1.tbrec")) == dir.file("events.rank1.rank1.tbrec"));
    CHECK(sorted_names_in(dir.path().string()) ==
          std::vector<std::string>{"events.rank1.rank1.tbrec"});
  }
}
