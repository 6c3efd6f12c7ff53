#include "examples/seed/metrics_logger.h"

#include "core/trainer.h"

namespace trainbus::examples {

void MetricsLogger::on_validation_end(Trainer& trainer, Module& module) {
  // Access logged metrics
  const Metrics& current = trainer.callback_metrics();
  metrics.push_back(current);
  out_ << "Validation metrics: {";
  const char* separator = "";
  for (const auto& [name, value] : current) {
    out_ << separator << '\'' << name << "': " << value;
    separator = ", ";
  }
  out_ << "}\n";
}

}  // namespace trainbus::examples
