// Several val / test loaders (Lightning's val_dataloader returning a list): run one after another,
// the steps and batch hooks get dataloader_idx, logged names get `/dataloader_idx_<i>`, one result
// per loader, and the monitoring callbacks see the suffixed names.
#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "callbacks/early_stopping.h"
#include "callbacks/model_checkpoint.h"
#include "core/trainer.h"
#include "data/data_loader.h"
#include "data/data_module.h"
#include "events/observer.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::TempDir;

namespace {

// "hook(batch_idx, dataloader_idx)".
using Call = std::string;
Call call(const std::string& hook, int64_t batch_idx, int64_t dataloader_idx) {
  return hook + "(" + std::to_string(batch_idx) + ", " + std::to_string(dataloader_idx) + ")";
}

std::shared_ptr<DataLoader> loader(int64_t samples, uint64_t seed) {
  return std::make_shared<data::TensorDataLoader>(
      torch::randn({samples, 32}, at::detail::createCPUGenerator(seed)), at::Tensor(),
      data::DataLoaderOptions().batch_size(2));
}

// Val loader 0: 3 batches (6 samples); val loader 1: 2 batches (3 samples, the last of 1).
data::LoaderDataModule two_val_loaders() {
  data::LoaderDataModule data(loader(8, 1));
  data.with_val_dataloaders({loader(6, 2), loader(3, 3)});
  data.with_test_dataloaders({loader(4, 4), loader(2, 5)});
  return data;
}

// Overrides the three-argument step and hooks, as a Lightning module with dataloader_idx does.
class PerLoader : public testing::BoringModule {
 public:
  using BoringModule::test_step;
  using BoringModule::validation_step;
  StepOutput validation_step(const Batch& batch, int64_t batch_idx,
                             int64_t dataloader_idx) override {
    calls.push_back(call("validation_step", batch_idx, dataloader_idx));
    log("val_loss", loss(batch));
    log("b", 1.0 + static_cast<double>(dataloader_idx), LogOptions().on_step(true));
    // add_dataloader_idx=false: the name is the caller's to make unique.
    log("seen_" + std::to_string(dataloader_idx), 1.0,
        LogOptions().add_dataloader_idx(false).reduce_fx(ReduceFx::kSum));
    return {};
  }
  StepOutput test_step(const Batch& batch, int64_t batch_idx, int64_t dataloader_idx) override {
    calls.push_back(call("test_step", batch_idx, dataloader_idx));
    log("test_loss", loss(batch));
    return {};
  }
  void on_validation_batch_start(const Batch&, int64_t batch_idx, int64_t dataloader_idx) override {
    calls.push_back(call("on_validation_batch_start", batch_idx, dataloader_idx));
  }
  void on_validation_batch_end(const StepOutput&, const Batch&, int64_t batch_idx,
                               int64_t dataloader_idx) override {
    calls.push_back(call("on_validation_batch_end", batch_idx, dataloader_idx));
  }
  void on_validation_epoch_end() override { log("epoch_end_value", 7.0); }

  std::vector<Call> calls;
};

class CallbackCalls : public Callback {
 public:
  void on_validation_batch_start(Trainer&, Module&, const Batch&, int64_t batch_idx,
                                 int64_t dataloader_idx) override {
    calls.push_back(call("start", batch_idx, dataloader_idx));
  }
  void on_validation_batch_end(Trainer&, Module&, const StepOutput&, const Batch&,
                               int64_t batch_idx, int64_t dataloader_idx) override {
    calls.push_back(call("end", batch_idx, dataloader_idx));
  }
  void on_test_batch_start(Trainer&, Module&, const Batch&, int64_t batch_idx,
                           int64_t dataloader_idx) override {
    calls.push_back(call("test_start", batch_idx, dataloader_idx));
  }
  std::vector<Call> calls;
};

// The dataloader_idx the published batch events carry.
class BatchEvents : public events::Observer {
 public:
  void on_validation_batch_start(const events::ValidationBatchStart& event) override {
    std::lock_guard<std::mutex> lock(mutex);
    seen.push_back(
        call("validation_batch_start", event.batch.batch_idx, event.batch.dataloader_idx));
  }
  void on_test_batch_end(const events::TestBatchEnd& event) override {
    std::lock_guard<std::mutex> lock(mutex);
    seen.push_back(call("test_batch_end", event.batch.batch_idx, event.batch.dataloader_idx));
  }
  std::mutex mutex;
  std::vector<Call> seen;
};

}  // namespace

