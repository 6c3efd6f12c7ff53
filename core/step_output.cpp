#include "core/step_output.h"

#include <stdexcept>

namespace trainbus {

StepOutput::StepOutput(at::Tensor loss) { values_.emplace(kLossKey, std::move(loss)); }

StepOutput::StepOutput(std::initializer_list<std::pair<const std::string, at::Tensor>> values)
    : values_(values) {}

const at::Tensor& StepOutput::at(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  std::string present;
  for (const auto& [key, value] : values_) present += (present.empty() ? "`" : ", `") + key + "`";
  throw std::out_of_range("StepOutput has no entry `" + name + "`; it holds " +
                          (present.empty() ? std::string("nothing") : present) +
                          ". Return it from the step, e.g. `return {{\"" + name + "\", value}};`");
}

}  // namespace trainbus
