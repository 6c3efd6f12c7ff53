#pragma once
/// The learning rate and momentum of each optimizer param group, under Lightning's
/// LearningRateMonitor names, for the AfterOptimizerStep event (and so the recording).

#include <memory>
#include <string>
#include <vector>

#include "base/metrics.h"

namespace torch::optim {
class Optimizer;
}

namespace trainbus {

/// For optimizer `index` of `optimizers`: "lr-Adam" (one param group) or "lr-Adam/pg1",
/// "lr-Adam/pg2", ... (several), each with "<name>-momentum" when the optimizer has a momentum
/// (Adam's and AdamW's beta1, SGD's and RMSprop's momentum). A second optimizer of the same class
/// is "lr-Adam-1", as Lightning names it. A group whose options have no get_lr() (a user's own
/// optimizer) is left out.
Metrics learning_rates(const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers,
                       std::size_t index);

/// What LearningRateMonitor reads of an optimizer.
struct OptimizerStatsOptions {
  bool momentum = true;       ///< "<name>-momentum": beta1 or momentum, 0 for an optimizer without
  bool weight_decay = false;  ///< "<name>-weight_decay", 0 for an optimizer without
  std::string name;           ///< replaces "lr-Adam" (a scheduler config's name), if not empty
};

/// As learning_rates(), with LearningRateMonitor's options: every param group's lr under its name,
/// and its momentum and weight decay when asked (0 where the optimizer has none, as Lightning).
Metrics optimizer_stats(const std::vector<std::shared_ptr<torch::optim::Optimizer>>& optimizers,
                        std::size_t index, const OptimizerStatsOptions& options);

/// Its class as Lightning names it in keys: "Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "LBFGS";
/// "Optimizer" for another.
std::string optimizer_class_name(const torch::optim::Optimizer& optimizer);

/// Whether any param group of the optimizer has a momentum (Adam's beta1, SGD's momentum).
bool has_momentum(const torch::optim::Optimizer& optimizer);

}  // namespace trainbus
