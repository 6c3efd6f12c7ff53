#pragma once
// Test fixtures that record every hook they see, as Lightning's HookedCallback / HookedModel.

#include <memory>
#include <string>
#include <vector>

#include "core/callback.h"
#include "tests/support/boring.h"

namespace trainbus::testing {

using HookLog = std::vector<std::string>;

/// Appends "Callback.<hook>" (with ":<batch_idx>" or ":<stage>") to `log` for every hook.
/// Like Lightning's HookedCallback its state_dict is {"foo": true}, so it is stateful.
class RecordingCallback : public Callback {
 public:
  explicit RecordingCallback(std::shared_ptr<HookLog> log, std::string state_key = "")
      : log_(std::move(log)), state_key_(std::move(state_key)) {}

  std::string state_key() const override {
    return state_key_.empty() ? Callback::state_key() : state_key_;
  }
  bool stateful() const override { return true; }
  StateDict state_dict() const override;
  void load_state_dict(const StateDict& state) override { add("Callback.load_state_dict"); }

  void setup(Trainer&, Module&, Stage stage) override;
  void teardown(Trainer&, Module&, Stage stage) override;
  void on_fit_start(Trainer&, Module&) override { add("Callback.on_fit_start"); }
  void on_fit_end(Trainer&, Module&) override { add("Callback.on_fit_end"); }
  void on_sanity_check_start(Trainer&, Module&) override { add("Callback.on_sanity_check_start"); }
  void on_sanity_check_end(Trainer&, Module&) override { add("Callback.on_sanity_check_end"); }
  void on_train_start(Trainer&, Module&) override { add("Callback.on_train_start"); }
  void on_train_end(Trainer&, Module&) override { add("Callback.on_train_end"); }
  void on_train_epoch_start(Trainer&, Module&) override { add("Callback.on_train_epoch_start"); }
  void on_train_epoch_end(Trainer&, Module&) override { add("Callback.on_train_epoch_end"); }
  void on_train_batch_start(Trainer&, Module&, const Batch&, int64_t i) override {
    add("Callback.on_train_batch_start", i);
  }
  void on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t i) override {
    add("Callback.on_train_batch_end", i);
  }
  void on_validation_start(Trainer&, Module&) override { add("Callback.on_validation_start"); }
  void on_validation_end(Trainer&, Module&) override { add("Callback.on_validation_end"); }
  void on_validation_epoch_start(Trainer&, Module&) override {
    add("Callback.on_validation_epoch_start");
  }
  void on_validation_epoch_end(Trainer&, Module&) override {
    add("Callback.on_validation_epoch_end");
  }
  void on_validation_batch_start(Trainer&, Module&, const Batch&, int64_t i) override {
    add("Callback.on_validation_batch_start", i);
  }
  void on_validation_batch_end(Trainer&, Module&, const StepOutput&, const Batch&,
                               int64_t i) override {
    add("Callback.on_validation_batch_end", i);
  }
  void on_test_start(Trainer&, Module&) override { add("Callback.on_test_start"); }
  void on_test_end(Trainer&, Module&) override { add("Callback.on_test_end"); }
  void on_test_epoch_start(Trainer&, Module&) override { add("Callback.on_test_epoch_start"); }
  void on_test_epoch_end(Trainer&, Module&) override { add("Callback.on_test_epoch_end"); }
  void on_test_batch_start(Trainer&, Module&, const Batch&, int64_t i) override {
    add("Callback.on_test_batch_start", i);
  }
  void on_test_batch_end(Trainer&, Module&, const StepOutput&, const Batch&, int64_t i) override {
    add("Callback.on_test_batch_end", i);
  }
  void on_predict_start(Trainer&, Module&) override { add("Callback.on_predict_start"); }
  void on_predict_end(Trainer&, Module&) override { add("Callback.on_predict_end"); }
  void on_predict_epoch_start(Trainer&, Module&) override {
    add("Callback.on_predict_epoch_start");
  }
  void on_predict_epoch_end(Trainer&, Module&) override { add("Callback.on_predict_epoch_end"); }
  void on_predict_batch_start(Trainer&, Module&, const Batch&, int64_t i) override {
    add("Callback.on_predict_batch_start", i);
  }
  void on_predict_batch_end(Trainer&, Module&, const at::Tensor&, const Batch&,
                            int64_t i) override {
    add("Callback.on_predict_batch_end", i);
  }
  void on_before_zero_grad(Trainer&, Module&, torch::optim::Optimizer&) override {
    add("Callback.on_before_zero_grad");
  }
  void on_before_backward(Trainer&, Module&, const at::Tensor&) override {
    add("Callback.on_before_backward");
  }
  void on_after_backward(Trainer&, Module&) override { add("Callback.on_after_backward"); }
  void on_before_optimizer_step(Trainer&, Module&, torch::optim::Optimizer&) override {
    add("Callback.on_before_optimizer_step");
  }
  void on_after_optimizer_step(Trainer&, Module&, torch::optim::Optimizer&) override {
    add("Callback.on_after_optimizer_step");
  }
  void on_save_checkpoint(Trainer&, Module&, CheckpointData&) override {
    add("Callback.on_save_checkpoint");
  }
  void on_load_checkpoint(Trainer&, Module&, const CheckpointData&) override {
    add("Callback.on_load_checkpoint");
  }
  void on_exception(Trainer&, Module&, const std::exception& e) override {
    add(std::string("Callback.on_exception:") + e.what());
  }

