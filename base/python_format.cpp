#include "base/python_format.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace trainbus {
namespace {

// One parsed format spec (Python's "Format Specification Mini-Language").
struct Spec {
  char fill = ' ';
  bool fill_given = false;
  char align = '\0';  // '<', '>', '=', '^'; '\0' for the numbers' default, '>'
  char sign = '-';
  bool coerce_zero = false;  // 'z'
  bool alternate = false;    // '#'
  int width = 0;
  char grouping = '\0';  // ',' or '_'
  int precision = -1;    // none given
  char type = '\0';
};

bool is_align(char c) { return c == '<' || c == '>' || c == '=' || c == '^'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

int read_count(std::string_view text, std::size_t& pos) {
  int count = 0;
  for (; pos < text.size() && is_digit(text[pos]); ++pos) {
    count = count * 10 + (text[pos] - '0');
    if (count > 100000) throw std::invalid_argument("Too many decimal digits in format string");
  }
  return count;
}

// The grammar [[fill]align][sign][z][#][0][width][grouping][.precision][type], as CPython 3.11's
// parse_internal_render_format_spec reads it.
Spec parse(std::string_view text, const char* type_name) {
  Spec spec;
  std::size_t pos = 0;
  if (text.size() >= 2 && is_align(text[1])) {
    spec.fill = text[0];
    spec.fill_given = true;
    spec.align = text[1];
    pos = 2;
  } else if (!text.empty() && is_align(text[0])) {
    spec.align = text[0];
    pos = 1;
  }
  if (pos < text.size() && (text[pos] == '+' || text[pos] == '-' || text[pos] == ' ')) {
    spec.sign = text[pos++];
  }
  if (pos < text.size() && text[pos] == 'z') {
    spec.coerce_zero = true;
    ++pos;
  }
  if (pos < text.size() && text[pos] == '#') {
    spec.alternate = true;
    ++pos;
  }
  // A '0' before the width pads with zeros after the sign, unless a fill or alignment was given.
  if (pos < text.size() && text[pos] == '0' && !spec.fill_given) {
    spec.fill = '0';
    if (spec.align == '\0') spec.align = '=';
    ++pos;
  }
  spec.width = read_count(text, pos);
  if (pos < text.size() && (text[pos] == ',' || text[pos] == '_')) spec.grouping = text[pos++];
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    if (pos == text.size() || !is_digit(text[pos])) {
      throw std::invalid_argument("Format specifier missing precision");
    }
    spec.precision = read_count(text, pos);
  }
  if (text.size() - pos > 1) {
    throw std::invalid_argument("Invalid format specifier '" + std::string(text) +
                                "' for object of type '" + type_name + "'");
  }
  if (pos < text.size()) spec.type = text[pos];
  return spec;
}

[[noreturn]] void unknown_code(char type, const char* type_name) {
  throw std::invalid_argument(std::string("Unknown format code '") + type +
                              "' for object of type '" + type_name + "'");
}

// Separators every `group` digits in the first `run` characters of `body` (its integer digits).
// With zero padding to `min_width`, the zeros are grouped too (CPython's
// _PyUnicode_InsertThousandsGrouping): "0,001,234.5" for format(1234.5, "010,.1f").
std::string group_digits(const std::string& body, std::size_t run, char separator,
                         std::size_t group, std::size_t min_width) {
  std::string digits = body.substr(0, run);
  const std::string rest = body.substr(run);
  auto grouped = [&] {
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
      if (i > 0 && (digits.size() - i) % group == 0) out += separator;
      out += digits[i];
    }
    return out;
  };
  std::string out = grouped();
  while (out.size() + rest.size() < min_width) {
    digits.insert(digits.begin(), '0');
    out = grouped();
  }
  return out + rest;
}

// The width the digits must fill when a spec pads with zeros after the sign, else 0.
std::size_t zero_pad_width(const Spec& spec, std::size_t sign_size) {
  if (spec.fill != '0' || spec.align != '=') return 0;
  const auto width = static_cast<std::size_t>(spec.width);
  return width > sign_size ? width - sign_size : 0;
}

