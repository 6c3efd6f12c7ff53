// DeviceStatsMonitor: Lightning's keys ("DeviceStatsMonitor.<hook>/<stat>"), when it logs
// (log_every_n_steps, validation and test batches), cpu_stats and filter_keys, and its errors.
#include "callbacks/device_stats_monitor.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/support/catch.h"

#include "core/trainer.h"
#include "tests/support/boring.h"
#include "tests/support/capturing_logger.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::callbacks;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

TrainerOptions small_run() {
  return testing::trainer_options().max_epochs(1).num_sanity_val_steps(0).limit_val_batches(2);
}

}  // namespace

TEST_CASE("DeviceStatsMonitor logs the CPU's stats around each logged batch (Linux)",
          "[callbacks][device_stats]") {
  auto logger = std::make_shared<CapturingLogger>();
  auto monitor = std::make_shared<DeviceStatsMonitor>();
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(small_run().log_every_n_steps(2), {monitor});
  trainer.add_observer(logger);
  trainer.fit(module, data);
  trainer.test(module, data);

  std::vector<std::string> hooks_at_steps;
  for (const auto& row : logger->logged) {
    REQUIRE(row.metrics.size() == 4);
    const std::string key = row.metrics.begin()->first;
    hooks_at_steps.push_back(key.substr(0, key.find('/')) + "@" + std::to_string(row.step));
    for (const auto& [name, value] : row.metrics) {
      INFO(name);
      CHECK(value >= 0);
      if (name.find("percent") != std::string::npos) CHECK(value <= 100);
    }
  }
  // Lightning's rows with log_every_n_steps=2 (_LoggerConnector.should_update_logs): in training
  // where (fit_loop.epoch_loop._batches_that_stepped + 1) % 2 == 0, i.e. around batches 1 and 3
  // (a batch's own step counts only after its end hooks and the validation after it); in an
  // evaluation loop where its batch_progress.current.ready (batches begun, 1-based) % 2 == 0, i.e.
  // around the 2nd validation batch and the 2nd and 4th test batches. Rows are at
  // _batches_that_stepped: 3 during the epoch-end validation, 4 in the test after the fit.
  CHECK(hooks_at_steps ==
        std::vector<std::string>{
            "DeviceStatsMonitor.on_train_batch_start@1", "DeviceStatsMonitor.on_train_batch_end@1",
            "DeviceStatsMonitor.on_train_batch_start@3", "DeviceStatsMonitor.on_train_batch_end@3",
            "DeviceStatsMonitor.on_validation_batch_start@3",
            "DeviceStatsMonitor.on_validation_batch_end@3",
            "DeviceStatsMonitor.on_test_batch_start@4", "DeviceStatsMonitor.on_test_batch_end@4",
            "DeviceStatsMonitor.on_test_batch_start@4", "DeviceStatsMonitor.on_test_batch_end@4"});
  const std::set<std::string> keys = [&] {
    std::set<std::string> names;
    for (const auto& [name, value] : logger->logged.at(0).metrics) names.insert(name);
    return names;
  }();
  CHECK(keys == std::set<std::string>{"DeviceStatsMonitor.on_train_batch_start/cpu_percent",
                                      "DeviceStatsMonitor.on_train_batch_start/cpu_swap_percent",
                                      "DeviceStatsMonitor.on_train_batch_start/cpu_vm_percent",
                                      "DeviceStatsMonitor.on_train_batch_start/process_rss_mb"});
  CHECK(monitor->last_logged().at("DeviceStatsMonitor.on_test_batch_end/process_rss_mb") > 1);
}

TEST_CASE("DeviceStatsMonitor logs validation and test batches when the loggers take steps",
          "[callbacks][device_stats]") {
  auto logger = std::make_shared<CapturingLogger>();
  BoringModule module;
  RandomDataModule data(4, 1);
  Trainer trainer(small_run().log_every_n_steps(1),
                  {std::make_shared<DeviceStatsMonitor>(
                      DeviceStatsMonitorOptions().filter_keys({"cpu_percent", "gpu_util"}))});
  trainer.add_observer(logger);
  trainer.fit(module, data);
  trainer.test(module, data);
  std::multiset<std::string> hooks;
  for (const auto& row : logger->logged) {
    REQUIRE(row.metrics.size() == 1);  // filtered to cpu_percent
    const std::string key = row.metrics.begin()->first;
    CHECK_THAT(key, Contains("/cpu_percent"));
    hooks.insert(key.substr(0, key.find('/')));
  }
  CHECK(hooks.count("DeviceStatsMonitor.on_train_batch_start") == 4);
  CHECK(hooks.count("DeviceStatsMonitor.on_train_batch_end") == 4);
  CHECK(hooks.count("DeviceStatsMonitor.on_validation_batch_start") == 2);
  CHECK(hooks.count("DeviceStatsMonitor.on_validation_batch_end") == 2);
  CHECK(hooks.count("DeviceStatsMonitor.on_test_batch_start") == 4);
  CHECK(hooks.count("DeviceStatsMonitor.on_test_batch_end") == 4);
}

TEST_CASE(
    "DeviceStatsMonitor with cpu_stats false logs nothing on the CPU, without a logger it "
    "refuses",
    "[callbacks][device_stats]") {
  auto logger = std::make_shared<CapturingLogger>();
  BoringModule module;
  RandomDataModule data(4, 1);
  {
    Trainer trainer(
        small_run().log_every_n_steps(1),
        {std::make_shared<DeviceStatsMonitor>(DeviceStatsMonitorOptions().cpu_stats(false))});
    trainer.add_observer(logger);
    trainer.fit(module, data);
    CHECK(logger->logged.empty());
  }
  DeviceStatsMonitor reader;
  for (int reading = 0; reading < 3; ++reading) {  // back to back: a tiny interval, still in range
    const double percent = reader.device_stats(c10::Device(c10::kCPU)).at("cpu_percent");
    CHECK(percent >= 0);
    CHECK(percent <= 100);
  }
  Trainer no_logger(small_run(), {std::make_shared<DeviceStatsMonitor>()});
  CHECK_THROWS_WITH(no_logger.fit(module, data),
                    Contains("Cannot use the DeviceStatsMonitor callback without a logger"));
}
