// Hook order, as Lightning's tests/tests_pytorch/models/test_hooks.py asserts it.
#include <algorithm>
#include <string>
#include <vector>

#include "tests/support/catch.h"

#include "core/trainer.h"
#include "events/all.h"
#include "tests/support/recording.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using namespace trainbus::testing;

namespace {

using Hooks = std::vector<std::string>;

void append(Hooks& out, const Hooks& more) { out.insert(out.end(), more.begin(), more.end()); }

Hooks callback_then_module(const std::string& hook) { return {"Callback." + hook, hook}; }

Hooks eval_loop(const std::string& fn, int batches) {
  Hooks out;
  append(out, callback_then_module("on_" + fn + "_start"));
  append(out, callback_then_module("on_" + fn + "_epoch_start"));
  for (int i = 0; i < batches; ++i) {
    const std::string idx = ":" + std::to_string(i);
    append(out, {"Callback.on_" + fn + "_batch_start" + idx, "on_" + fn + "_batch_start" + idx,
                 fn + "_step" + idx, "Callback.on_" + fn + "_batch_end" + idx,
                 "on_" + fn + "_batch_end" + idx});
  }
  append(out, callback_then_module("on_" + fn + "_epoch_end"));
  append(out, callback_then_module("on_" + fn + "_end"));
  return out;
}

Hooks train_batch(int i, bool zero_grad, bool step) {
  const std::string idx = ":" + std::to_string(i);
  Hooks out{"Callback.on_train_batch_start" + idx, "on_train_batch_start" + idx,
            "training_step" + idx};
  if (zero_grad) append(out, callback_then_module("on_before_zero_grad"));
  append(out, callback_then_module("on_before_backward"));
  append(out, callback_then_module("on_after_backward"));
  if (step) {
    append(out, callback_then_module("on_before_optimizer_step"));
    append(out, callback_then_module("on_after_optimizer_step"));
  }
  append(out, {"Callback.on_train_batch_end" + idx, "on_train_batch_end" + idx});
  return out;
}

Hooks fit_prologue() {
  return {"prepare_data",         "Callback.setup:fit",    "setup:fit",   "configure_model",
          "configure_optimizers", "Callback.on_fit_start", "on_fit_start"};
}

Hooks fit_epilogue() {
  Hooks out;
  append(out, callback_then_module("on_train_end"));
  append(out, callback_then_module("on_fit_end"));
  append(out, {"Callback.teardown:fit", "teardown:fit"});
  return out;
}

/// Saves a checkpoint at each train epoch end, as Lightning's default ModelCheckpoint does.
class EpochEndSaver : public Callback {
 public:
  explicit EpochEndSaver(std::string path) : path_(std::move(path)) {}
  CallbackKind kind() const override { return CallbackKind::kCheckpoint; }
  void on_train_epoch_end(Trainer& trainer, Module&) override { trainer.save_checkpoint(path_); }

 private:
  std::string path_;
};

/// Requests a stop at one (epoch, batch).
class StopAt : public Callback {
 public:
  StopAt(int64_t epoch, int64_t batch) : epoch_(epoch), batch_(batch) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() == epoch_ && batch_idx == batch_) trainer.request_stop("StopAt");
  }

 private:
  int64_t epoch_, batch_;
};

/// Records the name of every event published on `bus`.
std::vector<events::Subscription> record_events(events::EventBus& bus, Hooks& names) {
  std::vector<events::Subscription> subscriptions;
  events::for_each_event_type([&](auto tag) {
    using E = typename decltype(tag)::type;
    subscriptions.push_back(bus.subscribe<E>([&names](const E&) { names.emplace_back(E::kName); }));
  });
  return subscriptions;
}

/// The event names the bus should see for a list of recorded hooks: one per callback hook.
Hooks events_for(const Hooks& hooks) {
  Hooks out;
  for (const std::string& hook : hooks) {
    if (hook.rfind("Callback.", 0) != 0 || hook == "Callback.load_state_dict") continue;
    std::string name = hook.substr(9);
    if (name.rfind("on_", 0) == 0) name = name.substr(3);
    out.push_back(name.substr(0, name.find(':')));
  }
  return out;
}

}  // namespace

