#pragma once
/// StateDict: the serialisable state of a callback, data loader, data module or hyper-parameters.

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/ivalue.h>

namespace trainbus::checkpoint {

/// Name -> c10::IValue (int, double, bool, string, tensor, lists, nested StateDicts), the C++
/// form of Lightning's state dicts, ordered by name. Anything an IValue holds survives a
/// checkpoint, written with LibTorch's own serialisation:
///   state.insert("counter", counter_);   counter_ = state.at("counter").toInt();
class StateDict {
 public:
  using Map = std::map<std::string, c10::IValue>;

  StateDict() = default;

  /// Sets `key` to `value`, replacing an earlier value.
  void insert(const std::string& key, c10::IValue value) { entries_[key] = std::move(value); }
  /// Sets `key` to a nested StateDict.
  void insert(const std::string& key, const StateDict& nested) {
    entries_[key] = nested.to_ivalue();
  }

  bool contains(const std::string& key) const { return entries_.count(key) > 0; }
  /// Removes `key`; returns whether it was there.
  bool erase(const std::string& key) { return entries_.erase(key) > 0; }
  /// Removes `key` and returns its value (Python's dict.pop): renaming an entry is
  /// `state.insert("new", state.pop("old"))`. Throws std::out_of_range as at() if it is missing.
  c10::IValue pop(const std::string& key);
  /// The value of `key`; throws std::out_of_range naming the key and the keys present.
  const c10::IValue& at(const std::string& key) const;
  /// A copy of the nested StateDict at `key`; throws if it is missing or not a dict. Changing the
  /// copy does not change this state: change a nested entry with insert_at.
  StateDict dict_at(const std::string& key) const { return from_ivalue(at(key), key); }
  /// Sets the entry at `path` inside nested StateDicts, in this state (Python's
  /// `state["state"]["0"]["exp_avg"] = value`): `insert_at({"state", "0", "exp_avg"}, value)`.
  /// Every dict on the way must exist (std::out_of_range as at() otherwise); std::invalid_argument
  /// for an empty path or a non-dict on the way.
  void insert_at(const std::vector<std::string>& path, c10::IValue value);

  bool empty() const noexcept { return entries_.empty(); }
  size_t size() const noexcept { return entries_.size(); }
  Map::const_iterator begin() const noexcept { return entries_.begin(); }
  Map::const_iterator end() const noexcept { return entries_.end(); }

  /// As a generic dict (Dict[str, Any]), for serialisation. Shares tensors and lists with this.
  c10::IValue to_ivalue() const;
  /// A copy that shares nothing with this one, for a checkpoint that must not change when its owner
  /// goes on changing its state: lists, dicts and tuples copied, tensors copied to dense CPU
  /// tensors (detached; a CUDA state costs no GPU memory while its save is pending).
  StateDict deep_copy() const;
  /// As deep_copy(), but each defined tensor becomes `copy_tensor(tensor)` (a checkpoint snapshot
  /// copies into buffers it keeps); aliases stay aliases.
  StateDict deep_copy(const std::function<at::Tensor(const at::Tensor&)>& copy_tensor) const;
  /// From a dict with string keys; throws std::invalid_argument naming `what` otherwise.
  static StateDict from_ivalue(const c10::IValue& value, const std::string& what = "state");

  friend bool operator==(const StateDict& a, const StateDict& b);

 private:
  Map entries_;
};

}  // namespace trainbus::checkpoint

namespace trainbus {
/// Callbacks, modules and data modules say `StateDict`: the checkpoint layer's type, in their
/// namespace.
using checkpoint::StateDict;
}  // namespace trainbus
