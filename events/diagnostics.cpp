#include "events/diagnostics.h"

#include <iostream>

namespace trainbus {

void warn(const std::string& message) { std::cerr << "trainbus: warning: " << message << '\n'; }

void info(const std::string& message) { std::cerr << "trainbus: " << message << '\n'; }

}  // namespace trainbus
