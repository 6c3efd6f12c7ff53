// python_format: Python's format(value, spec), which Lightning's ModelCheckpoint applies to each
// metric of a filename template ("{val_acc:.1%}"). Every expected string below is what CPython
// 3.11 prints for format(value, spec) (float.__format__ and int.__format__:
// Python/formatter_unicode.c, Python/pystrtod.c), pasted here so that the test needs no Python.
#include "base/python_format.h"

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include <catch2/catch.hpp>

using namespace trainbus;
using Catch::Matchers::Contains;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

template <class T>
struct FormatCase {
  T value;
  const char* spec;
  const char* python;  // format(value, spec) in CPython 3.11
};

}  // namespace

TEST_CASE("python_format formats a float as Python's format(value, spec)", "[base][format]") {
  const FormatCase<double> cases[] = {
      {0.1234, ".1%", "12.3%"},
      {0.1234, "%", "12.340000%"},
      {0.5, "08.1%", "00050.0%"},
      {0.5, "#.0%", "50.%"},
      {0.1234, "", "0.1234"},
      {12.0, "", "12.0"},
      {1e+16, "", "1e+16"},
      {1000000000000000.0, "", "1000000000000000.0"},
      {1e-05, "", "1e-05"},
      {0.0001, "", "0.0001"},
      {0.0, "", "0.0"},
      {-0.0, "", "-0.0"},
      {0.30000000000000004, "", "0.30000000000000004"},
      {1.2345678901234568e+17, "", "1.2345678901234568e+17"},
      {12.0, ".3", "12.0"},
      {100.0, ".3", "1e+02"},
      {0.5, ".2", "0.5"},
      {1234.5, ".3", "1.23e+03"},
      {12.5, ".0", "1e+01"},
      {3.14159, ".2f", "3.14"},
      {3.14159, "f", "3.141590"},
      {2.5, ".0f", "2"},
      {3.5, ".0f", "4"},
      {1e+300, ".1e", "1.0e+300"},
      {0.1234, ".1e", "1.2e-01"},
      {1234.5, "E", "1.234500E+03"},
      {0.000123, "g", "0.000123"},
      {1234567.0, "g", "1.23457e+06"},
      {1234567.0, ".10g", "1234567"},
      {100.0, "#.3g", "100."},
      {0.0001, "G", "0.0001"},
      {1e-05, "g", "1e-05"},
      {-1.5, "+.2f", "-1.50"},
      {1.5, "+.2f", "+1.50"},
      {1.5, " .2f", " 1.50"},
      {-1.5, "08.2f", "-0001.50"},
      {-1.5, "+08.2f", "-0001.50"},
      {1.5, "<8.2f", "1.50    "},
      {1.5, "^8.2f", "  1.50  "},
      {1.5, "*^9.2f", "**1.50***"},
      {-1.5, "x=8.2f", "-xxx1.50"},
      {1.5, "8", "     1.5"},
      {-1.5, "+^9.2f", "++-1.50++"},
      {-0.0, ".1f", "-0.0"},
      {-0.001, ".1f", "-0.0"},
      {-0.001, "z.1f", "0.0"},
      {-0.0, "z", "0.0"},
      {-std::numeric_limits<double>::infinity(), "z", "-inf"},  // z coerces finite values only
      {0.1234, ".600",
       "0.12339999999999999580335696691690827719867229461669921875"},  // a long precision is valid
                                                                       // Python
      {1234567.891, ",.2f", "1,234,567.89"},
      {1234567.891, "_.2f", "1_234_567.89"},
      {1234.5, "010,.1f", "0,001,234.5"},
      {1234.5, "012,.1f", "00,001,234.5"},
      {-1234.5, "010,.1f", "-001,234.5"},
      {1234.5, ",", "1,234.5"},
      {kInf, "", "inf"},
      {-kInf, ".2f", "-inf"},
      {kNaN, "F", "NAN"},
      {kInf, "08f", "00000inf"},
      {kInf, "%", "inf%"},
      {kNaN, "+", "+nan"},
      {0.25, "n", "0.25"},
  };
  for (const auto& c : cases) {
    INFO("format(" << c.value << ", '" << c.spec << "')");
    CHECK(python_format(c.value, c.spec) == c.python);
  }
}

TEST_CASE("python_format formats an integer as Python's format(value, spec)", "[base][format]") {
  const FormatCase<int64_t> cases[] = {
      {3, "", "3"},
      {3, "03d", "003"},
      {3, ".2f", "3.00"},
      {0, ".3f", "0.000"},
      {3, "%", "300.000000%"},
      {-42, "05d", "-0042"},
      {42, "+d", "+42"},
      {255, "x", "ff"},
      {255, "#010x", "0x000000ff"},
      {255, "X", "FF"},
      {5, "b", "101"},
      {8, "#o", "0o10"},
      {1234567, ",", "1,234,567"},
      {1234567, "_", "1_234_567"},
      {11259375, "_x", "ab_cdef"},
      {1234, "08,d", "0,001,234"},
      {7, "^5", "  7  "},
      {3, "e", "3.000000e+00"},
      {INT64_MIN, "", "-9223372036854775808"},
  };
  for (const auto& c : cases) {
    INFO("format(" << c.value << ", '" << c.spec << "')");
    CHECK(python_format(c.value, c.spec) == c.python);
  }
}

TEST_CASE("python_format refuses what Python refuses, with Python's message", "[base][format]") {
  CHECK_THROWS_WITH(python_format(0.5, "d"),
                    Contains("Unknown format code 'd' for object of type 'float'"));
  CHECK_THROWS_WITH(python_format(0.5, ">>x"),
                    Contains("Unknown format code 'x' for object of type 'float'"));
  CHECK_THROWS_WITH(python_format(0.5, "."), Contains("Format specifier missing precision"));
  CHECK_THROWS_WITH(python_format(0.5, ".2ff"),
                    Contains("Invalid format specifier '.2ff' for object of type 'float'"));
  CHECK_THROWS_WITH(python_format(int64_t{3}, ".2"),
                    Contains("Precision not allowed in integer format specifier"));
  CHECK_THROWS_WITH(python_format(int64_t{3}, "z"),
                    Contains("Negative zero coercion (z) not allowed in integer format specifier"));
  CHECK_THROWS_WITH(python_format(int64_t{255}, ",x"), Contains("Cannot specify ',' with 'x'."));
  CHECK_THROWS_AS(python_format(0.5, "q"), std::invalid_argument);
}
