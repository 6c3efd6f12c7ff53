#include "base/yaml_scalar.h"

#include <limits>

#include <catch2/catch.hpp>

namespace trainbus {
namespace {

TEST_CASE("yaml_float writes a float as PyYAML does, so that it reads back as a float", "[yaml]") {
  // Expected values: PyYAML 6.0.3's yaml.dump(value) (represent_float over Python's repr), the
  // writer of Lightning's hparams.yaml (save_hparams_to_yaml).
  CHECK(yaml_float(1e-4) == "0.0001");
  CHECK(yaml_float(1e-5) == "1.0e-05");
  CHECK(yaml_float(1e-8) == "1.0e-08");
  CHECK(yaml_float(0.001) == "0.001");
  CHECK(yaml_float(1e16) == "1.0e+16");
  CHECK(yaml_float(1234567890123456.0) == "1234567890123456.0");
  CHECK(yaml_float(100.0) == "100.0");
  CHECK(yaml_float(0.0) == "0.0");
  CHECK(yaml_float(-0.0) == "-0.0");
  CHECK(yaml_float(-2.5e-7) == "-2.5e-07");
  CHECK(yaml_float(3.14159) == "3.14159");
  CHECK(yaml_float(1.5e300) == "1.5e+300");
  CHECK(yaml_float(5e-324) == "5.0e-324");
  CHECK(yaml_float(0.1 + 0.2) == "0.30000000000000004");
  CHECK(yaml_float(std::numeric_limits<double>::infinity()) == ".inf");
  CHECK(yaml_float(-std::numeric_limits<double>::infinity()) == "-.inf");
  CHECK(yaml_float(std::numeric_limits<double>::quiet_NaN()) == ".nan");
}

TEST_CASE("every yaml_float is a typed YAML float", "[yaml]") {
  for (double value : {1e-4, 1e-5, 1e16, 100.0, 0.0, -2.5e-7, 5e-324})
    CHECK(is_typed_yaml_scalar(yaml_float(value)));
  // PyYAML reads 1e-04 as the string '1e-04' (YAML 1.1 floats need a '.'): the bug this fixes.
  CHECK_FALSE(is_typed_yaml_scalar("1e-04"));
}

TEST_CASE("strings are quoted so that they stay strings", "[yaml]") {
  CHECK(yaml_quoted("mlp") == "'mlp'");
  CHECK(yaml_quoted("it's") == "'it''s'");
  CHECK(yaml_quoted("0.001") == "'0.001'");
  CHECK(is_typed_yaml_scalar("'it''s'"));
  // A newline or a control character cannot be single-quoted: double quotes with escapes, as
  // PyYAML writes them.
  CHECK(yaml_quoted("two\nlines") == "\"two\\nlines\"");
  CHECK(yaml_quoted("tab\there \"q\"") == "\"tab\\there \\\"q\\\"\"");
  CHECK(is_typed_yaml_scalar(yaml_quoted("two\nlines")));
}

TEST_CASE("keys with ': ' or '#' are quoted, simple names stay plain", "[yaml]") {
  CHECK(yaml_key("lr") == "lr");
  CHECK(yaml_key("optimizer.lr") == "optimizer.lr");
  CHECK(yaml_key("a: b") == "'a: b'");  // PyYAML: 'a: b': 1
  CHECK(yaml_key("# note") == "'# note'");
  CHECK(yaml_key("true") == "'true'");  // a plain key `true` would read back as a bool
  CHECK(yaml_key("yes") == "'yes'");    // and so would yes/no/on/off in YAML 1.1 (PyYAML)
  CHECK(yaml_key("off") == "'off'");
}

TEST_CASE("yaml_scalar_or_quoted keeps typed values and types an older recording's text",
          "[yaml]") {
  CHECK(yaml_scalar_or_quoted("64") == "64");
  CHECK(yaml_scalar_or_quoted("0.001") == "0.001");
  CHECK(yaml_scalar_or_quoted("true") == "true");
  CHECK(yaml_scalar_or_quoted("'mlp'") == "'mlp'");
  CHECK(yaml_scalar_or_quoted("[0.1, 2]") == "[0.1, 2]");
  CHECK(yaml_scalar_or_quoted("1e-04") == "0.0001");  // a float rendered before typed hparams
  CHECK(yaml_scalar_or_quoted("mlp") == "'mlp'");
  CHECK(yaml_scalar_or_quoted("a: b") == "'a: b'");
  CHECK(yaml_scalar_or_quoted("") == "''");
  CHECK(yaml_scalar_or_quoted("nan") == "'nan'");  // the text "nan", not a float
}

}  // namespace
}  // namespace trainbus
