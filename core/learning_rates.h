#pragma once
/// The learning rate and momentum of each optimizer param group, under Lightning's
/// LearningRateMonitor names, for the AfterOptimizerStep event (and so the recording).

#include <memory>
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

}  // namespace trainbus