TEST_CASE("fit: hooks fire in Lightning's order, with sanity check and validation",
          "[core][hooks]") {
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_train_batches(2);
  options.limit_val_batches(2);
  TempDir dir;
  options.default_root_dir(dir.path().string());
  options.enable_checkpointing(true);  // EpochEndSaver is a checkpoint callback
  Trainer trainer(options, {std::make_shared<EpochEndSaver>(dir.file("epoch.ckpt")),
                            std::make_shared<RecordingCallback>(log)});
  Hooks published;
  auto subscriptions = record_events(trainer.bus(), published);
  RecordingModule module(log);
  RandomDataModule data;

  trainer.fit(module, data);

  Hooks expected = fit_prologue();
  append(expected, {"Callback.on_sanity_check_start"});
  append(expected, eval_loop("validation", 2));
  append(expected, {"Callback.on_sanity_check_end"});
  append(expected, callback_then_module("on_train_start"));
  append(expected, callback_then_module("on_train_epoch_start"));
  append(expected, train_batch(0, true, true));
  append(expected, train_batch(1, true, true));
  append(expected, eval_loop("validation", 2));  // validation due at the epoch end runs first
  // The checkpoint callback is a monitoring callback: its on_train_epoch_end runs after the
  // module's.
  append(expected, callback_then_module("on_train_epoch_end"));
  append(expected, callback_then_module("on_save_checkpoint"));
  append(expected, fit_epilogue());
  CHECK(*log == expected);
  // The bus hears of a lifecycle point after all its hooks ran, so the checkpoint saved inside
  // on_train_epoch_end reaches it before train_epoch_end itself.
  Hooks expected_events = events_for(expected);
  auto save = std::find(expected_events.begin(), expected_events.end(), "save_checkpoint");
  REQUIRE(save != expected_events.begin());
  std::iter_swap(save - 1, save);
  // The save is synchronous: it is durable (checkpoint_committed) before the hook returns.
  expected_events.insert(save, "checkpoint_committed");  // right after save_checkpoint
  CHECK(published == expected_events);
  CHECK(trainer.global_step() == 2);
  CHECK(trainer.current_epoch() == 1);
}

TEST_CASE("fit with accumulate_grad_batches=2: zero_grad opens a window, the step closes it",
          "[core][hooks]") {
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_train_batches(5);
  options.limit_val_batches(0);
  options.accumulate_grad_batches(2);
  Trainer trainer(options, {std::make_shared<RecordingCallback>(log)});
  RecordingModule module(log);
  RandomDataModule data;

  trainer.fit(module, data);

  Hooks expected = fit_prologue();
  append(expected, callback_then_module("on_train_start"));
  append(expected, callback_then_module("on_train_epoch_start"));
  append(expected, train_batch(0, /*zero_grad=*/true, /*step=*/false));
  append(expected, train_batch(1, false, true));
  append(expected, train_batch(2, true, false));
  append(expected, train_batch(3, false, true));
  append(expected, train_batch(4, true, true));  // the last batch always steps
  append(expected, callback_then_module("on_train_epoch_end"));
  append(expected, fit_epilogue());
  CHECK(*log == expected);
  CHECK(trainer.global_step() == 3);
}

TEST_CASE("fit with an early stop: validation runs once more, then the epoch and fit end",
          "[core][hooks]") {
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(3);
  options.limit_train_batches(4);
  options.limit_val_batches(1);
  options.num_sanity_val_steps(0);
  Trainer trainer(options,
                  {std::make_shared<StopAt>(0, 1), std::make_shared<RecordingCallback>(log)});
  RecordingModule module(log);
  RandomDataModule data;

  trainer.fit(module, data);

  Hooks expected = fit_prologue();
  append(expected, callback_then_module("on_train_start"));
  append(expected, callback_then_module("on_train_epoch_start"));
  append(expected, train_batch(0, true, true));
  append(expected, train_batch(1, true, true));
  append(expected,
         eval_loop("validation", 1));  // as Lightning: a stop that may happen validates first
  append(expected, callback_then_module("on_train_epoch_end"));
  append(expected, fit_epilogue());
  CHECK(*log == expected);
  CHECK(trainer.should_stop());
  CHECK(trainer.current_epoch() == 1);
  CHECK(trainer.global_step() == 2);
}

