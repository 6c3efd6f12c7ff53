#include "examples/seed/lr_finder.h"

#include <cmath>
#include <fstream>

#include "core/trainer.h"

namespace trainbus::examples {

void LRFinder::on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                                  const Batch& batch, int64_t batch_idx) {
  if (batch_idx >= num_steps_) {
    trainer.request_stop("LRFinder: swept " + std::to_string(num_steps_) + " steps");
    return;
  }
  // Exponential LR schedule
  const double lr =
      min_lr_ * std::pow(max_lr_ / min_lr_, static_cast<double>(batch_idx) / num_steps_);
  torch::optim::Optimizer& optimizer = *trainer.optimizers()[0];
  for (auto& param_group : optimizer.param_groups()) param_group.options().set_lr(lr);

  lrs.push_back(lr);
  losses.push_back(outputs.at("loss").item<double>());
}

void LRFinder::on_train_end(Trainer& trainer, Module& module) {
  // The guide plots LR vs loss with matplotlib; in C++ we write the table to plot.
  if (plot_path_.empty()) return;
  std::ofstream table(plot_path_);
  table << "lr,loss\n";
  for (size_t i = 0; i < lrs.size(); ++i) table << lrs[i] << ',' << losses[i] << '\n';
}

}  // namespace trainbus::examples