TEST_CASE("validate runs several val loaders in turn, with dataloader_idx in steps and hooks",
          "[core][dataloaders]") {
  auto callback = std::make_shared<CallbackCalls>();
  auto observed = std::make_shared<BatchEvents>();
  Trainer trainer(testing::trainer_options(), {callback});
  trainer.add_observer(observed);
  PerLoader module;
  auto data = two_val_loaders();
  const Metrics result = trainer.validate(module, data);

  // As Lightning's sequential CombinedLoader: loader 0's batches, then loader 1's, each from 0.
  const std::vector<std::pair<int64_t, int64_t>> order{{0, 0}, {1, 0}, {2, 0}, {0, 1}, {1, 1}};
  std::vector<Call> expected_module, expected_callback, expected_events;
  for (const auto& [batch_idx, dataloader_idx] : order) {
    expected_module.push_back(call("on_validation_batch_start", batch_idx, dataloader_idx));
    expected_module.push_back(call("validation_step", batch_idx, dataloader_idx));
    expected_module.push_back(call("on_validation_batch_end", batch_idx, dataloader_idx));
    expected_callback.push_back(call("start", batch_idx, dataloader_idx));
    expected_callback.push_back(call("end", batch_idx, dataloader_idx));
    expected_events.push_back(call("validation_batch_start", batch_idx, dataloader_idx));
  }
  CHECK(module.calls == expected_module);
  CHECK(callback->calls == expected_callback);
  CHECK(observed->seen == expected_events);  // validate drained the observers
  CHECK(trainer.num_val_batches() == 5);
  CHECK(trainer.num_val_batches_per_dataloader() == std::vector<int64_t>{3, 2});

  // Lightning: _ResultCollection.DATALOADER_SUFFIX = "/dataloader_idx_{}", appended by
  // _forked_name after the _step/_epoch fork (trainer/connectors/logger_connector/result.py), so
  // validation_step's self.log("val_loss", ...) with two loaders is logged as
  // "val_loss/dataloader_idx_0" and "val_loss/dataloader_idx_1".
  CHECK(result.count("val_loss/dataloader_idx_0") == 1);
  CHECK(result.count("val_loss/dataloader_idx_1") == 1);
  CHECK(result.count("val_loss") == 0);
  CHECK(trainer.callback_metrics().count("val_loss/dataloader_idx_1") == 1);
  // on_step and on_epoch: "b_step/dataloader_idx_0" per step, "b_epoch/dataloader_idx_0" per epoch.
  CHECK(result.at("b_epoch/dataloader_idx_0") == 1.0);
  CHECK(result.at("b_epoch/dataloader_idx_1") == 2.0);
  CHECK(trainer.logged_metrics().count("b_step/dataloader_idx_1") == 1);
  // add_dataloader_idx=false: no suffix.
  CHECK(result.at("seen_0") == 3.0);
  CHECK(result.at("seen_1") == 2.0);

  // One result per loader, as the list Lightning's trainer.validate returns: what was logged
  // while that loader ran, plus what the epoch-end hooks logged (_EvaluationLoop.on_run_end).
  const std::vector<Metrics>& per_loader = trainer.evaluation_results();
  REQUIRE(per_loader.size() == 2);
  CHECK(per_loader[0].count("val_loss/dataloader_idx_0") == 1);
  CHECK(per_loader[0].count("val_loss/dataloader_idx_1") == 0);
  CHECK(per_loader[0].at("seen_0") == 3.0);
  CHECK(per_loader[0].count("seen_1") == 0);
  CHECK(per_loader[0].at("epoch_end_value") == 7.0);
  CHECK(per_loader[1].count("val_loss/dataloader_idx_1") == 1);
  CHECK(per_loader[1].at("seen_1") == 2.0);
  CHECK(per_loader[1].at("epoch_end_value") == 7.0);
}

TEST_CASE("test runs several test loaders with dataloader_idx", "[core][dataloaders]") {
  auto callback = std::make_shared<CallbackCalls>();
  auto observed = std::make_shared<BatchEvents>();
  Trainer trainer(testing::trainer_options(), {callback});
  trainer.add_observer(observed);
  PerLoader module;
  auto data = two_val_loaders();
  const Metrics result = trainer.test(module, data);
  CHECK(callback->calls == std::vector<Call>{call("test_start", 0, 0), call("test_start", 1, 0),
                                             call("test_start", 0, 1)});
  CHECK(observed->seen == std::vector<Call>{call("test_batch_end", 0, 0),
                                            call("test_batch_end", 1, 0),
                                            call("test_batch_end", 0, 1)});
  CHECK(result.count("test_loss/dataloader_idx_0") == 1);
  CHECK(result.count("test_loss/dataloader_idx_1") == 1);
  CHECK(trainer.evaluation_results().size() == 2);
}

