#pragma once
// A logger observer for tests of callbacks that log (LearningRateMonitor, DeviceStatsMonitor).

#include <string>
#include <vector>

#include "events/observer.h"

namespace trainbus::testing {

/// A logger that keeps the rows logged straight to the loggers (read after fit, which drains the
/// observers).
class CapturingLogger : public events::Observer {
 public:
  bool is_logger() const override { return true; }
  std::string name() const override { return "capture"; }
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::MetricsLogged>();
  }
  void on_metrics_logged(const events::MetricsLogged& event) override { logged.push_back(event); }
  std::vector<events::MetricsLogged> logged;
};

}  // namespace trainbus::testing
