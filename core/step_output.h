#pragma once
/// StepOutput: what training_step, validation_step and test_step return.

#include <initializer_list>
#include <map>
#include <string>
#include <utility>

#include <ATen/core/Tensor.h>

namespace trainbus {

/// Named tensors returned by a step, as Lightning's `{"loss": loss, ...}` dict. A bare tensor
/// converts implicitly, so `return loss;` from training_step works. The trainer backpropagates
/// `loss()`; the other entries only travel to callbacks (`outputs` of on_*_batch_end).
class StepOutput {
 public:
  static constexpr const char* kLossKey = "loss";

  StepOutput() = default;
  StepOutput(at::Tensor loss);  // NOLINT(google-explicit-constructor): `return loss;`
  StepOutput(std::initializer_list<std::pair<const std::string, at::Tensor>> values);

  bool empty() const noexcept { return values_.empty(); }
  bool contains(const std::string& name) const { return values_.count(name) > 0; }
  bool has_loss() const { return contains(kLossKey); }

  /// The loss; throws std::out_of_range naming the keys present when the step returned none.
  const at::Tensor& loss() const { return at(kLossKey); }

  /// The entry `name`; throws std::out_of_range naming the keys present when it is missing.
  const at::Tensor& at(const std::string& name) const;

  void set(const std::string& name, at::Tensor value) { values_[name] = std::move(value); }
  const std::map<std::string, at::Tensor>& values() const noexcept { return values_; }

 private:
  std::map<std::string, at::Tensor> values_;
};

}  // namespace trainbus
