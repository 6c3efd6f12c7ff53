#include "checkpoint/state_dict.h"

#include <map>
#include <stdexcept>
#include <vector>

#include <ATen/core/Dict.h>
#include <ATen/core/ivalue_inl.h>
#include <ATen/core/jit_type.h>

namespace trainbus::checkpoint {

const c10::IValue& StateDict::at(const std::string& key) const {
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second;
  std::string present;
  for (const auto& [name, value] : entries_)
    present += (present.empty() ? "`" : ", `") + name + "`";
  throw std::out_of_range("state has no entry `" + key + "`; it holds " +
                          (present.empty() ? std::string("nothing") : present));
}

c10::IValue StateDict::pop(const std::string& key) {
  c10::IValue value = at(key);
  entries_.erase(key);
  return value;
}

void StateDict::insert_at(const std::vector<std::string>& path, c10::IValue value) {
  if (path.empty()) throw std::invalid_argument("StateDict::insert_at: the path is empty");
  if (path.size() == 1) return insert(path.front(), std::move(value));
  StateDict nested = dict_at(path.front());
  nested.insert_at(std::vector<std::string>(path.begin() + 1, path.end()), std::move(value));
  insert(path.front(), nested);
}

c10::IValue StateDict::to_ivalue() const {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [key, value] : entries_) dict.insert(key, value);
  return dict;
}

namespace {

using CopyTensor = std::function<at::Tensor(const at::Tensor&)>;

at::Tensor dense_cpu_copy(const at::Tensor& tensor) {
  return tensor.detach().to(at::TensorOptions().device(at::kCPU), /*non_blocking=*/false,
                            /*copy=*/true, at::MemoryFormat::Contiguous);
}

// A copy of `value` that shares nothing with it; tensors become copy_tensor(tensor). Tensors that
// appear twice stay one tensor (by their storage and view), as IValue::deepcopy keeps aliases.
c10::IValue cpu_deep_copy(const c10::IValue& value, std::map<const void*, at::Tensor>& copied,
                          const CopyTensor& copy_tensor) {
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    if (!tensor.defined()) return value;
    at::Tensor& copy = copied[tensor.unsafeGetTensorImpl()];
    if (!copy.defined()) copy = copy_tensor(tensor);
    return copy;
  }
  if (value.isList()) {
    c10::impl::GenericList list = value.toList();
    c10::impl::GenericList copy(list.elementType());
    copy.reserve(list.size());
    for (const c10::IValue& element : list)
      copy.push_back(cpu_deep_copy(element, copied, copy_tensor));
    return copy;
  }
  if (value.isGenericDict()) {
    c10::impl::GenericDict dict = value.toGenericDict();
    c10::impl::GenericDict copy(dict.keyType(), dict.valueType());
    for (const auto& entry : dict)
      copy.insert(entry.key(), cpu_deep_copy(entry.value(), copied, copy_tensor));
    return copy;
  }
  if (value.isTuple()) {
    std::vector<c10::IValue> elements;
    for (const c10::IValue& element : value.toTupleRef().elements())
      elements.push_back(cpu_deep_copy(element, copied, copy_tensor));
    return c10::ivalue::Tuple::create(std::move(elements));
  }
  if (value.isObject() || value.isCapsule() || value.isFuture() || value.isRRef() ||
      value.isEnum() || value.isPyObject()) {
    return value.deepcopy();  // rare in a state; LibTorch's own deep copy
  }
  return value;  // numbers, strings, None, devices: immutable
}

}  // namespace

StateDict StateDict::deep_copy() const { return deep_copy(dense_cpu_copy); }

StateDict StateDict::deep_copy(const CopyTensor& copy_tensor) const {
  StateDict copy;
  std::map<const void*, at::Tensor> copied;
  for (const auto& [key, value] : entries_)
    copy.entries_[key] = cpu_deep_copy(value, copied, copy_tensor);
  return copy;
}

StateDict StateDict::from_ivalue(const c10::IValue& value, const std::string& what) {
  if (!value.isGenericDict()) {
    throw std::invalid_argument(what + " is not a dict (found " + value.tagKind() + ")");
  }
  StateDict state;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString())
      throw std::invalid_argument(what + " has a key that is not a string");
    state.entries_[entry.key().toStringRef()] = entry.value();
  }
  return state;
}

bool operator==(const StateDict& a, const StateDict& b) {
  if (a.size() != b.size()) return false;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
    if (ia->first != ib->first) return false;
    const c10::IValue& x = ia->second;
    const c10::IValue& y = ib->second;
    if (x.isTensor() && y.isTensor()) {
      if (!x.toTensor().equal(y.toTensor())) return false;
    } else if (!(x == y)) {
      return false;
    }
  }
  return true;
}

}  // namespace trainbus::checkpoint
