#include "bench/bench_mlp.h"

#include <algorithm>
#include <limits>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>

#include "data/fashion_mnist.h"

namespace trainbus::bench {

BenchMlp::BenchMlp() {
  namespace nn = torch::nn;
  net = register_module("net", nn::Sequential(nn::Flatten(), nn::Linear(784, 256), nn::ReLU(),
                                              nn::Dropout(0.2), nn::Linear(256, 128), nn::ReLU(),
                                              nn::Dropout(0.2), nn::Linear(128, 10)));
}

at::Tensor BenchMlp::loss_of(const Batch& batch) {
  return torch::nn::functional::cross_entropy(net->forward(batch.data), batch.target);
}

StepOutput BenchMlp::training_step(const Batch& batch, int64_t) {
  step_starts.push_back(Clock::now());
  if (!log_metrics) {
    at::Tensor loss = loss_of(batch);
    losses.push_back(loss.item<double>());
    return loss;
  }
  // The same loss (same ops, same dropout draws), with the main job's two logged metrics.
  const at::Tensor logits = net->forward(batch.data);
  at::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.target);
  losses.push_back(loss.item<double>());
  const LogOptions options = LogOptions().on_step(true).on_epoch(true).prog_bar(true);
  log("train_loss", losses.back(), options);
  log("train_acc", (logits.argmax(1) == batch.target).to(at::kFloat).mean(), options);
  return loss;
}

OptimizerConfig BenchMlp::configure_optimizers() {
  return std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-3));
}

double BenchMlp::median_step_us() const {
  std::vector<double> steps;
  for (size_t i = 1; i < step_starts.size(); ++i) {
    steps.push_back(
        std::chrono::duration<double, std::micro>(step_starts[i] - step_starts[i - 1]).count());
  }
  return median(steps);
}

double BenchMlp::mean_step_us(size_t skip_first) const {
  if (step_starts.size() < skip_first + 2) return std::numeric_limits<double>::quiet_NaN();
  return std::chrono::duration<double, std::micro>(step_starts.back() - step_starts[skip_first])
             .count() /
         static_cast<double>(step_starts.size() - 1 - skip_first);
}

std::unique_ptr<BenchMlp> fresh_mlp(uint64_t seed) {
  torch::manual_seed(seed);
  return std::make_unique<BenchMlp>();
}

std::shared_ptr<DataLoader> fashion_train_loader(int64_t batch_size) {
  const data::FashionMnistSplit train = data::read_fashion_mnist(data::kFashionMnistDir, true);
  return std::make_shared<data::TensorDataLoader>(
      train.images.to(at::kFloat).div(255.0), train.labels,
      data::DataLoaderOptions().batch_size(batch_size).shuffle(true).drop_last(false).seed(1234));
}

}  // namespace trainbus::bench
