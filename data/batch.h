#pragma once
/// Batch: one mini-batch as the loops hand it to steps and hooks: named tensors, with `data` and
/// `target` as the common case (Lightning's batch is whatever the loader yields, often a dict).

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
// NOTE: not needed here, but what LibTorch's Example (the Batch before this one) brought in; kept
// so that code which includes trainbus headers and then says `using namespace trainbus;` before
// its own torch includes still compiles (c10's variant.h calls an unqualified `data(...)`, which
// trainbus::data would otherwise hide).
#include <torch/types.h>

namespace trainbus::data {

/// Named tensors in the order they were given. The entries named "data" and "target" are the
/// fields `data` and `target`, so that `batch.data` / `batch.target` keep working as with
/// LibTorch's Example<>, which this replaces:
///
///     Batch(inputs, labels)                        // batch.data, batch.target
///     Batch{{"image", x}, {"label", y}, {"mask", m}}  // batch["image"], batch.at("mask")
///
/// An entry holding an undefined tensor does not count (a predict batch without targets has one
/// entry, "data"). A value type: copies share the tensors, as copies of tensors do.
class Batch {
 public:
  /// The entry "data": the inputs.
  at::Tensor data;
  /// The entry "target": the labels (undefined for predict).
  at::Tensor target;

  Batch() = default;
  /// `data` and `target`, as torch::data::Example's constructor.
  Batch(at::Tensor inputs, at::Tensor targets);
  /// Named tensors, in this order. Throws std::invalid_argument for a name given twice.
  Batch(std::initializer_list<std::pair<std::string, at::Tensor>> entries);

  /// Sets the tensor named `name` (a new name goes last; "data" and "target" set the fields).
  Batch& set(const std::string& name, at::Tensor tensor);
  /// Whether an entry `name` holds a defined tensor.
  bool contains(std::string_view name) const;
  /// The tensor named `name` (a handle sharing its storage: by value, so that it outlives a
  /// temporary batch, `loader.batch(0)["image"]`, and a later set()); throws std::out_of_range
  /// naming it and the batch's names.
  at::Tensor at(std::string_view name) const;
  at::Tensor operator[](std::string_view name) const { return at(name); }

  /// The names of the defined entries, in order: "data" and "target" first when they were set
  /// as fields rather than by name.
  std::vector<std::string> names() const;
  /// (name, tensor) of the defined entries, in the order of names().
  std::vector<std::pair<std::string, at::Tensor>> items() const;
  /// Calls fn(name, tensor) for each defined entry, in the order of names(), copying nothing:
  /// what the loops use on every batch.
  template <class Fn>
  void for_each(Fn&& fn) const {
    if (data.defined() && !named("data")) fn(std::string_view("data"), data);
    if (target.defined() && !named("target")) fn(std::string_view("target"), target);
    for (const std::string& name : order_) {
      const at::Tensor* tensor = find(name);
      if (tensor->defined()) fn(std::string_view(name), *tensor);
    }
  }
  std::size_t size() const;
  bool empty() const { return size() == 0; }

 private:
  const at::Tensor* find(std::string_view name) const;
  bool named(std::string_view name) const;

  std::vector<std::pair<std::string, at::Tensor>> others_;  // entries other than data and target
  std::vector<std::string> order_;                          // every name set by name, in order
};

/// The batch with every tensor on `device` (a no-op for tensors already there); names and order
/// are kept.
Batch to_device(const Batch& batch, const c10::Device& device);

/// Number of samples, as Lightning's extract_batch_size: the first dimension of the first tensor
/// in names() order (1 for a scalar); 1 for a batch without tensors (where Lightning raises: the
/// loops here compute it for every batch, also when nothing is logged).
int64_t batch_size_of(const Batch& batch);

}  // namespace trainbus::data

namespace trainbus {
/// What every step and batch hook receives, in the namespace of the hooks.
using data::Batch;
}  // namespace trainbus