TEST_CASE("fit: on_train_batch_start returning -1 ends the epoch without validation",
          "[core][hooks]") {
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(1);
  options.limit_train_batches(3);
  options.limit_val_batches(1);
  options.num_sanity_val_steps(0);
  Trainer trainer(options, {std::make_shared<RecordingCallback>(log)});
  RecordingModule module(log);
  module.skip_epoch_at_batch = 1;
  RandomDataModule data;

  trainer.fit(module, data);

  Hooks expected = fit_prologue();
  append(expected, callback_then_module("on_train_start"));
  append(expected, callback_then_module("on_train_epoch_start"));
  append(expected, train_batch(0, true, true));
  append(expected, {"Callback.on_train_batch_start:1", "on_train_batch_start:1"});
  append(expected, callback_then_module("on_train_epoch_end"));
  append(expected, fit_epilogue());
  CHECK(*log == expected);
}

TEST_CASE("validate and test: setup, one evaluation loop, teardown", "[core][hooks]") {
  for (const bool test : {false, true}) {
    for (const int batches : {0, 2}) {
      DYNAMIC_SECTION((test ? "test" : "validate") << " with " << batches << " batches") {
        auto log = std::make_shared<HookLog>();
        TrainerOptions options = testing::trainer_options();
        options.limit_val_batches(batches);
        options.limit_test_batches(batches);
        Trainer trainer(options, {std::make_shared<RecordingCallback>(log)});
        Hooks published;
        auto subscriptions = record_events(trainer.bus(), published);
        RecordingModule module(log);
        RandomDataModule data;

        const Metrics result = test ? trainer.test(module, data) : trainer.validate(module, data);

        const std::string verb = test ? "test" : "validate";
        const std::string noun = test ? "test" : "validation";
        Hooks expected{"prepare_data", "Callback.setup:" + verb, "setup:" + verb,
                       "configure_model"};
        if (batches > 0)
          append(expected, eval_loop(noun, batches));  // no hooks at all for zero batches
        append(expected, {"Callback.teardown:" + verb, "teardown:" + verb});
        CHECK(*log == expected);
        CHECK(published == events_for(expected));
        CHECK(result.count(test ? "test_loss" : "val_loss") == (batches > 0 ? 1u : 0u));
      }
    }
  }
}

TEST_CASE("predict: setup, the prediction loop, teardown, one output per batch", "[core][hooks]") {
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.limit_predict_batches(2);
  Trainer trainer(options, {std::make_shared<RecordingCallback>(log)});
  RecordingModule module(log);
  RandomDataModule data(64, 4);

  const std::vector<at::Tensor> predictions = trainer.predict(module, data);

  Hooks expected{"prepare_data", "Callback.setup:predict", "setup:predict", "configure_model"};
  append(expected, callback_then_module("on_predict_start"));
  append(expected, callback_then_module("on_predict_epoch_start"));
  for (int i = 0; i < 2; ++i) {
    const std::string idx = ":" + std::to_string(i);
    append(expected, {"Callback.on_predict_batch_start" + idx, "on_predict_batch_start" + idx,
                      "predict_step" + idx, "Callback.on_predict_batch_end" + idx,
                      "on_predict_batch_end" + idx});
  }
  append(expected, callback_then_module("on_predict_epoch_end"));
  append(expected, callback_then_module("on_predict_end"));
  append(expected, {"Callback.teardown:predict", "teardown:predict"});
  CHECK(*log == expected);
  REQUIRE(predictions.size() == 2);
  CHECK(predictions[0].sizes() == at::IntArrayRef({4, 2}));
}

namespace {

/// Saves a checkpoint after one training batch (a mid-epoch checkpoint).
class BatchEndSaver : public Callback {
 public:
  BatchEndSaver(std::string path, int64_t batch) : path_(std::move(path)), batch_(batch) {}
  CallbackKind kind() const override { return CallbackKind::kCheckpoint; }
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (batch_idx == batch_) trainer.save_checkpoint(path_);
  }

 private:
  std::string path_;
  int64_t batch_;
};

/// Runs a one-epoch fit of `batches` batches with `saver`, without validation; the checkpoint
/// holds a RecordingCallback's state.
void fit_to_checkpoint(int64_t batches, std::shared_ptr<Callback> saver) {
  TrainerOptions options = testing::trainer_options();
  options.enable_checkpointing(true);  // the saver is a checkpoint callback
  options.max_epochs(1);
  options.limit_train_batches(batches);
  options.limit_val_batches(0);
  Trainer trainer(options, {std::move(saver),
                            std::make_shared<RecordingCallback>(std::make_shared<HookLog>())});
  BoringModule module;
  RandomDataModule data;
  trainer.fit(module, data);
}

