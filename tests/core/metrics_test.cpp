// Module::log reductions and where the values land (Lightning's self.log semantics).
#include "tests/support/catch.h"

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "core/metrics_collector.h"
#include "core/trainer.h"
#include "events/all.h"
#include "tests/support/boring.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;
using Catch::Matchers::Contains;

namespace {

/// Logs the batch index from every training and validation step, with the given options.
class IndexLogger : public BoringModule {
 public:
  explicit IndexLogger(LogOptions train_options = {}, LogOptions val_options = {})
      : train_options_(train_options), val_options_(val_options) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    log("a", static_cast<double>(batch_idx), train_options_);
    return BoringModule::training_step(batch, batch_idx);
  }
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    log("v", static_cast<double>(batch_idx), val_options_);
    return {};
  }

 private:
  LogOptions train_options_, val_options_;
};

TrainerOptions one_epoch(int64_t val_batches = 0) {
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_val_batches(val_batches);
  options.num_sanity_val_steps(0);
  return options;
}

}  // namespace

TEST_CASE("on_step and on_epoch fork the names, the epoch value is a batch-size-weighted mean",
          "[core][log]") {
  Trainer trainer(one_epoch());
  IndexLogger module(LogOptions().on_step(true).on_epoch(true).prog_bar(true));
  RandomDataModule data(10, 4);  // batches of 4, 4 and 2 samples
  trainer.fit(module, data);

  const double epoch_mean = (0.0 * 4 + 1.0 * 4 + 2.0 * 2) / 10;
  CHECK(trainer.logged_metrics() == Metrics{{"a_epoch", epoch_mean}, {"a_step", 2.0}});
  CHECK(trainer.callback_metrics() ==
        Metrics{{"a", epoch_mean}, {"a_epoch", epoch_mean}, {"a_step", 2.0}});
  CHECK(trainer.progress_bar_metrics() == Metrics{{"a_epoch", epoch_mean}, {"a_step", 2.0}});
}

TEST_CASE("Defaults: training logs per step, validation logs epoch means", "[core][log]") {
  Trainer trainer(one_epoch(/*val_batches=*/3));
  IndexLogger module;
  RandomDataModule data(10, 4);
  trainer.fit(module, data);

  const double val_mean = (0.0 * 4 + 1.0 * 4 + 2.0 * 2) / 10;
  CHECK(trainer.logged_metrics() == Metrics{{"a", 2.0}, {"v", val_mean}});
  CHECK(trainer.callback_metrics() == Metrics{{"a", 2.0}, {"v", val_mean}});
  CHECK(trainer.progress_bar_metrics().empty());
}

TEST_CASE("validate and test return the epoch values they logged", "[core][log]") {
  Trainer trainer(testing::trainer_options());
  IndexLogger module;
  RandomDataModule data(10, 4);
  CHECK(trainer.validate(module, data) == Metrics{{"v", 0.8}});
  BoringModule boring;
  const Metrics tested = trainer.test(boring, data);
  REQUIRE(tested.count("test_loss") == 1);
  CHECK(tested.at("test_loss") > 0.0);
}

TEST_CASE("What the sanity check logs does not count", "[core][log]") {
  TrainerOptions options = one_epoch(2);
  options.num_sanity_val_steps(2);
  options.check_val_every_n_epoch(2);  // no validation in the single epoch
  Trainer trainer(options);
  IndexLogger module;
  RandomDataModule data(10, 4);
  trainer.fit(module, data);
  CHECK(trainer.callback_metrics().count("v") == 0);
  CHECK(trainer.callback_metrics().count("a") == 1);
}

TEST_CASE("log() where Lightning forbids it says which hook and where to log instead",
          "[core][log]") {
  class LogsInFitStart : public BoringModule {
    void on_fit_start() override { log("x", 1.0); }
  };
  class StepInEpochEnd : public BoringModule {
    void on_train_epoch_end() override { log("x", 1.0, LogOptions().on_step(true)); }
  };
  class Inconsistent : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      log("x", 1.0, LogOptions().on_step(batch_idx == 0).on_epoch(true));
      return BoringModule::training_step(batch, batch_idx);
    }
  };
  class LogsVector : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      log("x", layer->forward(batch.data));
      return BoringModule::training_step(batch, batch_idx);
    }
  };
  Trainer trainer(one_epoch());
  RandomDataModule data(8, 4);
  LogsInFitStart fit_start;
  CHECK_THROWS_WITH(trainer.fit(fit_start, data),
                    Contains("log(\"x\") was called from `fit_start`") &&
                        Contains("where logging is not supported"));
  StepInEpochEnd epoch_end;
  CHECK_THROWS_WITH(trainer.fit(epoch_end, data), Contains("on_step=true) in `train_epoch_end`"));
  Inconsistent inconsistent;
  CHECK_THROWS_WITH(trainer.fit(inconsistent, data),
                    Contains("log each name with one set of options"));
  LogsVector vector;
  CHECK_THROWS_WITH(trainer.fit(vector, data),
                    Contains("expected a one-element tensor, got shape [4, 2]"));
  BoringModule detached;
  CHECK_THROWS_WITH(detached.log("x", 1.0), Contains("is not attached to a Trainer"));
}

