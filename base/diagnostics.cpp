#include "base/diagnostics.h"

#include <iostream>

namespace trainbus {

void warn(const std::string& message) noexcept {
  try {
    std::cerr << "trainbus: warning: " << message << '\n';
  } catch (...) {
  }
}

void info(const std::string& message) noexcept {
  try {
    std::cerr << "trainbus: " << message << '\n';
  } catch (...) {
  }
}

std::string describe_exception(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception (not derived from std::exception)";
  }
}

}  // namespace trainbus
