// SpikeDetection: Lightning's rule (not better than the last loss, beyond atol and rtol from the
// running mean, or not finite), the skip list on disk, the exception through on_exception, and
// its state across a resume.
#include "callbacks/spike_detection.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/catch.h"

#include "callbacks/lambda_callback.h"
#include "callbacks/on_exception_checkpoint.h"
#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using callbacks::SpikeDetection;
using callbacks::SpikeDetectionOptions;
using callbacks::TrainingSpikeException;
using Catch::Matchers::Contains;

namespace {

/// training_step returns losses[global step] (with a graph, so that backward runs).
class ScriptedLoss : public BoringModule {
 public:
  explicit ScriptedLoss(std::vector<double> losses) : losses_(std::move(losses)) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    const double value = losses_.at(static_cast<std::size_t>(trainer().global_step()));
    return BoringModule::training_step(batch, batch_idx).loss() * 0.0 + value;
  }

 private:
  std::vector<double> losses_;
};

struct SpikeRun {
  std::shared_ptr<SpikeDetection> callback;
  int64_t steps = 0;
  std::string error;         // what fit threw, if anything
  std::string on_exception;  // what on_exception saw
  int64_t spike_batch = -1;  // TrainingSpikeException::batch_idx
};

SpikeRun run(SpikeDetectionOptions options, std::vector<double> losses, const TempDir& dir) {
  if (options.exclude_batches_path().empty()) options.exclude_batches_path(dir.path().string());
  SpikeRun result;
  result.callback = std::make_shared<SpikeDetection>(options);
  auto watcher = std::make_shared<callbacks::LambdaCallback>(callbacks::LambdaHooks().on_exception(
      [&](Trainer&, Module&, const std::exception& error) { result.on_exception = error.what(); }));
  ScriptedLoss module(losses);
  RandomDataModule data(static_cast<int64_t>(losses.size()), 1);
  Trainer trainer(
      testing::trainer_options().max_epochs(1).num_sanity_val_steps(0).limit_val_batches(0),
      {result.callback, watcher});
  try {
    trainer.fit(module, data);
  } catch (const TrainingSpikeException& spike) {
    result.error = spike.what();
    result.spike_batch = spike.batch_idx();
  }
  result.steps = trainer.global_step();
  return result;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

const double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEST_CASE("SpikeDetection raises on a loss far above the running mean and lists the batches",
          "[callbacks][spike]") {
  TempDir dir;
  const SpikeRun result = run({}, {1.0, 1.0, 0.9, 0.9, 5.0, 1.0, 1.0}, dir);
  // mean(1, 1, .9, .9) = .95; |5 - .95| = 4.05 >= 2 x .95: a spike at batch 4.
  CHECK(result.spike_batch == 4);
  CHECK(result.error == "Training spike detected in batch 4");
  CHECK(result.on_exception == "Training spike detected in batch 4");
  CHECK(result.steps == 5);  // batch 4's step was taken before on_train_batch_end
  CHECK(result.callback->bad_batches() == std::vector<int64_t>{3, 4});
  const std::string path = (dir.path() / "skip_batches.json").string();
  CHECK(result.callback->exclude_batches_path() == path);
  CHECK(read_file(path) == "[\n    3,\n    4\n]");
}

TEST_CASE("SpikeDetection: improvements, small rises and the warmup are not spikes",
          "[callbacks][spike]") {
  TempDir dir;
  SECTION("a loss that falls, however far, is an improvement") {
    CHECK(run({}, {1.0, 1.0, 0.01, 0.01}, dir).error.empty());
    CHECK_FALSE(std::filesystem::exists(dir.path() / "skip_batches.json"));  // no spike, no list
  }
  SECTION("a rise within rtol x mean") {
    CHECK(run({}, {1.0, 1.0, 2.9, 1.0}, dir).error.empty());  // |2.9 - 1| < 2 x 1
  }
  SECTION("beyond rtol but within atol") {
    const SpikeRun result = run(SpikeDetectionOptions().atol(10.0), {1.0, 1.0, 5.0, 1.0}, dir);
    CHECK(result.error.empty());
  }
  SECTION("beyond both tolerances") {
    const SpikeRun result = run(SpikeDetectionOptions().atol(1.0), {1.0, 1.0, 5.0, 1.0}, dir);
    CHECK(result.spike_batch == 2);
  }
  SECTION("batches before warmup are not checked") {
    const SpikeRun result = run(SpikeDetectionOptions().warmup(3), {1.0, 1.0, 50.0, 1.0}, dir);
    CHECK(result.error.empty());
  }
  SECTION("mode max: a fall is the spike") {
    CHECK(run(SpikeDetectionOptions().mode("max"), {1.0, 1.0, 5.0, 5.0}, dir).error.empty());
    CHECK(
        run(SpikeDetectionOptions().mode("max").rtol(0.5), {1.0, 1.0, 0.1, 1.0}, dir).spike_batch ==
        2);
  }
}

TEST_CASE("SpikeDetection: a non-finite loss is a spike unless finite_only is false",
          "[callbacks][spike]") {
  TempDir dir;
  CHECK(run({}, {1.0, 1.0, kNaN, 1.0}, dir).spike_batch == 2);
  const SpikeRun ignored = run(SpikeDetectionOptions().finite_only(false), {1.0, kNaN, 1.0}, dir);
  CHECK(ignored.error.empty());
  CHECK(ignored.callback->running_mean() == 1.0);  // the NaN is kept out of the mean
}

TEST_CASE("SpikeDetection appends to the skip list across a resume", "[callbacks][spike]") {
  SpikeDetection first(SpikeDetectionOptions().window(3));
  SpikeDetection resumed(SpikeDetectionOptions().window(2));
  StateDict state;
  state.insert("last_val", 2.0);
  state.insert("bad_batches", c10::List<int64_t>(std::vector<int64_t>{6, 7}));
  state.insert("bad_batches_path", std::string("/somewhere/skip_batches.json"));
  state.insert("window", c10::List<double>(std::vector<double>{1.0, 2.0, 3.0}));
  resumed.load_state_dict(state);
  CHECK(resumed.bad_batches() == std::vector<int64_t>{6, 7});
  CHECK(resumed.running_mean() == 2.5);  // the last 2 of the window
  CHECK(resumed.exclude_batches_path() == "/somewhere/skip_batches.json");
  const StateDict saved = resumed.state_dict();
  CHECK(saved.at("last_val").toDouble() == 2.0);
  CHECK(saved.at("mode").toStringRef() == "min");
  CHECK(saved.at("rtol").toDouble() == 2.0);
  CHECK(saved.at("atol").isNone());
  CHECK(first.state_dict().at("bad_batches").toIntVector().empty());
}

TEST_CASE("SpikeDetection refuses bad options and a step without a loss", "[callbacks][spike]") {
  CHECK_THROWS_WITH(SpikeDetection(SpikeDetectionOptions().mode("lowest")),
                    Contains("mode must be min or max") && Contains("'lowest'"));
  CHECK_THROWS_WITH(SpikeDetection(SpikeDetectionOptions().window(0)), Contains("window"));
  CHECK_THROWS_WITH(SpikeDetection(SpikeDetectionOptions().warmup(-1)), Contains("warmup"));

  class NoLoss : public BoringModule {
   public:
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      (void)BoringModule::training_step(batch, batch_idx);
      return {};  // Lightning's "skip this batch"
    }
  };
  NoLoss module;
  RandomDataModule data(4, 1);
  Trainer trainer(
      testing::trainer_options().max_epochs(1).num_sanity_val_steps(0).limit_val_batches(0),
      {std::make_shared<SpikeDetection>()});
  CHECK_THROWS_WITH(trainer.fit(module, data),
                    Contains("SpikeDetection watches the loss") && Contains("batch 0"));
}