TEST_CASE("TrainBatchEnd carries the loss and the values logged in that batch",
          "[core][log][events]") {
  Trainer trainer(one_epoch());
  std::vector<events::TrainBatchEnd> seen;
  events::Subscription subscription = trainer.bus().subscribe<events::TrainBatchEnd>(
      [&](const events::TrainBatchEnd& e) { seen.push_back(e); });
  IndexLogger module(LogOptions().on_step(true).on_epoch(false));
  RandomDataModule data(8, 4);
  trainer.fit(module, data);
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].metrics == Metrics{{"a", 1.0}});
  CHECK(seen[1].batch.batch_idx == 1);
  CHECK(seen[1].batch.batch_size == 4);
  CHECK(seen[1].progress.global_step == 2);
  CHECK(std::isfinite(seen[1].loss));
}

namespace {

/// Logs `value(batch_idx)` from every training step with `options`, as a tensor or a double.
class ValueLogger : public BoringModule {
 public:
  ValueLogger(LogOptions options, bool as_tensor) : options_(options), as_tensor_(as_tensor) {}
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    const double value = static_cast<double>(batch_idx);
    if (as_tensor_) {
      log("a", at::scalar_tensor(value, at::kFloat), options_);
    } else {
      log("a", value, options_);
    }
    return BoringModule::training_step(batch, batch_idx);
  }

 private:
  LogOptions options_;
  bool as_tensor_;
};

}  // namespace

TEST_CASE("reduce_fx reduces the epoch value as Lightning's _ResultMetric does", "[core][log]") {
  // Values 0, 1, 2 logged on batches of 4, 4 and 2 samples. Lightning's _ResultMetric.update
  // (logger_connector/result.py): a mean adds value * batch_size and divides by the summed batch
  // sizes; sum adds the values; max and min keep torch.maximum / torch.minimum of them (batch_size
  // is not used).
  const std::vector<std::pair<ReduceFx, double>> expected{
      {ReduceFx::kMean, (0.0 * 4 + 1.0 * 4 + 2.0 * 2) / 10},
      {ReduceFx::kSum, 3.0},
      {ReduceFx::kMax, 2.0},
      {ReduceFx::kMin, 0.0}};
  const bool as_tensor = GENERATE(false, true);
  for (const auto& [reduce_fx, value] : expected) {
    DYNAMIC_SECTION(to_string(reduce_fx) << (as_tensor ? " of tensors" : " of doubles")) {
      Trainer trainer(one_epoch());
      ValueLogger module(LogOptions().on_step(false).on_epoch(true).reduce_fx(reduce_fx),
                         as_tensor);
      RandomDataModule data(10, 4);
      trainer.fit(module, data);
      CHECK(trainer.callback_metrics().at("a") == Approx(value));
      CHECK(trainer.logged_metrics().at("a") == Approx(value));
    }
  }
  SECTION("batch_size weighs a mean only") {
    Trainer trainer(one_epoch());
    ValueLogger sum(
        LogOptions().on_step(false).on_epoch(true).reduce_fx(ReduceFx::kSum).batch_size(100),
        false);
    RandomDataModule data(10, 4);
    trainer.fit(sum, data);
    CHECK(trainer.callback_metrics().at("a") == 3.0);
  }
}

TEST_CASE("Logging one name with another reduce_fx in the same epoch is refused", "[core][log]") {
  class Mixed : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      log("x", 1.0, LogOptions().reduce_fx(batch_idx == 0 ? ReduceFx::kMean : ReduceFx::kMax));
      return BoringModule::training_step(batch, batch_idx);
    }
  };
  Trainer trainer(one_epoch());
  Mixed module;
  RandomDataModule data(8, 4);
  CHECK_THROWS_WITH(trainer.fit(module, data),
                    Contains("reduce_fx=max, prog_bar=0, logger=1, sync_dist=0 but it was logged "
                             "earlier in this epoch") &&
                        Contains("reduce_fx=mean"));
}