TEST_CASE("One val loader: no suffix, dataloader_idx 0, one result", "[core][dataloaders]") {
  Trainer trainer(testing::trainer_options());
  PerLoader module;
  data::LoaderDataModule data(loader(8, 1), loader(4, 2));
  const Metrics result = trainer.validate(module, data);
  // Lightning passes no dataloader_idx with one loader (_build_kwargs) and adds no suffix; the
  // three-argument overload here gets 0, as Lightning's default `dataloader_idx=0`.
  CHECK(module.calls.at(1) == call("validation_step", 0, 0));
  CHECK(result.count("val_loss") == 1);
  CHECK(result.count("b_epoch") == 1);
  REQUIRE(trainer.evaluation_results().size() == 1);
  CHECK(trainer.evaluation_results()[0] == result);
}

TEST_CASE("A module with the two-argument step gets every loader's batches, suffixed",
          "[core][dataloaders]") {
  // NOTE: Lightning refuses this at the loop's start (_verify_dataloader_idx_requirement: "...
  // your `validation_step` does not accept a `dataloader_idx` argument"); in C++ the default
  // three-argument overload forwards to it, and the names still tell the loaders apart.
  Trainer trainer(testing::trainer_options());
  testing::BoringModule module;
  auto data = two_val_loaders();
  const Metrics result = trainer.validate(module, data);
  CHECK(result.count("val_loss/dataloader_idx_0") == 1);
  CHECK(result.count("val_loss/dataloader_idx_1") == 1);
}

namespace {

class SameNameTwice : public testing::BoringModule {
 public:
  using BoringModule::validation_step;
  StepOutput validation_step(const Batch& batch, int64_t, int64_t) override {
    log("acc", 1.0, LogOptions().add_dataloader_idx(false));
    return {};
  }
};

}  // namespace

TEST_CASE("add_dataloader_idx=false with one name in two loaders is refused, as in Lightning",
          "[core][dataloaders]") {
  // Lightning: the stored metadata's dataloader_idx differs, so _ResultCollection.log raises
  // "You called `self.log(acc, ...)` twice in `validation_step` with different arguments".
  Trainer trainer(testing::trainer_options());
  SameNameTwice module;
  auto data = two_val_loaders();
  CHECK_THROWS_WITH(trainer.validate(module, data),
                    Catch::Contains("log(\"acc\", add_dataloader_idx=false)") &&
                        Catch::Contains("while loader 1 runs") &&
                        Catch::Contains("give each loader's value its own name"));
}

namespace {

// Each epoch's validation values of both loaders, from callback_metrics.
class EpochValues : public Callback {
 public:
  void on_train_epoch_end(Trainer& trainer, Module&) override {
    loader_0.push_back(trainer.callback_metrics().at("val_loss/dataloader_idx_0"));
    loader_1.push_back(trainer.callback_metrics().at("val_loss/dataloader_idx_1"));
  }
  std::vector<double> loader_0, loader_1;
};

}  // namespace

TEST_CASE(
    "fit validates on every val loader, checkpoints and early stopping monitor suffixed names",
    "[core][dataloaders]") {
  TempDir dir;
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(2).enable_checkpointing(true).num_sanity_val_steps(2);
  auto checkpoint =
      std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions()
                                                       .dirpath(dir.file("ckpt"))
                                                       .monitor("val_loss/dataloader_idx_1")
                                                       .filename("{epoch}"));
  auto early_stopping = std::make_shared<callbacks::EarlyStopping>(
      callbacks::EarlyStoppingOptions().monitor("val_loss/dataloader_idx_0").patience(5));
  auto epochs = std::make_shared<EpochValues>();
  Trainer trainer(options, {epochs, checkpoint, early_stopping});
  PerLoader module;
  auto data = two_val_loaders();
  trainer.fit(module, data);
  REQUIRE(epochs->loader_0.size() == 2);

  // The sanity check runs num_sanity_val_steps batches of each loader (Lightning's max_batches
  // per dataloader): 2 of loader 0, 2 of loader 1; then 3 + 2 per epoch.
  int64_t steps = 0;
  for (const Call& each : module.calls) steps += each.rfind("validation_step(", 0) == 0;
  CHECK(steps == 4 + 2 * 5);
  // Each kept the lowest of its own loader's epoch values.
  REQUIRE(checkpoint->best_model_score().has_value());
  CHECK(*checkpoint->best_model_score() ==
        Approx(std::min(epochs->loader_1[0], epochs->loader_1[1])).epsilon(1e-6));
  CHECK(early_stopping->best_score() ==
        Approx(std::min(epochs->loader_0[0], epochs->loader_0[1])).epsilon(1e-6));
}

TEST_CASE("A null loader among several is refused, naming its index", "[core][dataloaders]") {
  Trainer trainer(testing::trainer_options());
  testing::BoringModule module;
  data::LoaderDataModule data(loader(8, 1));
  data.with_val_dataloaders({loader(4, 2), nullptr});
  CHECK_THROWS_WITH(trainer.validate(module, data),
                    Catch::Contains("val_dataloaders() gave 2 loaders, and loader 1 is null"));
}
