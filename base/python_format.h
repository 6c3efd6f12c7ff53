#pragma once
/// Python's format(value, spec) for numbers, as Lightning's ModelCheckpoint formats a filename
/// template such as "{epoch:03d}-{val_acc:.1%}" (str.format on the metric tensors, whose
/// __format__ is float.__format__ or int.__format__ of their item()).

#include <cstdint>
#include <string>
#include <string_view>

namespace trainbus {

/// float.__format__: the spec `[[fill]align][sign][z][#][0][width][,|_][.precision][type]` with
/// the types e E f F g G n % or none (no spec at all gives repr(value): the shortest text that
/// reads back as the same double, "0.1", "12.0", "1e-05"). Throws std::invalid_argument with
/// Python's message for a spec Python refuses (e.g. "Unknown format code 'd' for object of type
/// 'float'").
std::string python_format(double value, std::string_view spec);

/// int.__format__: the same spec with the types d n b o x X (no precision) or a float type, which
/// formats float(value). Throws std::invalid_argument as python_format(double, ...).
std::string python_format(int64_t value, std::string_view spec);

}  // namespace trainbus
