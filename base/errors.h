#pragma once
/// Error types and TRAINBUS_CHECK, the one-line precondition check used at every entry point.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace trainbus {

/// A bad option, flag or combination of them, detected at setup (Lightning's
/// MisconfigurationException).
class MisconfigurationError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A file that is missing, truncated or not what it claims to be. The message names the file.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A checkpoint that cannot be written or read. The message names the file, the part and the
/// problem.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}

}  // namespace detail
}  // namespace trainbus

/// Throws `Error` (a trainbus or std exception type) with the parts streamed together when `cond`
/// is false. The message should say what was expected, what was seen and how to fix it.
#define TRAINBUS_CHECK_AS(Error, cond, ...)                            \
  do {                                                                 \
    if (!(cond)) throw Error(::trainbus::detail::concat(__VA_ARGS__)); \
  } while (false)

/// TRAINBUS_CHECK_AS with MisconfigurationError, for options and arguments.
#define TRAINBUS_CHECK(cond, ...) \
  TRAINBUS_CHECK_AS(::trainbus::MisconfigurationError, cond, __VA_ARGS__)
