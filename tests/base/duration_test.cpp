// Duration: the lengths of time Lightning's Timer and max_time accept, and how an elapsed time
// prints.
#include "base/duration.h"

#include <chrono>
#include <string>

#include <catch2/catch.hpp>

#include "base/errors.h"

using namespace trainbus;
using Catch::Matchers::Contains;

TEST_CASE("Duration takes Lightning's DD:HH:MM:SS, chrono durations and parts",
          "[base][duration]") {
  CHECK(Duration("00:12:00:00").seconds() == 12 * 3600);
  CHECK(Duration(" 1:02:03:04 ").seconds() == 86400 + 2 * 3600 + 3 * 60 + 4);
  CHECK(Duration("123:00:00:01").seconds() == 123 * 86400 + 1);
  CHECK(Duration(std::chrono::minutes(90)).seconds() == 5400);
  CHECK(Duration(std::chrono::milliseconds(1500)).seconds() == 1.5);
  CHECK(Duration(DurationParts().weeks(4).days(2)).seconds() == 30 * 86400);
  CHECK(Duration(DurationParts().hours(1).minutes(30).milliseconds(250)).seconds() == 5400.25);

  for (const char* bad : {"12:00", "00:12:00", "1:2:3:4", "00:12:00:00:00", "a day", ""}) {
    INFO(bad);
    CHECK_THROWS_WITH(Duration(bad),
                      Contains("'" + std::string(bad) + "'") && Contains("DD:HH:MM:SS"));
  }
  CHECK_THROWS_WITH(Duration(std::chrono::seconds(-1)), Contains(">= 0"));
}

TEST_CASE("Elapsed times print as Python prints a timedelta", "[base][duration]") {
  CHECK(format_elapsed(5.9) == "0:00:05");
  CHECK(format_elapsed(3600 + 61) == "1:01:01");
  CHECK(format_elapsed(86400 + 3661) == "1 day, 1:01:01");
  CHECK(format_elapsed(3 * 86400) == "3 days, 0:00:00");
}

TEST_CASE("Duration refuses what cannot be a length of time", "[base][duration]") {
  CHECK_THROWS_AS(Duration(std::string(400, '9') + ":00:00:00"), MisconfigurationError);
  CHECK_THROWS_WITH(Duration(std::string(400, '9') + ":00:00:00"), Contains("too long"));
  CHECK(Duration("\t00:00:01:00\n").seconds() == 60);
  CHECK(format_elapsed(-1) == "-1.000000 s");
}
