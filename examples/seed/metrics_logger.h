#pragma once
// The guide's "simple logging callback": keeps and prints callback_metrics after each validation.

#include <ostream>
#include <vector>

#include "core/callback.h"
#include "events/common.h"

namespace trainbus::examples {

class MetricsLogger : public Callback {
 public:
  explicit MetricsLogger(std::ostream& out) : out_(out) {}

  void on_validation_end(Trainer& trainer, Module& module) override;

  /// One copy of trainer.callback_metrics per validation run (the sanity check included).
  std::vector<Metrics> metrics;

 private:
  std::ostream& out_;
};

}  // namespace trainbus::examples