TEST_CASE("Logging one name again with other prog_bar, logger or sync_dist is refused",
          "[core][log]") {
  // Lightning refuses any other option for a name logged again in the same hook (result.py,
  // _ResultCollection.log: "You called `self.log(...)` twice in `fx` with different arguments").
  const auto second = GENERATE(LogOptions().prog_bar(true), LogOptions().logger(false),
                               LogOptions().sync_dist(true));
  MetricsCollector metrics;
  metrics.reset(MetricsCollector::Results::kTrain);
  metrics.log("training_step", "x", 1.0, LogOptions());
  CHECK_THROWS_WITH(metrics.log("training_step", "x", 2.0, second),
                    Contains("log(\"x\") in `training_step` with") &&
                        Contains("log each name with one set of options"));
}

TEST_CASE("log_dict takes log's options, also for tensors, add_dataloader_idx is accepted",
          "[core][log]") {
  class DictLogger : public BoringModule {
    StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
      const double i = static_cast<double>(batch_idx);
      log_dict(std::map<std::string, at::Tensor>{{"t_max", at::scalar_tensor(i)},
                                                 {"t_ones", at::scalar_tensor(1.0)}},
               LogOptions().on_step(false).on_epoch(true).reduce_fx(ReduceFx::kMax).prog_bar(true));
      log_dict(Metrics{{"d_sum", 1.0}},
               LogOptions().on_step(false).on_epoch(true).reduce_fx(ReduceFx::kSum).logger(false));
      return BoringModule::training_step(batch, batch_idx);
    }
    StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
      // One val loader: Lightning adds no /dataloader_idx_N suffix then, whatever the option.
      log("v", 1.0, LogOptions().add_dataloader_idx(false));
      log("w", 2.0, LogOptions().add_dataloader_idx(true));
      return {};
    }
  };
  Trainer trainer(one_epoch(/*val_batches=*/2));
  DictLogger module;
  RandomDataModule data(12, 4);
  trainer.fit(module, data);
  const Metrics& metrics = trainer.callback_metrics();
  CHECK(metrics.at("t_max") == 2.0);
  CHECK(metrics.at("t_ones") == 1.0);  // the max of ones
  CHECK(metrics.at("d_sum") == 3.0);
  CHECK(trainer.progress_bar_metrics().count("t_max") == 1);
  CHECK(trainer.logged_metrics().count("d_sum") == 0);
  CHECK(metrics.at("v") == 1.0);
  CHECK(metrics.at("w") == 2.0);
}

TEST_CASE("Tensors kept on their device until read give the values read at once", "[core][log]") {
  // The path a CUDA tensor takes (kept, accumulated on its device, read together when needed),
  // here with CPU tensors, against the same values read at once.
  MetricsCollector deferred, immediate;
  deferred.set_defer_cpu_reads(true);
  const std::vector<int64_t> batch_sizes{4, 4, 2};
  for (MetricsCollector* metrics : {&deferred, &immediate}) {
    metrics->reset(MetricsCollector::Results::kTrain);
    for (size_t i = 0; i < batch_sizes.size(); ++i) {
      metrics->set_current_batch_size(batch_sizes[i]);
      metrics->begin_batch();
      const at::Tensor value = at::scalar_tensor(static_cast<double>(i) + 0.5, at::kFloat);
      metrics->log("training_step", "mean", value, LogOptions().on_step(true).on_epoch(true));
      metrics->log("training_step", "sum", value,
                   LogOptions().on_epoch(true).reduce_fx(ReduceFx::kSum).prog_bar(true));
      metrics->log("training_step", "max", value * -1,
                   LogOptions().on_step(false).on_epoch(true).reduce_fx(ReduceFx::kMax));
      metrics->log("training_step", "min", value,
                   LogOptions().on_step(false).on_epoch(true).reduce_fx(ReduceFx::kMin));
      metrics->log("training_step", "int", at::scalar_tensor(int64_t{3}), LogOptions());
      // What a callback reads at on_train_batch_end: this batch's step values.
      CHECK(metrics->callback_metrics().at("mean_step") == static_cast<double>(i) + 0.5);
      CHECK(metrics->batch_logged().at("sum_step") == static_cast<double>(i) + 0.5);
      CHECK(metrics->callback_metrics().at("int") == 3.0);
    }
    metrics->end_epoch(MetricsCollector::Results::kTrain);
  }
  CHECK(deferred.callback_metrics() == immediate.callback_metrics());
  CHECK(deferred.logged_metrics() == immediate.logged_metrics());
  CHECK(deferred.progress_bar_metrics() == immediate.progress_bar_metrics());
  CHECK(deferred.callback_metrics().at("mean_epoch") == Approx((0.5 * 4 + 1.5 * 4 + 2.5 * 2) / 10));
  CHECK(deferred.callback_metrics().at("sum_epoch") == 0.5 + 1.5 + 2.5);
  CHECK(deferred.callback_metrics().at("max") == -0.5);
  CHECK(deferred.callback_metrics().at("min") == 0.5);
}