Hooks resumed_prologue() {
  return {"prepare_data",
          "Callback.setup:fit",
          "setup:fit",
          "configure_model",
          "on_load_checkpoint",
          "Callback.on_load_checkpoint",
          "Callback.load_state_dict",
          "configure_optimizers",
          "Callback.on_fit_start",
          "on_fit_start"};
}

}  // namespace

// Lightning 2.x skips the sanity check when `fit_loop.epoch_loop.val_loop.restarting`
// (Trainer._run_sanity_check). Loading the loops' state sets `restarting = True` on the fit loop,
// whose setter (_FitLoop.restarting) keeps it only if the saved epoch was unfinished (its
// epoch_progress ready/started != processed) or the training is iteration-based (max_steps !=
// -1), and hands that value down to epoch_loop and val_loop. A checkpoint saved in
// on_train_epoch_end (processed already counted) therefore runs the sanity check again; one saved
// in the middle of an epoch, or any with max_steps set, does not.
TEST_CASE("resume from an end-of-epoch checkpoint: load hooks, then the sanity check",
          "[core][hooks]") {
  TempDir dir;
  const std::string path = dir.file("epoch.ckpt");
  fit_to_checkpoint(2, std::make_shared<EpochEndSaver>(path));
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.max_epochs(2);
  options.limit_train_batches(2);
  options.limit_val_batches(2);
  Trainer trainer(options, {std::make_shared<RecordingCallback>(log)});
  RecordingModule module(log);
  RandomDataModule data;

  trainer.fit(module, data, FitOptions().ckpt_path(path));

  Hooks expected = resumed_prologue();
  append(expected, {"Callback.on_sanity_check_start"});
  append(expected, eval_loop("validation", 2));
  append(expected, {"Callback.on_sanity_check_end"});
  append(expected, callback_then_module("on_train_start"));
  append(expected, callback_then_module("on_train_epoch_start"));
  append(expected, train_batch(0, true, true));
  append(expected, train_batch(1, true, true));
  append(expected, eval_loop("validation", 2));
  append(expected, callback_then_module("on_train_epoch_end"));
  append(expected, fit_epilogue());
  CHECK(*log == expected);
  CHECK(trainer.current_epoch() == 2);
  CHECK(trainer.global_step() == 4);
}

TEST_CASE("resume without the sanity check: from a mid-epoch checkpoint, or with max_steps",
          "[core][hooks]") {
  TempDir dir;
  const std::string mid_epoch = dir.file("mid.ckpt");
  const std::string epoch_end = dir.file("epoch.ckpt");
  fit_to_checkpoint(4, std::make_shared<BatchEndSaver>(mid_epoch, 1));
  fit_to_checkpoint(4, std::make_shared<EpochEndSaver>(epoch_end));
  auto log = std::make_shared<HookLog>();
  TrainerOptions options = testing::trainer_options();
  options.limit_train_batches(4);
  options.limit_val_batches(2);
  Hooks expected = resumed_prologue();
  append(expected, callback_then_module("on_train_start"));
  append(expected, callback_then_module("on_train_epoch_start"));
  std::string path;
  SECTION("mid-epoch: the epoch continues with its batch 2") {
    options.max_epochs(1);
    path = mid_epoch;
    append(expected, train_batch(2, true, true));
    append(expected, train_batch(3, true, true));
  }
  SECTION("end of epoch, with max_steps (iteration-based training)") {
    options.max_epochs(2);
    options.max_steps(8);
    path = epoch_end;
    for (int i = 0; i < 4; ++i) append(expected, train_batch(i, true, true));
  }
  append(expected, eval_loop("validation", 2));
  append(expected, callback_then_module("on_train_epoch_end"));
  append(expected, fit_epilogue());
  Trainer trainer(options, {std::make_shared<RecordingCallback>(log)});
  RecordingModule module(log);
  RandomDataModule data;

  trainer.fit(module, data, FitOptions().ckpt_path(path));

  CHECK(*log == expected);
}
