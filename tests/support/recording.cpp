#include "tests/support/recording.h"

namespace trainbus::testing {

StateDict RecordingCallback::state_dict() const {
  StateDict state;
  state.insert("foo", true);
  return state;
}

void RecordingCallback::setup(Trainer&, Module&, Stage stage) {
  add("Callback.setup:" + std::string(to_string(stage)));
}

void RecordingCallback::teardown(Trainer&, Module&, Stage stage) {
  add("Callback.teardown:" + std::string(to_string(stage)));
}

StepOutput RecordingModule::training_step(const Batch& b, int64_t i) {
  add("training_step", i);
  return BoringModule::training_step(b, i);
}

StepOutput RecordingModule::validation_step(const Batch& b, int64_t i) {
  add("validation_step", i);
  return BoringModule::validation_step(b, i);
}

StepOutput RecordingModule::test_step(const Batch& b, int64_t i) {
  add("test_step", i);
  return BoringModule::test_step(b, i);
}

at::Tensor RecordingModule::predict_step(const Batch& b, int64_t i) {
  add("predict_step", i);
  return BoringModule::predict_step(b, i);
}

OptimizerConfig RecordingModule::configure_optimizers() {
  add("configure_optimizers");
  return BoringModule::configure_optimizers();
}

void RecordingModule::setup(Stage stage) { add("setup:" + std::string(to_string(stage))); }

void RecordingModule::teardown(Stage stage) { add("teardown:" + std::string(to_string(stage))); }

int RecordingModule::on_train_batch_start(const Batch&, int64_t i) {
  add("on_train_batch_start", i);
  return i == skip_epoch_at_batch ? -1 : 0;
}

}  // namespace trainbus::testing
