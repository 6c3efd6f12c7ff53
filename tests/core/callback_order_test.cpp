// How the Trainer orders and checks its callbacks (Lightning's callback connector).
#include <filesystem>

#include "core/trainer.h"
#include "tests/support/catch.h"
#include "tests/support/recording.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace {

class Named : public Callback {
 public:
  Named(std::string name, CallbackKind kind, std::shared_ptr<HookLog> log)
      : name_(std::move(name)), kind_(kind), log_(std::move(log)) {}
  CallbackKind kind() const override { return kind_; }
  void on_train_epoch_end(Trainer& trainer, Module&) override {
    const auto it = trainer.callback_metrics().find("module_metric");
    log_->push_back(name_ + (it == trainer.callback_metrics().end() ? ":missing" : ":seen"));
  }

 private:
  std::string name_;
  CallbackKind kind_;
  std::shared_ptr<HookLog> log_;
};

class Counter : public Callback {
 public:
  explicit Counter(std::string key = "") : key_(std::move(key)) {}
  std::string state_key() const override { return key_.empty() ? Callback::state_key() : key_; }
  bool stateful() const override { return true; }
  StateDict state_dict() const override {
    StateDict state;
    state.insert("count", int64_t{0});
    return state;
  }

 private:
  std::string key_;
};

class Stateless : public Callback {};

class LogsAtEpochEnd : public BoringModule {
 public:
  explicit LogsAtEpochEnd(std::shared_ptr<HookLog> log) : log_(std::move(log)) {}
  void on_train_epoch_end() override {
    log_->push_back("module");
    log("module_metric", 1.0);
  }

 private:
  std::shared_ptr<HookLog> log_;
};

}  // namespace

TEST_CASE("Callbacks run tuners first, then in list order, checkpoint callbacks last",
          "[core][callbacks]") {
  auto log = std::make_shared<HookLog>();
  auto checkpoint = std::make_shared<Named>("checkpoint", CallbackKind::kCheckpoint, log);
  auto first = std::make_shared<Named>("first", CallbackKind::kDefault, log);
  auto tuner = std::make_shared<Named>("tuner", CallbackKind::kTuner, log);
  auto monitor = std::make_shared<Named>("monitor", CallbackKind::kMonitoring, log);
  auto last = std::make_shared<Named>("last", CallbackKind::kDefault, log);
  // Without the default ModelSummary (added after the given callbacks, before checkpoint ones).
  Trainer trainer(testing::trainer_options().enable_model_summary(false).enable_checkpointing(true),
                  {checkpoint, first, tuner, monitor, last});
  const std::vector<std::shared_ptr<Callback>> expected{tuner, first, monitor, last, checkpoint};
  CHECK(trainer.callbacks() == expected);
}

TEST_CASE("Monitoring callbacks run their on_train_epoch_end after the module's",
          "[core][callbacks]") {
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.enable_checkpointing(true);  // "checkpoint" is a checkpoint callback
  options.max_epochs(1);
  options.limit_train_batches(1);
  options.limit_val_batches(0);
  Trainer trainer(options, {std::make_shared<Named>("checkpoint", CallbackKind::kCheckpoint, log),
                            std::make_shared<Named>("plain", CallbackKind::kDefault, log),
                            std::make_shared<Named>("monitor", CallbackKind::kMonitoring, log)});
  LogsAtEpochEnd module(log);
  RandomDataModule data;
  trainer.fit(module, data);
  // Only the monitoring callbacks can see what the module logs in its on_train_epoch_end.
  CHECK(*log == HookLog{"plain:missing", "module", "monitor:seen", "checkpoint:seen"});
}

TEST_CASE(
    "Two callbacks declared stateful with one state_key are refused when the Trainer is built",
    "[core][callbacks]") {
  CHECK_THROWS_WITH(
      Trainer({}, {std::make_shared<Counter>(), std::make_shared<Counter>()}),
      Catch::Contains(
          "more than one stateful callback with state_key `(anonymous namespace)::Counter`") &&
          Catch::Contains("unique state_key()"));
  CHECK_THROWS_AS(Trainer({}, {std::make_shared<Counter>("a"), std::make_shared<Counter>("a")}),
                  MisconfigurationError);
  CHECK_NOTHROW(Trainer({}, {std::make_shared<Counter>("a"), std::make_shared<Counter>("b")}));
  // Callbacks without state may repeat: nothing of theirs goes into a checkpoint.
  CHECK_NOTHROW(Trainer({}, {std::make_shared<Stateless>(), std::make_shared<Stateless>()}));
}

TEST_CASE("A null callback is refused with its position", "[core][callbacks]") {
  CHECK_THROWS_WITH(Trainer({}, {std::make_shared<Stateless>(), nullptr}),
                    Catch::Contains("callbacks[1] is null"));
}

TEST_CASE("The default state_key is the class name", "[core][callbacks]") {
  CHECK(Stateless().state_key() == "(anonymous namespace)::Stateless");
  CHECK(RecordingCallback(std::make_shared<HookLog>()).state_key() ==
        "trainbus::testing::RecordingCallback");
}

namespace {

/// Stateful, but its state is empty until it has seen a batch; counts the calls of state_dict().
class LateState : public Callback {
 public:
  explicit LateState(std::string key) : key_(std::move(key)) {}
  std::string state_key() const override { return key_; }
  StateDict state_dict() const override {
    ++state_dict_calls;
    StateDict state;
    if (batches > 0) state.insert("batches", batches);
    return state;
  }
  void on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t) override {
    ++batches;
  }
  mutable int state_dict_calls = 0;
  int64_t batches = 0;

 private:
  std::string key_;
};

/// Saves a checkpoint after the first batch.
class SavesAfterFirstBatch : public Callback {
 public:
  explicit SavesAfterFirstBatch(std::string path) : path_(std::move(path)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (batch_idx == 0) trainer.save_checkpoint(path_);
  }

 private:
  std::string path_;
};

}  // namespace

TEST_CASE("Building a Trainer calls no callback's state_dict (as Lightning)", "[core][callbacks]") {
  auto a = std::make_shared<LateState>("a");
  auto b = std::make_shared<LateState>("b");
  Trainer trainer(testing::trainer_options(), {a, b});
  CHECK(a->state_dict_calls == 0);
  CHECK(b->state_dict_calls == 0);
}

TEST_CASE("Two callbacks whose states share a state_key are refused at save time, naming both",
          "[core][callbacks][checkpoint]") {
  // Both states are empty when the Trainer is built; both are full when the checkpoint is saved.
  TempDir dir;
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_val_batches(0);
  Trainer trainer(options,
                  {std::make_shared<LateState>("shared"), std::make_shared<LateState>("shared"),
                   std::make_shared<SavesAfterFirstBatch>(dir.file("x.ckpt"))});
  BoringModule module;
  RandomDataModule data;
  CHECK_THROWS_WITH(trainer.fit(module, data),
                    Catch::Contains("more than one stateful callback with state_key `shared`") &&
                        Catch::Contains("LateState and (anonymous namespace)::LateState"));
  CHECK_FALSE(std::filesystem::exists(dir.file("x.ckpt")));  // nothing half-saved
}
