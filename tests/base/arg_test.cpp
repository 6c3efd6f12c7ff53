#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>

#include <catch2/catch.hpp>

#include "base/arg.h"

namespace {

struct ExampleOptions {
  TRAINBUS_ARG(std::string, monitor);
  TRAINBUS_ARG(int64_t, patience) = 3;
  TRAINBUS_ARG(std::optional<double>, threshold);
  TRAINBUS_ARG(const char*, label) = "default";
};

}  // namespace

TEST_CASE("TRAINBUS_ARG options chain, keep their defaults and stay values", "[base][options]") {
  const ExampleOptions defaults;
  CHECK(defaults.monitor().empty());
  CHECK(defaults.patience() == 3);
  CHECK_FALSE(defaults.threshold().has_value());

  // Set in a chain on a temporary, as LibTorch's options: each setter returns the options.
  const ExampleOptions chained = ExampleOptions().monitor("val_loss").patience(5).threshold(0.5);
  CHECK(chained.monitor() == "val_loss");
  CHECK(chained.patience() == 5);
  CHECK(chained.threshold() == 0.5);

  // A copy is independent; a mutable one can be assigned through the getter (CLI bindings need
  // that).
  ExampleOptions copy = chained;
  copy.patience() = 7;
  copy.threshold() = std::nullopt;
  CHECK(copy.patience() == 7);
  CHECK(chained.patience() == 5);
  CHECK(chained.threshold().has_value());
  int64_t* bound = &copy.patience();
  *bound = 9;
  CHECK(copy.patience() == 9);

  // A pointer-typed option takes a pointer (the setter is `T const&`, not a pointer to const).
  static const char text[] = "set";
  CHECK(std::string(ExampleOptions().label(text).label()) == "set");
}

TEST_CASE("TRAINBUS_ARG on a temporary gives a value, so a reference to the chain does not dangle",
          "[base][options]") {
  const ExampleOptions& held = ExampleOptions().monitor("loss").patience(4);  // lifetime extended
  CHECK(held.monitor() == "loss");
  CHECK(held.patience() == 4);
  static_assert(std::is_same_v<decltype(ExampleOptions().patience(1)), ExampleOptions>);
  ExampleOptions named;
  static_assert(std::is_same_v<decltype(named.patience(1)), ExampleOptions&>);
}
