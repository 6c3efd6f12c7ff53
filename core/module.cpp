#include "core/module.h"

#include <boost/core/demangle.hpp>

#include "base/errors.h"
#include "core/detail/gradients.h"
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

std::vector<LightningOptimizer> Module::optimizers() const {
  Trainer& running = trainer();
  std::vector<LightningOptimizer> handles;
  for (std::size_t i = 0; i < running.optimizers().size(); ++i) handles.emplace_back(running, i);
  return handles;
}

LightningOptimizer Module::optimizer() const {
  Trainer& running = trainer();
  const std::size_t count = running.optimizers().size();
  TRAINBUS_CHECK(count == 1, class_name(*this), "::optimizer() gives the only optimizer, but ",
                 count == 0 ? std::string("there is none (configure_optimizers has not run yet)")
                            : detail::concat("configure_optimizers() returned ", count,
                                             ": use optimizers()[i]"));
  return LightningOptimizer(running, 0);
}

std::vector<std::shared_ptr<torch::optim::LRScheduler>> Module::lr_schedulers() const {
  std::vector<std::shared_ptr<torch::optim::LRScheduler>> schedulers;
  for (const auto& config : trainer().lr_scheduler_configs())
    schedulers.push_back(config.scheduler);
  return schedulers;
}

void Module::manual_backward(const at::Tensor& loss) {
  TRAINBUS_CHECK(trainer_ != nullptr, class_name(*this),
                 "::manual_backward is called from training_step during Trainer::fit; this "
                 "module is not attached to a Trainer");
  trainer_->manual_backward(loss);
}

void Module::toggle_optimizer(torch::optim::Optimizer& optimizer) {
  // As Lightning's toggle_optimizer: remember every optimizer parameter's requires_grad (the
  // first time it is seen), turn them all off, then give `optimizer`'s own theirs back.
  std::unordered_map<const void*, std::pair<at::Tensor, bool>> state;
  for (const auto& each : trainer().optimizers()) {
    for (auto& group : each->param_groups()) {
      for (auto& parameter : group.params())
        state.emplace(parameter.unsafeGetTensorImpl(),
                      std::make_pair(parameter, parameter.requires_grad()));
    }
  }
  // Checked before anything changes: a wrong optimizer leaves every parameter as it was.
  for (auto& group : optimizer.param_groups()) {
    for (auto& parameter : group.params()) {
      TRAINBUS_CHECK(state.count(parameter.unsafeGetTensorImpl()) > 0, class_name(*this),
                     "::toggle_optimizer: the optimizer is not one of configure_optimizers'; "
                     "pass one of optimizers()");
    }
  }
  for (auto& [impl, saved] : state) saved.first.set_requires_grad(false);
  for (auto& group : optimizer.param_groups()) {
    for (auto& parameter : group.params())
      parameter.set_requires_grad(state.at(parameter.unsafeGetTensorImpl()).second);
  }
  requires_grad_state_ = std::move(state);
}

void Module::untoggle_optimizer(torch::optim::Optimizer& optimizer) {
  // As Lightning's untoggle_optimizer: the parameters of every other optimizer get back what
  // toggle_optimizer saw; `optimizer`'s own were left alone by it.
  for (const auto& each : trainer().optimizers()) {
    if (each.get() == &optimizer) continue;
    for (auto& group : each->param_groups()) {
      for (auto& parameter : group.params()) {
        const auto found = requires_grad_state_.find(parameter.unsafeGetTensorImpl());
        if (found != requires_grad_state_.end()) parameter.set_requires_grad(found->second.second);
      }
    }
  }
  requires_grad_state_.clear();
}

void Module::restore_toggled_optimizer() noexcept {
  for (auto& [impl, saved] : requires_grad_state_) {
    try {
      saved.first.set_requires_grad(saved.second);
    } catch (const std::exception&) {  // a leaf parameter's flag: not expected to fail
    }
  }
  requires_grad_state_.clear();
}

void Module::clip_gradients(torch::optim::Optimizer& optimizer,
                            std::optional<double> gradient_clip_val,
                            std::optional<GradientClipAlgorithm> gradient_clip_algorithm) {
  const TrainerOptions& options = trainer().options();
  // Lightning's LightningModule.clip_gradients: the trainer's value unless one is given; both,
  // when they differ, is an error.
  const std::optional<double> trainer_val = options.gradient_clip_val();
  const bool conflict = gradient_clip_val && trainer_val && *trainer_val != *gradient_clip_val;
  TRAINBUS_CHECK(!conflict, "You have set `Trainer(gradient_clip_val=", trainer_val.value_or(0.0),
                 ")` and have passed `clip_gradients(gradient_clip_val=",
                 gradient_clip_val.value_or(0.0), ")`. Please use only one of them.");
  detail::clip_gradients(optimizer, gradient_clip_val.value_or(trainer_val.value_or(0.0)),
                         gradient_clip_algorithm.value_or(options.gradient_clip_algorithm()));
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
