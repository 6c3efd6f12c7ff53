#pragma once
// The benchmarks' model and data: the main job's MLP on Fashion-MNIST, timing each step.

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include <torch/nn/modules/container/sequential.h>

#include "bench/stats.h"
#include "core/module.h"
#include "data/data_loader.h"

namespace trainbus::bench {

using Clock = std::chrono::steady_clock;

/// MLP 784-256-128-10 with dropout 0.2 and Adam(1e-3); records when each training step starts
/// and each step's loss.
class BenchMlp : public Module {
 public:
  BenchMlp();
  at::Tensor loss_of(const Batch& batch);
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override;
  OptimizerConfig configure_optimizers() override;

  /// Median time between the starts of consecutive steps, in microseconds.
  double median_step_us() const;
  /// Mean of the same: from the start of step `skip_first` (after a warm-up) to the last's, over
  /// the steps between. Unlike the median it counts work that lands on a few steps only (a
  /// periodic hand-over, a flush).
  double mean_step_us(size_t skip_first = 0) const;

  torch::nn::Sequential net{nullptr};
  /// Logs train_loss and train_acc per step and epoch, on the progress bar, as the main job does.
  bool log_metrics = false;
  std::vector<Clock::time_point> step_starts;
  std::vector<double> losses;
};

/// A BenchMlp with the weights torch::manual_seed(seed) gives.
std::unique_ptr<BenchMlp> fresh_mlp(uint64_t seed);

/// Fashion-MNIST's 60000 training images, scaled to [0, 1], shuffled with a fixed seed.
std::shared_ptr<DataLoader> fashion_train_loader(int64_t batch_size);

}  // namespace trainbus::bench
