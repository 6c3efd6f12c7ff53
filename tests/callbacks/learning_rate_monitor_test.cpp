// LearningRateMonitor: Lightning's key names, when it logs (scheduler intervals, log_every_n_steps,
// epoch starts) and at which step, momentum and weight decay, and its errors.
#include "callbacks/learning_rate_monitor.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/adam.h>
#include <torch/optim/schedulers/step_lr.h>
#include <torch/optim/sgd.h>

#include "tests/support/catch.h"

#include "core/trainer.h"
#include "observers/csv_logger.h"
#include "tests/support/boring.h"
#include "tests/support/capturing_logger.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using callbacks::LearningRateMonitor;
using callbacks::LearningRateMonitorOptions;
using Catch::Matchers::Contains;

namespace {

/// Two optimizers: Adam with two param groups (lr 1e-2 and 1e-3, weight decay 0.01 on the first)
/// under a StepLR halving every optimizer step, and SGD (lr 0.1, momentum 0.9) without a scheduler.
class TwoOptimizers : public BoringModule {
 public:
  OptimizerConfig configure_optimizers() override {
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<at::Tensor>{layer->weight},
                        std::make_unique<torch::optim::AdamOptions>(
                            torch::optim::AdamOptions(1e-2).weight_decay(0.01)));
    groups.emplace_back(std::vector<at::Tensor>{layer->bias},
                        std::make_unique<torch::optim::AdamOptions>(1e-3));
    auto adam = std::make_shared<torch::optim::Adam>(groups, torch::optim::AdamOptions(1e-3));
    auto sgd = std::make_shared<torch::optim::SGD>(parameters(),
                                                   torch::optim::SGDOptions(0.1).momentum(0.9));
    OptimizerConfig config;
    config.optimizers = {adam, sgd};
    SchedulerConfig schedule;
    schedule.scheduler = std::make_shared<torch::optim::StepLR>(*adam, 1, 0.5);
    schedule.interval = SchedulerInterval::kStep;
    schedule.optimizer_idx = 0;
    config.lr_schedulers = {schedule};
    return config;
  }
};

struct Logged {
  std::vector<int64_t> steps;
  std::vector<Metrics> rows;
  std::shared_ptr<LearningRateMonitor> monitor;
};

Logged fit_two_optimizers(LearningRateMonitorOptions options) {
  auto monitor = std::make_shared<LearningRateMonitor>(options);
  Trainer trainer(
      testing::trainer_options().max_epochs(2).log_every_n_steps(2).num_sanity_val_steps(0),
      {monitor});
  auto capture = std::make_shared<CapturingLogger>();
  trainer.add_observer(capture);
  TwoOptimizers module;
  RandomDataModule data(4);  // 4 batches an epoch
  data.has_val = false;
  trainer.fit(module, data);
  CHECK(trainer.callback_metrics().at("lr-SGD") == Approx(0.1));  // as Lightning, for monitors
  Logged result{{}, {}, monitor};
  for (const auto& event : capture->logged) {
    CHECK(event.logger.empty());  // one row for every logger
    result.steps.push_back(event.step);
    result.rows.push_back(event.metrics);
  }
  return result;
}

}  // namespace

TEST_CASE("LearningRateMonitor logs each scheduler at its interval, other optimizers always",
          "[callbacks][lr_monitor]") {
  const Logged logged = fit_two_optimizers({});
  // Epoch starts (steps 0 and 4): SGD only (its scheduler-less lr); the step-interval scheduler's
  // Adam is logged at batch starts where (global_step + 1) % 2 == 0, with SGD.
  REQUIRE(logged.steps == std::vector<int64_t>{0, 1, 3, 4, 5, 7});
  CHECK(logged.rows[0] == Metrics{{"lr-SGD", 0.1}});
  CHECK(logged.rows[3] == Metrics{{"lr-SGD", 0.1}});
  // StepLR(step_size 1, gamma 0.5) steps after every optimizer step. LibTorch's first step()
  // changes nothing (its LRScheduler::step reads the rates before counting the step; PyTorch's
  // constructor takes that step instead), so after g steps the rate is halved g - 1 times.
  REQUIRE(logged.rows[1].size() == 3);
  CHECK(logged.rows[1].at("lr-Adam/pg1") == Approx(1e-2));  // after 1 step
  CHECK(logged.rows[1].at("lr-Adam/pg2") == Approx(1e-3));
  CHECK(logged.rows[1].at("lr-SGD") == Approx(0.1));
  CHECK(logged.rows[2].at("lr-Adam/pg1") == Approx(1e-2 * 0.25));  // after 3 steps
  CHECK(logged.monitor->lrs().at("lr-SGD").size() == 6);
  CHECK(logged.monitor->lrs().at("lr-Adam/pg2").size() == 4);
}

TEST_CASE("LearningRateMonitor with logging_interval step or epoch, momentum and weight decay",
          "[callbacks][lr_monitor]") {
  const Logged by_step = fit_two_optimizers(
      LearningRateMonitorOptions().logging_interval("step").log_momentum(true).log_weight_decay(
          true));
  REQUIRE(by_step.steps == std::vector<int64_t>{1, 3, 5, 7});
  const Metrics& row = by_step.rows[0];
  CHECK(row.at("lr-Adam/pg1-momentum") == 0.9);  // Adam's beta1
  CHECK(row.at("lr-SGD-momentum") == 0.9);
  CHECK(row.at("lr-Adam/pg1-weight_decay") == 0.01);
  CHECK(row.at("lr-Adam/pg2-weight_decay") == 0.0);
  CHECK(row.at("lr-SGD-weight_decay") == 0.0);
  CHECK(by_step.monitor->lrs().count("lr-SGD-momentum") == 0);  // lrs holds learning rates only

  const Logged by_epoch =
      fit_two_optimizers(LearningRateMonitorOptions().logging_interval("epoch"));
  REQUIRE(by_epoch.steps == std::vector<int64_t>{0, 4});
  CHECK(by_epoch.rows[1].at("lr-Adam/pg1") == Approx(1e-2 * 0.125));  // after 4 steps (see above)
}

