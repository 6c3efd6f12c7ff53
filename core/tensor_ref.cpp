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

}  // namespace trainbus
