#include "data/batch.h"

#include <algorithm>
#include <stdexcept>

namespace trainbus::data {

Batch::Batch(at::Tensor inputs, at::Tensor targets) {
  set("data", std::move(inputs));
  set("target", std::move(targets));
}

Batch::Batch(std::initializer_list<std::pair<std::string, at::Tensor>> entries) {
  for (const auto& [name, tensor] : entries) {
    if (std::find(order_.begin(), order_.end(), name) != order_.end())
      throw std::invalid_argument("Batch: the name `" + name +
                                  "` is given twice; give each tensor its own name");
    set(name, tensor);
  }
}

Batch& Batch::set(const std::string& name, at::Tensor tensor) {
  if (std::find(order_.begin(), order_.end(), name) == order_.end()) order_.push_back(name);
  if (name == "data") {
    data = std::move(tensor);
  } else if (name == "target") {
    target = std::move(tensor);
  } else {
    auto it = std::find_if(others_.begin(), others_.end(),
                           [&](const auto& entry) { return entry.first == name; });
    if (it == others_.end())
      others_.emplace_back(name, std::move(tensor));
    else
      it->second = std::move(tensor);
  }
  return *this;
}

const at::Tensor* Batch::find(std::string_view name) const {
  if (name == "data") return &data;
  if (name == "target") return &target;
  for (const auto& entry : others_)
    if (entry.first == name) return &entry.second;
  return nullptr;
}

bool Batch::contains(std::string_view name) const {
  const at::Tensor* tensor = find(name);
  return tensor != nullptr && tensor->defined();
}

bool Batch::named(std::string_view name) const {
  return std::find(order_.begin(), order_.end(), name) != order_.end();
}

std::size_t Batch::size() const {
  std::size_t count = 0;
  for_each([&](std::string_view, const at::Tensor&) { ++count; });
  return count;
}

at::Tensor Batch::at(std::string_view name) const {
  const at::Tensor* tensor = find(name);
  if (tensor == nullptr || !tensor->defined()) {
    std::string known;
    for (const std::string& n : names()) known += (known.empty() ? "`" : ", `") + n + "`";
    throw std::out_of_range("Batch: no tensor named `" + std::string(name) + "`; this batch has " +
                            (known.empty() ? std::string("none") : known));
  }
  return *tensor;
}

std::vector<std::string> Batch::names() const {
  // Fields assigned directly (`batch.data = x`) come first, in Example's order.
  std::vector<std::string> result;
  for_each([&](std::string_view name, const at::Tensor&) { result.emplace_back(name); });
  return result;
}

std::vector<std::pair<std::string, at::Tensor>> Batch::items() const {
  std::vector<std::pair<std::string, at::Tensor>> result;
  for_each([&](std::string_view name, const at::Tensor& tensor) {
    result.emplace_back(std::string(name), tensor);
  });
  return result;
}

Batch to_device(const Batch& batch, const c10::Device& device) {
  bool all_there = true;
  batch.for_each([&](std::string_view, const at::Tensor& tensor) {
    all_there = all_there && tensor.device() == device;
  });
  if (all_there) return batch;  // the common case on the CPU: nothing to build
  Batch moved;
  batch.for_each([&](std::string_view name, const at::Tensor& tensor) {
    moved.set(std::string(name),
              tensor.device() != device ? tensor.to(device, /*non_blocking=*/false) : tensor);
  });
  return moved;
}

int64_t batch_size_of(const Batch& batch) {
  // Lightning's extract_batch_size: the first tensor found decides.
  int64_t size = -1;
  batch.for_each([&](std::string_view, const at::Tensor& tensor) {
    if (size < 0) size = tensor.dim() == 0 ? 1 : tensor.size(0);
  });
  return size < 0 ? 1 : size;
}

}  // namespace trainbus::data
