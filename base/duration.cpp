#include "base/duration.h"

#include <cmath>
#include <cstdio>
#include <regex>

#include "base/errors.h"

namespace trainbus {

Duration::Duration(double seconds, std::string_view what) : seconds_(seconds) {
  TRAINBUS_CHECK(std::isfinite(seconds) && seconds >= 0, "a duration must be >= 0 seconds; ", what,
                 " gave ", seconds, " s");
}

Duration::Duration(const char* text) : Duration(std::string(text)) {}

Duration::Duration(const std::string& text) : seconds_(0) {
  static const std::regex days_hours_minutes_seconds(R"((\d+):(\d\d):(\d\d):(\d\d))");
  std::smatch match;
  const std::string trimmed = [&] {
    const auto first = text.find_first_not_of(" \t\n\r\f\v");
    const auto last = text.find_last_not_of(" \t\n\r\f\v");
    return first == std::string::npos ? std::string() : text.substr(first, last - first + 1);
  }();
  TRAINBUS_CHECK(std::regex_match(trimmed, match, days_hours_minutes_seconds), "the duration '",
                 text,
                 "' is not in the format DD:HH:MM:SS (days, hours, minutes, seconds), "
                 "e.g. 00:12:00:00 for 12 hours");
  try {
    seconds_ = std::stod(match[1]) * 86400 + std::stod(match[2]) * 3600 + std::stod(match[3]) * 60 +
               std::stod(match[4]);
  } catch (const std::out_of_range&) {
    seconds_ = HUGE_VAL;
  }
  TRAINBUS_CHECK(std::isfinite(seconds_), "the duration '", text, "' is too long");
}

Duration::Duration(const DurationParts& parts)
    : Duration(parts.weeks() * 7 * 86400 + parts.days() * 86400 + parts.hours() * 3600 +
                   parts.minutes() * 60 + parts.seconds() + parts.milliseconds() / 1000,
               "DurationParts") {}

std::string Duration::to_string() const { return format_elapsed(seconds_); }

std::string format_elapsed(double seconds) {
  if (!(seconds >= 0 && seconds < 1e15)) return std::to_string(seconds) + " s";
  const auto whole = static_cast<long long>(seconds);
  const long long days = whole / 86400;
  const long long rest = whole % 86400;
  char clock[32];
  std::snprintf(clock, sizeof clock, "%lld:%02lld:%02lld", rest / 3600, rest % 3600 / 60,
                rest % 60);
  if (days == 0) return clock;
  return std::to_string(days) + (days == 1 ? " day, " : " days, ") + clock;
}

}  // namespace trainbus
