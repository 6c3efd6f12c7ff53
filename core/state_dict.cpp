#include "core/state_dict.h"

#include <stdexcept>

#include <ATen/core/Dict.h>
#include <ATen/core/jit_type.h>

namespace trainbus {

const c10::IValue& StateDict::at(const std::string& key) const {
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second;
  std::string present;
  for (const auto& [name, value] : entries_) present += (present.empty() ? "`" : ", `") + name + "`";
  throw std::out_of_range("state has no entry `" + key + "`; it holds " +
                          (present.empty() ? std::string("nothing") : present));
}

c10::IValue StateDict::to_ivalue() const {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [key, value] : entries_) dict.insert(key, value);
  return dict;
}

StateDict StateDict::deep_copy() const {
  StateDict copy;
  c10::IValue::HashAliasedIValueMap memo;  // entries that share a tensor still share its copy
  for (const auto& [key, value] : entries_) copy.entries_[key] = value.deepcopy(memo);
  return copy;
}

StateDict StateDict::from_ivalue(const c10::IValue& value, const std::string& what) {
  if (!value.isGenericDict()) {
    throw std::invalid_argument(what + " is not a dict (found " + value.tagKind() + ")");
  }
  StateDict state;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString()) throw std::invalid_argument(what + " has a key that is not a string");
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

}  // namespace trainbus