TEST_CASE("SpikeDetection: a NaN in the warmup holds a place in the window, not in the mean",
          "[callbacks][spike]") {
  TempDir dir;
  // Lightning's MeanMetric drops a NaN: the mean after batches 0-2 is mean(1, 1) = 1, and 5.0 at
  // batch 3 is a spike (|5 - 1| >= 2 x 1). A mean made NaN by it would find none.
  const SpikeRun result = run(SpikeDetectionOptions().warmup(2), {kNaN, 1.0, 1.0, 5.0, 1.0}, dir);
  CHECK(result.spike_batch == 3);
  SpikeDetection window_of_two(SpikeDetectionOptions().window(2));
  StateDict state;
  state.insert("last_val", 1.0);
  state.insert("bad_batches", c10::List<int64_t>());
  state.insert("bad_batches_path", std::string());
  state.insert("window", c10::List<double>(std::vector<double>{3.0, kNaN, 1.0}));
  window_of_two.load_state_dict(state);
  CHECK(window_of_two.running_mean() == 1.0);  // the last two: NaN (no weight) and 1
}

TEST_CASE("SpikeDetection's skip list grows across a resume from the spike's checkpoint",
          "[callbacks][spike]") {
  TempDir dir;
  const std::string skip_list = (dir.path() / "skip.json").string();
  const auto options = SpikeDetectionOptions().exclude_batches_path(skip_list);
  // One epoch of 8 batches; spikes at batches 3 and 6 (the script is indexed by global step).
  const std::vector<double> losses{1.0, 1.0, 1.0, 9.0, 1.0, 1.0, 9.0, 1.0};
  auto saver = std::make_shared<callbacks::OnExceptionCheckpoint>(dir.path().string());
  {
    ScriptedLoss module(losses);
    RandomDataModule data(8, 1);
    Trainer trainer(testing::trainer_options()
                        .enable_checkpointing(true)
                        .max_epochs(1)
                        .num_sanity_val_steps(0)
                        .limit_val_batches(0),
                    {std::make_shared<SpikeDetection>(options), saver});
    CHECK_THROWS_AS(trainer.fit(module, data), TrainingSpikeException);
  }
  CHECK(read_file(skip_list) == "[\n    2,\n    3\n]");
  const std::string checkpoint = (dir.path() / "on_exception.ckpt").string();
  REQUIRE(std::filesystem::exists(checkpoint));

  auto resumed = std::make_shared<SpikeDetection>(options);
  ScriptedLoss module(losses);
  RandomDataModule data(8, 1);
  Trainer trainer(
      testing::trainer_options().max_epochs(1).num_sanity_val_steps(0).limit_val_batches(0),
      {resumed});
  CHECK_THROWS_WITH(trainer.fit(module, data, FitOptions().ckpt_path(checkpoint)),
                    "Training spike detected in batch 6");
  CHECK(resumed->bad_batches() == std::vector<int64_t>{2, 3, 5, 6});
  CHECK(read_file(skip_list) == "[\n    2,\n    3,\n    5,\n    6\n]");
}
