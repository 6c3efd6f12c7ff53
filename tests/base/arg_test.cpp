#include <cstdint>
#include <optional>
#include <string>

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

  // A copy is independent; a mutable one can be assigned through the getter (CLI bindings need that).
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