// sign + prefix + body, padded to the spec's width.
std::string pad(const Spec& spec, const std::string& sign, const std::string& body) {
  const std::size_t length = sign.size() + body.size();
  const std::size_t width = static_cast<std::size_t>(spec.width);
  if (length >= width) return sign + body;
  const std::size_t padding = width - length;
  switch (spec.align == '\0' ? '>' : spec.align) {
    case '<':
      return sign + body + std::string(padding, spec.fill);
    case '^':
      return std::string(padding / 2, spec.fill) + sign + body +
             std::string(padding - padding / 2, spec.fill);
    case '=':
      return sign + std::string(padding, spec.fill) + body;
    default:
      return std::string(padding, spec.fill) + sign + body;
  }
}

std::string sign_text(const Spec& spec, bool negative) {
  if (negative) return "-";
  if (spec.sign == '+') return "+";
  if (spec.sign == ' ') return " ";
  return "";
}

// Digits (no leading or trailing zeros, "0" for zero) and the decimal point's position of a
// number printed by "%e" or to_chars(scientific): "1.25e+02" is ("125", 3).
struct Digits {
  std::string digits;
  int decpt = 1;
};

Digits split_scientific(const std::string& text) {
  Digits out;
  const std::size_t e = text.find_first_of("eE");
  for (std::size_t i = 0; i < e; ++i) {
    if (is_digit(text[i])) out.digits += text[i];
  }
  out.decpt = std::atoi(text.c_str() + e + 1) + 1;
  while (out.digits.size() > 1 && out.digits.back() == '0') out.digits.pop_back();
  if (out.digits == "0") out.decpt = 1;
  return out;
}

// CPython's format_float_short layout: "d.ddde+XX" or fixed, with ".0" added to an integral
// fixed result when `add_dot_0`.
std::string layout(const Digits& d, bool use_exp, bool add_dot_0) {
  const std::string& digits = d.digits;
  if (use_exp) {
    std::string out(1, digits[0]);
    if (digits.size() > 1) out += "." + digits.substr(1);
    const int exponent = d.decpt - 1;
    char text[16];
    std::snprintf(text, sizeof text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + text;
  }
  if (d.decpt <= 0) return "0." + std::string(static_cast<std::size_t>(-d.decpt), '0') + digits;
  const auto decpt = static_cast<std::size_t>(d.decpt);
  if (decpt >= digits.size()) {
    return digits + std::string(decpt - digits.size(), '0') + (add_dot_0 ? ".0" : "");
  }
  return digits.substr(0, decpt) + "." + digits.substr(decpt);
}

// repr(x) of a finite non-negative double: the shortest digits that read back as x, in fixed
// notation from 1e-4 up to 1e16.
std::string repr(double magnitude) {
  char text[64];
  const auto end =
      std::to_chars(text, text + sizeof text, magnitude, std::chars_format::scientific).ptr;
  const Digits d = split_scientific(std::string(text, end));
  return layout(d, d.decpt <= -4 || d.decpt > 16, /*add_dot_0=*/true);
}

// The type-less spec with a precision: 'g' with at least one digit after the point in fixed
// notation, and the exponent from 10**(precision-1) on.
std::string general_with_dot_0(double magnitude, int precision) {
  // Sized to the text: a precision of hundreds of digits ({x:.600}) is valid Python.
  const int size = std::snprintf(nullptr, 0, "%.*e", precision - 1, magnitude);
  std::string text(static_cast<std::size_t>(size) + 1, '\0');
  std::snprintf(text.data(), text.size(), "%.*e", precision - 1, magnitude);
  text.pop_back();
  const Digits d = split_scientific(text);
  return layout(d, d.decpt <= -4 || d.decpt > precision - 1, /*add_dot_0=*/true);
}

std::string c_format(char conversion, bool alternate, int precision, double magnitude) {
  const std::string format = std::string("%") + (alternate ? "#" : "") + ".*" + conversion;
  const int size = std::snprintf(nullptr, 0, format.c_str(), precision, magnitude);
  std::string out(static_cast<std::size_t>(size) + 1, '\0');
  std::snprintf(out.data(), out.size(), format.c_str(), precision, magnitude);
  out.pop_back();
  return out;
}

}  // namespace

