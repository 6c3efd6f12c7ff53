#pragma once
/// Duration: a length of time given as Lightning's Timer and max_time accept it: "DD:HH:MM:SS",
/// a std::chrono duration, or its parts (Lightning's dict of timedelta arguments).

#include <chrono>
#include <string>
#include <string_view>

#include "base/arg.h"

namespace trainbus {

/// The parts of a duration, each counted separately and added up (Python's
/// `timedelta(days=4, hours=2)`): `DurationParts().days(4).hours(2)`.
struct DurationParts {
  TRAINBUS_ARG(double, weeks) = 0;
  TRAINBUS_ARG(double, days) = 0;
  TRAINBUS_ARG(double, hours) = 0;
  TRAINBUS_ARG(double, minutes) = 0;
  TRAINBUS_ARG(double, seconds) = 0;
  TRAINBUS_ARG(double, milliseconds) = 0;
};

/// A non-negative length of time, in seconds.
class Duration {
 public:
  /// "DD:HH:MM:SS" (days any number of digits, then two digits each, as Lightning's Timer):
  /// "00:12:00:00" is 12 hours. Throws MisconfigurationError quoting the text otherwise.
  Duration(const char* text);         // NOLINT(google-explicit-constructor)
  Duration(const std::string& text);  // NOLINT(google-explicit-constructor)
  template <class Rep, class Period>
  Duration(std::chrono::duration<Rep, Period> length)  // NOLINT(google-explicit-constructor)
      : Duration(std::chrono::duration<double>(length).count(), "a std::chrono duration") {}
  Duration(const DurationParts& parts);  // NOLINT(google-explicit-constructor)

  double seconds() const noexcept { return seconds_; }
  /// As Python prints a timedelta of whole seconds: "0:05:00", "1 day, 2:00:00".
  std::string to_string() const;

 private:
  Duration(double seconds, std::string_view what);
  double seconds_;
};

/// As Python prints timedelta(seconds=int(seconds)): "H:MM:SS", "N day(s), H:MM:SS".
std::string format_elapsed(double seconds);

}  // namespace trainbus
