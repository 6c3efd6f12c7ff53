#pragma once
/// TRAINBUS_ARG: a chainable option, as LibTorch's TORCH_ARG, so that options read like keyword
/// arguments: `ModelCheckpointOptions().monitor("val_loss").save_top_k(3)`.
///
///   struct EarlyStoppingOptions {
///     TRAINBUS_ARG(std::string, monitor);
///     TRAINBUS_ARG(int64_t, patience) = 3;
///   };
///
/// declares a private member `patience_` (with its default) and, publicly,
///   `options.patience(5)`   sets it and returns the options, to chain: a reference to a named
///                           object, a new value (moved) for a temporary, so that
///                           `const auto& o = Options().patience(5);` does not dangle;
///   `options.patience()`    reads it (a const reference, or a mutable one on a mutable object, so
///                           that `options.patience() = 5` and `&options.patience()` work too).
/// The options stay copyable values with defaults; only positional brace lists go away.
/// The macro ends in `private:`: declare what must stay public (a nested enum) before the first
/// TRAINBUS_ARG, or after `public:`.

#include <type_traits>
#include <utility>

#define TRAINBUS_ARG(T, name)                                                  \
 public:                                                                       \
  auto name(T const& new_##name)&->decltype(*this) {                           \
    this->name##_ = new_##name;                                                \
    return *this;                                                              \
  }                                                                            \
  auto name(T&& new_##name)&->decltype(*this) {                                \
    this->name##_ = std::move(new_##name);                                     \
    return *this;                                                              \
  }                                                                            \
  auto name(T const& new_##name)&&->std::remove_reference_t<decltype(*this)> { \
    this->name##_ = new_##name;                                                \
    return std::move(*this);                                                   \
  }                                                                            \
  auto name(T&& new_##name)&&->std::remove_reference_t<decltype(*this)> {      \
    this->name##_ = std::move(new_##name);                                     \
    return std::move(*this);                                                   \
  }                                                                            \
  T const& name() const noexcept { return this->name##_; }                     \
  T& name() noexcept { return this->name##_; }                                 \
                                                                               \
 private:                                                                      \
  T name##_ /* NOLINT(bugprone-macro-parentheses) */