std::string python_format(double value, std::string_view spec_text) {
  const Spec spec = parse(spec_text, "float");
  const char type = spec.type;
  const bool upper = type == 'E' || type == 'F' || type == 'G';
  const bool percent = type == '%';
  if (type != '\0' && type != 'e' && type != 'E' && type != 'f' && type != 'F' && type != 'g' &&
      type != 'G' && type != 'n' && !percent) {
    unknown_code(type, "float");
  }
  bool negative = std::signbit(value) && !std::isnan(value);
  const double magnitude = std::fabs(value);
  std::string body;
  if (!std::isfinite(value)) {
    body = std::isnan(value) ? "nan" : "inf";
    if (upper) body = std::isnan(value) ? "NAN" : "INF";
  } else if (type == '\0') {
    body = spec.precision < 0 ? repr(magnitude)
                              : general_with_dot_0(magnitude, std::max(spec.precision, 1));
  } else {
    const int precision = spec.precision < 0 ? 6 : spec.precision;
    const char conversion = percent ? 'f' : type == 'n' ? 'g' : type;
    body = c_format(conversion, spec.alternate, precision, percent ? magnitude * 100 : magnitude);
  }
  if (percent) body += '%';
  // 'z': a negative number that rounds to zero prints as zero.
  if (spec.coerce_zero && negative && std::isfinite(value) &&
      body.find_first_of("123456789") == std::string::npos) {
    negative = false;
  }
  const std::string sign = sign_text(spec, negative);
  if (spec.grouping != '\0' && std::isfinite(value)) {
    const std::size_t run = std::min(body.find_first_not_of("0123456789"), body.size());
    body = group_digits(body, run, spec.grouping, 3, zero_pad_width(spec, sign.size()));
  }
  return pad(spec, sign, body);
}

std::string python_format(int64_t value, std::string_view spec_text) {
  const Spec spec = parse(spec_text, "int");
  const char type = spec.type;
  switch (type) {
    case 'e':
    case 'E':
    case 'f':
    case 'F':
    case 'g':
    case 'G':
    case '%':
      return python_format(static_cast<double>(value), spec_text);
    case '\0':
    case 'd':
    case 'n':
    case 'b':
    case 'o':
    case 'x':
    case 'X':
      break;
    case 'c':
      throw std::invalid_argument("format code 'c' (a character) is not supported here");
    default:
      unknown_code(type, "int");
  }
  if (spec.precision >= 0) {
    throw std::invalid_argument("Precision not allowed in integer format specifier");
  }
  if (spec.coerce_zero) {
    throw std::invalid_argument(
        "Negative zero coercion (z) not allowed in integer format specifier");
  }
  const int base = type == 'b' ? 2 : type == 'o' ? 8 : (type == 'x' || type == 'X') ? 16 : 10;
  if (spec.grouping == ',' && base != 10) {
    throw std::invalid_argument(std::string("Cannot specify ',' with '") + type + "'.");
  }
  const bool negative = value < 0;
  uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(value) : static_cast<uint64_t>(value);
  std::string digits;
  const char* symbols = type == 'X' ? "0123456789ABCDEF" : "0123456789abcdef";
  do {
    digits.insert(digits.begin(), symbols[magnitude % static_cast<uint64_t>(base)]);
    magnitude /= static_cast<uint64_t>(base);
  } while (magnitude > 0);
  std::string prefix = sign_text(spec, negative);
  if (spec.alternate && base != 10) prefix += std::string("0") + type;
  if (spec.grouping != '\0') {
    digits = group_digits(digits, digits.size(), spec.grouping, base == 10 ? 3 : 4,
                          zero_pad_width(spec, prefix.size()));
  }
  // The prefix stays beside the sign: zero padding goes between it and the digits.
  return pad(spec, prefix, digits);
}

}  // namespace trainbus
