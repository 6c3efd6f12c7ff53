#pragma once
// The guide's custom learning-rate finder: an exponential LR sweep recording the loss at each LR.

#include <cstdint>
#include <string>
#include <vector>

#include "core/callback.h"

namespace trainbus::examples {

class LRFinder : public Callback {
 public:
  /// `plot_path`: where on_train_end writes the "lr,loss" table that the guide plots with
  /// matplotlib (empty: write nothing).
  LRFinder(double min_lr = 1e-5, double max_lr = 1e-1, int64_t num_steps = 100,
           std::string plot_path = "lr_finder.csv")
      : min_lr_(min_lr), max_lr_(max_lr), num_steps_(num_steps), plot_path_(std::move(plot_path)) {}

  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput& outputs,
                          const Batch& batch, int64_t batch_idx) override;
  void on_train_end(Trainer& trainer, Module& module) override;

  std::vector<double> lrs;
  std::vector<double> losses;

 private:
  double min_lr_, max_lr_;
  int64_t num_steps_;
  std::string plot_path_;
};

}  // namespace trainbus::examples
