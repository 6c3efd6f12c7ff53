#include "base/yaml_scalar.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <regex>
#include <system_error>

#include "base/python_format.h"

namespace trainbus {

std::string yaml_float(double value) {
  if (std::isnan(value)) return ".nan";
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  // PyYAML's represent_float: repr(), with ".0" added to an exponent form without a '.', so that
  // YAML 1.1 reads a float.
  std::string text = python_format(value, "");  // repr()
  const std::size_t e = text.find('e');
  if (e != std::string::npos && text.find('.') == std::string::npos) text.insert(e, ".0");
  return text;
}

std::string yaml_quoted(std::string_view text) {
  const bool has_control = std::any_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
  if (has_control) {
    // Single quotes cannot carry a newline or a control character: double quotes with escapes,
    // as PyYAML writes such a string.
    std::string quoted = "\"";
    for (char c : text) {
      const auto byte = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        quoted += '\\';
        quoted += c;
      } else if (c == '\n') {
        quoted += "\\n";
      } else if (c == '\t') {
        quoted += "\\t";
      } else if (byte < 0x20 || byte == 0x7f) {
        static const char* digits = "0123456789abcdef";
        quoted += "\\x";
        quoted += digits[byte >> 4];
        quoted += digits[byte & 15];
      } else {
        quoted += c;
      }
    }
    return quoted + "\"";
  }
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
  // YAML 1.1 (PyYAML) also reads yes/no/on/off as booleans.
  static const std::regex yaml11_bool(R"(yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF|y|Y|n|N)");
  if (std::regex_match(text, simple) && !is_typed_yaml_scalar(text) &&
      !std::regex_match(text, yaml11_bool))
    return text;
  return yaml_quoted(key);
}

bool is_typed_yaml_scalar(std::string_view text) {
  // PyYAML's implicit resolvers (YAML 1.1) for the types hparams hold, and quoted strings.
  static const std::regex typed(
      R"([-+]?(0|[1-9][0-9_]*))"                               // int
      R"(|[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?)"     // float
      R"(|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))"               // inf, nan
      R"(|true|True|TRUE|false|False|FALSE|null|Null|NULL|~)"  // bool, null
      R"(|'([^']|'')*'|"([^"\\]|\\.)*"|\[.*\])");              // 'string', [a, b]
  const std::string value(text);
  return value != "." && std::regex_match(value, typed);
}

std::string yaml_scalar_or_quoted(std::string_view text) {
  if (is_typed_yaml_scalar(text)) return std::string(text);
  // Recordings made before hparams carried their types hold a float as 1e-04: keep it a float.
  if (text.empty() || std::isalpha(static_cast<unsigned char>(text[0])))
    return yaml_quoted(text);  // "nan", "inf": text, not the floats from_chars would read
  double number = 0;
  const auto parsed = std::from_chars(text.data(), text.data() + text.size(), number);
  if (!text.empty() && parsed.ec == std::errc() && parsed.ptr == text.data() + text.size())
    return yaml_float(number);
  return yaml_quoted(text);
}

}  // namespace trainbus
