#include "core/tensor_ref.h"

#include <any>
#include <utility>

namespace trainbus {

events::TensorRef make_tensor_ref(at::Tensor tensor) {
  return events::TensorRef(std::any(std::move(tensor)));
}

events::TensorRef make_tensor_ref(StepOutput outputs) {
  return events::TensorRef(std::any(std::move(outputs)));
}

at::Tensor tensor_of(const events::TensorRef& ref) {
  if (const auto* tensor = std::any_cast<at::Tensor>(&ref.value())) return *tensor;
  return {};
}

const StepOutput* step_output_of(const events::TensorRef& ref) {
  return std::any_cast<StepOutput>(&ref.value());
}

events::TensorRef snapshot_to_cpu(const events::TensorRef& ref) {
  auto copy = [](const at::Tensor& t) {
    // clone() after to(): to(kCPU) is a no-op for CPU tensors, and the copy must not alias.
    return t.defined() ? t.detach().to(at::kCPU).clone() : t;
  };
  if (const auto* tensor = std::any_cast<at::Tensor>(&ref.value()))
    return make_tensor_ref(copy(*tensor));
  if (const auto* outputs = std::any_cast<StepOutput>(&ref.value())) {
    StepOutput copied;
    for (const auto& [name, value] : outputs->values()) copied.set(name, copy(value));
    return make_tensor_ref(std::move(copied));
  }
  return {};
}

}  // namespace trainbus
