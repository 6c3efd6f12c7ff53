#pragma once
/// YAML scalars that keep their type when PyYAML (and so Lightning's load_hparams_from_yaml) reads
/// them back: hparams.yaml and `trainbus fit --print-config` write values with these.

#include <string>
#include <string_view>

namespace trainbus {

/// A float as PyYAML writes one (its represent_float over Python's repr): the shortest text that
/// reads back to the same double, with a '.' so that YAML 1.1 resolves it as a float: 0.001,
/// 1.0e-05, 1.5e+16, 100.0, .inf, -.inf, .nan.
std::string yaml_float(double value);

/// `text` single-quoted ('it''s'), which every YAML reader takes as a string, whatever it holds.
std::string yaml_quoted(std::string_view text);

/// A mapping key: plain when it is a simple name (letters, digits, '_', '-', '.', '/'), quoted
/// otherwise, so that a key holding ": " or '#' cannot break the file.
std::string yaml_key(std::string_view key);

/// Whether `text` is already a typed YAML 1.1 scalar or flow sequence: a quoted string, an int, a
/// float, true/false, null, or [...].
bool is_typed_yaml_scalar(std::string_view text);

/// `text` as it is when is_typed_yaml_scalar; a number (1e-04, from a recording made before
/// hparams kept their types) as yaml_float; anything else quoted.
std::string yaml_scalar_or_quoted(std::string_view text);

}  // namespace trainbus
