#pragma once
/// Metrics: metric name -> value, the values logged, monitored and recorded everywhere.

#include <map>
#include <string>

namespace trainbus {

/// Ordered by name, so that logs and recordings are stable.
using Metrics = std::map<std::string, double>;

}  // namespace trainbus
