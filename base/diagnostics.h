#pragma once
/// Warnings and information trainbus prints for the user (Lightning's rank_zero_warn/info).

#include <string>

namespace trainbus {

/// Prints "trainbus: warning: <message>" to stderr. Never throws (also called on error paths).
void warn(const std::string& message) noexcept;
/// Prints "trainbus: <message>" to stderr, where it does not mix with a program's own output.
void info(const std::string& message) noexcept;

}  // namespace trainbus