 private:
  void add(const std::string& name) const { log_->push_back(name); }
  void add(const std::string& name, int64_t i) const {
    log_->push_back(name + ":" + std::to_string(i));
  }
  std::shared_ptr<HookLog> log_;
  std::string state_key_;
};

/// BoringModule that appends "<hook>" (with ":<batch_idx>" or ":<stage>") to `log` for every
/// module hook and step.
class RecordingModule : public BoringModule {
 public:
  explicit RecordingModule(std::shared_ptr<HookLog> log) : log_(std::move(log)) {}

  StepOutput training_step(const Batch& b, int64_t i) override;
  StepOutput validation_step(const Batch& b, int64_t i) override;
  StepOutput test_step(const Batch& b, int64_t i) override;
  at::Tensor predict_step(const Batch& b, int64_t i) override;
  OptimizerConfig configure_optimizers() override;

  void prepare_data() override { add("prepare_data"); }
  void setup(Stage stage) override;
  void configure_model() override { add("configure_model"); }
  void teardown(Stage stage) override;
  void on_fit_start() override { add("on_fit_start"); }
  void on_fit_end() override { add("on_fit_end"); }
  void on_train_start() override { add("on_train_start"); }
  void on_train_end() override { add("on_train_end"); }
  void on_train_epoch_start() override { add("on_train_epoch_start"); }
  void on_train_epoch_end() override { add("on_train_epoch_end"); }
  int on_train_batch_start(const Batch&, int64_t i) override;
  void on_train_batch_end(const StepOutput&, const Batch&, int64_t i) override {
    add("on_train_batch_end", i);
  }
  void on_validation_start() override { add("on_validation_start"); }
  void on_validation_end() override { add("on_validation_end"); }
  void on_validation_epoch_start() override { add("on_validation_epoch_start"); }
  void on_validation_epoch_end() override { add("on_validation_epoch_end"); }
  void on_validation_batch_start(const Batch&, int64_t i) override {
    add("on_validation_batch_start", i);
  }
  void on_validation_batch_end(const StepOutput&, const Batch&, int64_t i) override {
    add("on_validation_batch_end", i);
  }
  void on_test_start() override { add("on_test_start"); }
  void on_test_end() override { add("on_test_end"); }
  void on_test_epoch_start() override { add("on_test_epoch_start"); }
  void on_test_epoch_end() override { add("on_test_epoch_end"); }
  void on_test_batch_start(const Batch&, int64_t i) override { add("on_test_batch_start", i); }
  void on_test_batch_end(const StepOutput&, const Batch&, int64_t i) override {
    add("on_test_batch_end", i);
  }
  void on_predict_start() override { add("on_predict_start"); }
  void on_predict_end() override { add("on_predict_end"); }
  void on_predict_epoch_start() override { add("on_predict_epoch_start"); }
  void on_predict_epoch_end() override { add("on_predict_epoch_end"); }
  void on_predict_batch_start(const Batch&, int64_t i) override {
    add("on_predict_batch_start", i);
  }
  void on_predict_batch_end(const at::Tensor&, const Batch&, int64_t i) override {
    add("on_predict_batch_end", i);
  }
  void on_before_zero_grad(torch::optim::Optimizer&) override { add("on_before_zero_grad"); }
  void on_before_backward(const at::Tensor&) override { add("on_before_backward"); }
  void on_after_backward() override { add("on_after_backward"); }
  void on_before_optimizer_step(torch::optim::Optimizer&) override {
    add("on_before_optimizer_step");
  }
  void on_after_optimizer_step(torch::optim::Optimizer&) override {
    add("on_after_optimizer_step");
  }
  void on_save_checkpoint(CheckpointData&) override { add("on_save_checkpoint"); }
  void on_load_checkpoint(const CheckpointData&) override { add("on_load_checkpoint"); }

  /// on_train_batch_start returns -1 for this batch index (Lightning's "skip the rest of the
  /// epoch").
  int64_t skip_epoch_at_batch = -1;

 private:
  void add(const std::string& name) const { log_->push_back(name); }
  void add(const std::string& name, int64_t i) const {
    log_->push_back(name + ":" + std::to_string(i));
  }
  std::shared_ptr<HookLog> log_;
};

}  // namespace trainbus::testing
