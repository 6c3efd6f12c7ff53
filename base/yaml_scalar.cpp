#include "base/yaml_scalar.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <regex>
#include <system_error>

namespace trainbus {

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // The shortest round-trip digits, as Python's repr: d.ddde±X.
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  const std::string scientific(buffer, result.ptr);
  const std::size_t e = scientific.find('e');
  std::string mantissa = scientific.substr(0, e);
  const int exponent = std::atoi(scientific.c_str() + e + 1);
  const bool negative = !mantissa.empty() && mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa)
    if (c != '.') digits += c;
  // Python's repr switches to exponent form when the decimal point would sit before the 4th
  // leading zero or after the 16th digit (float_repr_style 'short', mode 'r').
  const int point = exponent + 1;
  std::string text = negative ? "-" : "";
  if (point <= -4 || point > 16) {
    text += digits.substr(0, 1);
    if (digits.size() > 1) text += "." + digits.substr(1);
    const int magnitude = std::abs(exponent);
    text += std::string("e") + (exponent < 0 ? "-" : "+") + (magnitude < 10 ? "0" : "") +
            std::to_string(magnitude);
  } else if (point <= 0) {
    text += "0." + std::string(static_cast<std::size_t>(-point), '0') + digits;
  } else if (static_cast<std::size_t>(point) >= digits.size()) {
    text += digits + std::string(static_cast<std::size_t>(point) - digits.size(), '0') + ".0";
  } else {
    text += digits.substr(0, static_cast<std::size_t>(point)) + "." +
            digits.substr(static_cast<std::size_t>(point));
  }
  return text;
}

std::string yaml_float(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  // PyYAML's represent_float: repr(), with ".0" added to an exponent form without a '.', so that
  // YAML 1.1 reads a float.
  std::string text = python_float_repr(value);
  const std::size_t e = text.find('e');
  if (e != std::string::npos && text.find('.') == std::string::npos) text.insert(e, ".0");
  return text;
}

std::string yaml_quoted(std::string_view text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') quoted += '\'';
    quoted += c;
  }
  return quoted + "'";
}

std::string yaml_key(std::string_view key) {
  static const std::regex simple(R"([A-Za-z_][A-Za-z0-9_./-]*)");
  const std::string text(key);
  if (std::regex_match(text, simple) && !is_typed_yaml_scalar(text)) return text;
  return yaml_quoted(key);
}

bool is_typed_yaml_scalar(std::string_view text) {
  // PyYAML's implicit resolvers (YAML 1.1) for the types hparams hold, and quoted strings.
  static const std::regex typed(
      R"([-+]?(0|[1-9][0-9_]*))"                               // int
      R"(|[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?)"     // float
      R"(|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))"               // inf, nan
      R"(|true|True|TRUE|false|False|FALSE|null|Null|NULL|~)"  // bool, null
      R"(|'([^']|'')*'|\[.*\])");                              // 'string', [a, b]
  const std::string value(text);
  return value != "." && std::regex_match(value, typed);
}

std::string yaml_scalar_or_quoted(std::string_view text) {
  if (is_typed_yaml_scalar(text)) return std::string(text);
  // Recordings made before hparams carried their types hold a float as 1e-04: keep it a float.
  double number = 0;
  const auto parsed = std::from_chars(text.data(), text.data() + text.size(), number);
  if (!text.empty() && parsed.ec == std::errc() && parsed.ptr == text.data() + text.size())
    return yaml_float(number);
  return yaml_quoted(text);
}

}  // namespace trainbus