TEST_CASE("A tensor kept on its device is the value it had when logged", "[core][log]") {
  // A float64 tensor needs no conversion: it must still be copied, or changing it after log()
  // changes the logged value (Lightning keeps the value it was given).
  MetricsCollector metrics;
  metrics.set_defer_cpu_reads(true);
  metrics.reset(MetricsCollector::Results::kTrain);
  metrics.begin_batch();
  at::Tensor accuracy = at::scalar_tensor(1.0, at::kDouble);
  metrics.log("training_step", "acc", accuracy, LogOptions().on_step(true).on_epoch(true));
  accuracy.add_(100.0);
  metrics.end_epoch(MetricsCollector::Results::kTrain);
  CHECK(metrics.logged_metrics().at("acc_step") == 1.0);
  CHECK(metrics.logged_metrics().at("acc_epoch") == 1.0);
}

TEST_CASE("A sync_dist value logged only for the epoch is not read when logged", "[core][log]") {
  // Under data parallelism a sync_dist step value is reduced (and so read) when logged; one with
  // on_step=false is reduced at the epoch's end, so nothing needs it before. A meta tensor has
  // no value to read: logging it shows that log() reads nothing.
  MetricsCollector metrics;
  metrics.set_defer_cpu_reads(true);
  metrics.reset(MetricsCollector::Results::kTrain);
  metrics.begin_batch();
  int reductions = 0;
  const MetricsCollector::ReduceAcrossRanks reduce = [&](double value, distributed::ReduceOp) {
    ++reductions;
    return value;
  };
  const at::Tensor unreadable = at::empty({}, at::TensorOptions().device(at::kMeta));
  CHECK_NOTHROW(metrics.log("training_step", "loss", unreadable,
                            LogOptions().on_step(false).on_epoch(true).sync_dist(true), reduce));
  CHECK(reductions == 0);
}

TEST_CASE("Callbacks see the values a batch logged as tensors, and the epoch's reduction",
          "[core][log]") {
  class Watcher : public Callback {
   public:
    void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                            int64_t batch_idx) override {
      steps.push_back(trainer.callback_metrics().at("a"));
    }
    void on_train_epoch_end(Trainer& trainer, Module&) override {
      epoch = trainer.callback_metrics().at("a");
    }
    std::vector<double> steps;
    double epoch = -1.0;
  };
  auto watcher = std::make_shared<Watcher>();
  Trainer trainer(one_epoch(), {watcher});
  ValueLogger module(LogOptions().on_step(true).on_epoch(true).reduce_fx(ReduceFx::kMax), true);
  RandomDataModule data(10, 4);
  trainer.fit(module, data);
  CHECK(watcher->steps == std::vector<double>{0.0, 1.0, 2.0});
  CHECK(watcher->epoch == 2.0);
}

// Not in the default run: `core_tests "[.benchmark][log]"`. What a log() of a tensor costs the
// training thread, read at once (CPU tensors) or kept on its device until read (the path of CUDA
// tensors, timed here on the CPU), with a read per batch as TrainBatchEnd's observers make.
TEST_CASE("log() cost per call", "[.benchmark][log]") {
  constexpr int kBatches = 20000;
  constexpr int kMetrics = 4;
  const auto time_it = [&](const char* what, bool defer, bool as_tensor) {
    MetricsCollector metrics;
    metrics.set_defer_cpu_reads(defer);
    const at::Tensor value = at::scalar_tensor(0.25, at::kFloat);
    const std::string names[kMetrics] = {"a", "b", "c", "d"};
    const auto start = std::chrono::steady_clock::now();
    for (int batch = 0; batch < kBatches; ++batch) {
      metrics.set_current_batch_size(64);
      metrics.begin_batch();
      for (const std::string& name : names) {
        if (as_tensor) {
          metrics.log("training_step", name, value, LogOptions().on_step(true).on_epoch(true));
        } else {
          metrics.log("training_step", name, 0.25, LogOptions().on_step(true).on_epoch(true));
        }
      }
      (void)metrics.batch_logged();  // an observer of TrainBatchEnd reads the batch's values
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    WARN(what << ": " << seconds * 1e6 / (kBatches * kMetrics) << " us per log()");
  };
  time_it("log(double)", false, false);
  time_it("log(tensor), read at once (item)", false, true);
  time_it("log(tensor), kept until read", true, true);
}
