#include "core/module.h"

#include <boost/core/demangle.hpp>

#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus {
namespace {

std::string class_name(const Module& module) {
  return boost::core::demangle(typeid(module).name());
}

}  // namespace

Module::~Module() = default;

StepOutput Module::validation_step(const Batch& batch, int64_t batch_idx) {
  throw MisconfigurationError(detail::concat(
      class_name(*this),
      " has no validation_step, but the data has a val loader: override validation_step, "
      "or return nullptr from val_dataloader() / set limit_val_batches = 0 to train without "
      "validation"));
}

StepOutput Module::test_step(const Batch& batch, int64_t batch_idx) {
  throw MisconfigurationError(
      detail::concat("Trainer::test needs ", class_name(*this), "::test_step; override it"));
}

at::Tensor Module::predict_step(const Batch& batch, int64_t batch_idx) {
  throw MisconfigurationError(
      detail::concat("Trainer::predict needs ", class_name(*this), "::predict_step; override it"));
}

namespace {

// Data-parallel training: a value reduced over the ranks (none on one process).
MetricsCollector::ReduceAcrossRanks reduce_across_ranks(Trainer& running) {
  if (running.world_size() == 1) return {};
  return [&running](double local, distributed::ReduceOp op) {
    std::vector<double> values{local};
    running.strategy().all_reduce(values, op);
    return values[0];
  };
}

}  // namespace

void Module::log(const std::string& name, double value, const LogOptions& options) {
  Trainer& running = trainer();
  running.metrics_.log(running.current_fx_, name, value, options, reduce_across_ranks(running));
}

void Module::log(const std::string& name, const at::Tensor& value, const LogOptions& options) {
  TRAINBUS_CHECK(value.defined() && value.numel() == 1, "log(\"", name,
                 "\"): expected a one-element tensor, got ",
                 value.defined() ? detail::concat("shape ", value.sizes())
                                 : std::string("an undefined tensor"),
                 "; reduce it first (e.g. .mean())");
  Trainer& running = trainer();
  running.metrics_.log(running.current_fx_, name, value, options, reduce_across_ranks(running));
}

void Module::log_dict(const Metrics& values, const LogOptions& options) {
  for (const auto& [name, value] : values) log(name, value, options);
}

void Module::log_dict(const std::map<std::string, at::Tensor>& values, const LogOptions& options) {
  for (const auto& [name, value] : values) log(name, value, options);
}

Trainer& Module::trainer() const {
  TRAINBUS_CHECK(
      trainer_ != nullptr, class_name(*this),
      " is not attached to a Trainer: trainer(), log() and optimizers() work only inside "
      "Trainer::fit/validate/test/predict");
  return *trainer_;
}

const std::vector<std::shared_ptr<torch::optim::Optimizer>>& Module::optimizers() const {
  return trainer().optimizers();
}

void Module::set_example_input_array(at::Tensor example, ExampleForward forward) {
  TRAINBUS_CHECK(!example.defined() || forward,
                 "set_example_input_array: an example input needs the function that computes the "
                 "module's output from it (its forward), for the model summary's sizes; pass "
                 "[this](const at::Tensor& x) { return forward(x); }");
  example_input_array_ = std::move(example);
  example_forward_ = std::move(forward);
}

c10::Device Module::device() const {
  for (const auto& parameter : parameters()) return parameter.device();
  for (const auto& buffer : buffers()) return buffer.device();
  return c10::Device(c10::DeviceType::CPU);
}

}  // namespace trainbus