TEST_CASE("LearningRateMonitor names scheduled optimizers first, as Lightning does",
          "[callbacks][lr_monitor]") {
  // Two Adams: the second has an epoch scheduler, the first none; then an SGD whose scheduler is
  // named. Lightning names schedulers' optimizers first: the scheduled Adam is "lr-Adam", the
  // other "lr-Adam-1"; a named scheduler keeps its name and does not count.
  class ThreeOptimizers : public BoringModule {
   public:
    OptimizerConfig configure_optimizers() override {
      auto first = std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1));
      auto second =
          std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(2));
      auto sgd = std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(3));
      OptimizerConfig config;
      config.optimizers = {first, second, sgd};
      SchedulerConfig on_second;
      on_second.scheduler = std::make_shared<torch::optim::StepLR>(*second, 100);
      on_second.optimizer_idx = 1;  // interval: epoch
      SchedulerConfig named;
      named.scheduler = std::make_shared<torch::optim::StepLR>(*sgd, 100);
      named.optimizer_idx = 2;
      named.name = "my-sgd";
      config.lr_schedulers = {on_second, named};
      return config;
    }
  };
  auto monitor = std::make_shared<LearningRateMonitor>();
  Trainer trainer(testing::trainer_options().max_epochs(1).num_sanity_val_steps(0), {monitor});
  auto capture = std::make_shared<CapturingLogger>();
  trainer.add_observer(capture);
  ThreeOptimizers module;
  RandomDataModule data(2);
  data.has_val = false;
  trainer.fit(module, data);
  REQUIRE_FALSE(capture->logged.empty());
  // The epoch start: both epoch-interval schedulers' optimizers and the unscheduled Adam.
  CHECK(capture->logged[0].metrics == Metrics{{"lr-Adam", 2}, {"lr-Adam-1", 1}, {"my-sgd", 3}});
  CHECK(monitor->lrs().size() == 3);
}

TEST_CASE("A row logged through one LoggerHandle reaches that logger only",
          "[callbacks][lr_monitor]") {
  TempDir dir;
  class LogThroughSecond : public Callback {
    void on_train_epoch_end(Trainer& trainer, Module&) override {
      REQUIRE(trainer.loggers().size() == 2);
      trainer.loggers()[1].log_metrics({{"only_second", 1.0}}, trainer.global_step());
    }
  };
  Trainer trainer(testing::trainer_options().max_epochs(1).num_sanity_val_steps(0),
                  {std::make_shared<LogThroughSecond>()});
  trainer.add_observer(std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir((dir.path() / "first").string())));
  trainer.add_observer(std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir((dir.path() / "second").string())));
  CHECK(trainer.logger()->name() == "CsvLogger(" + (dir.path() / "first").string() + ")");
  BoringModule module;
  RandomDataModule data(2);
  data.has_val = false;
  trainer.fit(module, data);
  const auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  CHECK_THAT(read(dir.path() / "second" / "metrics.csv"), Contains("only_second"));
  CHECK_THAT(read(dir.path() / "first" / "metrics.csv"), !Contains("only_second"));
}

TEST_CASE("LearningRateMonitor refuses a trainer without a logger and a bad interval",
          "[callbacks][lr_monitor]") {
  Trainer trainer(testing::trainer_options().max_epochs(1),
                  {std::make_shared<LearningRateMonitor>()});
  BoringModule module;
  RandomDataModule data(4);
  CHECK_THROWS_WITH(trainer.fit(module, data),
                    Contains("Cannot use LearningRateMonitor callback with Trainer that has no "
                             "logger"));
  CHECK_THROWS_WITH(
      LearningRateMonitor(LearningRateMonitorOptions().logging_interval("batch")),
      Contains("logging_interval must be \"step\", \"epoch\" or unset") && Contains("\"batch\""));
}

TEST_CASE("LearningRateMonitor's values reach the CSV log as rows without an epoch",
          "[callbacks][lr_monitor]") {
  TempDir dir;
  Trainer trainer(
      testing::trainer_options().max_epochs(1).log_every_n_steps(1).num_sanity_val_steps(0),
      {std::make_shared<LearningRateMonitor>()});
  trainer.add_observer(std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir(dir.path().string())));
  REQUIRE(trainer.loggers().size() == 1);
  CHECK(trainer.loggers()[0].name() == "CsvLogger(" + dir.path().string() + ")");
  CHECK(trainer.log_dir() == dir.path().string());
  BoringModule module;  // SGD(lr=0.1)
  RandomDataModule data(3);
  data.has_val = false;
  trainer.fit(module, data);
  std::ifstream in(dir.path() / "metrics.csv");
  const std::string csv((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Header: epoch,lr-SGD,step; the epoch start's row (step 0) and one per batch (steps 0, 1, 2).
  CHECK_THAT(csv, Contains("epoch,lr-SGD,step\n,0.1,0\n,0.1,0\n,0.1,1\n,0.1,2\n"));
}
