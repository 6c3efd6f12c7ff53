#pragma once
/// Warnings and information trainbus prints for the user (Lightning's rank_zero_warn/info).

#include <exception>
#include <string>

namespace trainbus {

/// Prints "trainbus: warning: <message>" to stderr. Never throws (also called on error paths).
void warn(const std::string& message) noexcept;
/// Prints "trainbus: <message>" to stderr, where it does not mix with a program's own output.
void info(const std::string& message) noexcept;
/// The message of an exception caught on another thread (its what(), or a note that it has none),
/// for errors reported where it was raised: an observer's hook, a background save.
std::string describe_exception(const std::exception_ptr& error);

}  // namespace trainbus
