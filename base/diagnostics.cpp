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

}  // namespace trainbus
