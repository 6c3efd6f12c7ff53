// What the Trainer costs per training step, against a hand-written LibTorch loop, in one run:
//   (a) a hand-written loop: zero_grad, forward, cross-entropy, backward, Adam step;
//   (b) the same module in Trainer::fit with no callbacks;
//   (c) the same with 10 callbacks overriding every hook with an empty body.
// Same MLP (784-256-128-10, dropout 0.2), same initial weights, same Fashion-MNIST batches in the
// same order. A step's time is the time between the starts of consecutive steps, so everything
// the framework does between two steps counts. Each repetition runs (a), (b), (c) in a rotated
// order; the table quotes the median over repetitions of each run's median step, and the median
// of the per-repetition ratios to (a). The losses of (a) and (b) must be identical step by step.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <vector>

#include <CLI/CLI.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>

#include "bench/no_op_callback.h"
#include "core/fashion_mnist.h"
#include "core/trainer.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace trainbus;

/// The main job's MLP; records when each step starts and each step's loss.
class BenchMlp : public Module {
 public:
  BenchMlp() {
    namespace nn = torch::nn;
    net = register_module("net", nn::Sequential(nn::Flatten(), nn::Linear(784, 256), nn::ReLU(), nn::Dropout(0.2),
                                                nn::Linear(256, 128), nn::ReLU(), nn::Dropout(0.2),
                                                nn::Linear(128, 10)));
  }
  at::Tensor loss_of(const Batch& batch) {
    return torch::nn::functional::cross_entropy(net->forward(batch.data), batch.target);
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    step_starts.push_back(Clock::now());
    at::Tensor loss = loss_of(batch);
    losses.push_back(loss.item<double>());
    return loss;
  }
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::Adam>(parameters(), torch::optim::AdamOptions(1e-3));
  }

  torch::nn::Sequential net{nullptr};
  std::vector<Clock::time_point> step_starts;
  std::vector<double> losses;
};

struct RunResult {
  double median_step_us;
  std::vector<double> losses;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

RunResult summarize(const BenchMlp& module) {
  std::vector<double> steps;
  for (size_t i = 1; i < module.step_starts.size(); ++i) {
    steps.push_back(std::chrono::duration<double, std::micro>(module.step_starts[i] - module.step_starts[i - 1]).count());
  }
  return {median(steps), module.losses};
}

std::unique_ptr<BenchMlp> fresh_module(uint64_t seed) {
  torch::manual_seed(seed);
  return std::make_unique<BenchMlp>();
}

RunResult run_hand_written(const std::shared_ptr<DataLoader>& loader, int64_t steps, uint64_t seed) {
  auto module = fresh_module(seed);
  module->train();
  torch::optim::Adam optimizer(module->parameters(), torch::optim::AdamOptions(1e-3));
  loader->set_epoch(0);
  for (int64_t i = 0; i < steps; ++i) {
    const Batch batch = loader->batch(i);
    module->step_starts.push_back(Clock::now());
    optimizer.zero_grad();
    at::Tensor loss = module->loss_of(batch);
    module->losses.push_back(loss.item<double>());
    loss.backward();
    optimizer.step();
  }
  return summarize(*module);
}

RunResult run_trainer(const std::shared_ptr<DataLoader>& loader, int64_t steps, uint64_t seed, int callbacks) {
  auto module = fresh_module(seed);
  TrainerOptions options;
  options.max_epochs = 1;
  options.limit_train_batches = steps;
  options.num_sanity_val_steps = 0;
  std::vector<std::shared_ptr<Callback>> no_ops;
  for (int i = 0; i < callbacks; ++i) no_ops.push_back(std::make_shared<bench::NoOpCallback>());
  Trainer trainer(options, no_ops);
  LoaderDataModule data(loader);
  trainer.fit(*module, data);
  return summarize(*module);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trainbus benchmark: Trainer overhead per step against a hand-written LibTorch loop"};
  int64_t steps = 400;
  int reps = 5;
  int64_t batch_size = 64;
  uint64_t seed = 0;
  app.add_option("--steps", steps, "Training steps per run")->check(CLI::Range(int64_t{10}, int64_t{800}));
  app.add_option("--reps", reps, "Repetitions of (a), (b), (c)")->check(CLI::Range(1, 100));
  app.add_option("--batch-size", batch_size, "Batch size")->check(CLI::Range(int64_t{1}, int64_t{1024}));
  CLI11_PARSE(app, argc, argv);

  const FashionMnistSplit train = read_fashion_mnist(kFashionMnistDir, true);
  auto loader = std::make_shared<TensorDataLoader>(
      train.images.to(at::kFloat).div(255.0), train.labels, DataLoaderOptions{batch_size, true, false, 1234});
  steps = std::min(steps, loader->num_batches());

  run_hand_written(loader, 50, seed);  // warm-up: allocator, BLAS threads, page faults
  std::vector<double> a_us, b_us, c_us, b_ratio, c_ratio;
  bool identical = true;
  for (int rep = 0; rep < reps; ++rep) {
    RunResult a, b, c;
    for (int k = 0; k < 3; ++k) {
      switch ((rep + k) % 3) {
        case 0:
          a = run_hand_written(loader, steps, seed);
          break;
        case 1:
          b = run_trainer(loader, steps, seed, 0);
          break;
        default:
          c = run_trainer(loader, steps, seed, 10);
          break;
      }
    }
    identical = identical && a.losses == b.losses && a.losses == c.losses;
    a_us.push_back(a.median_step_us);
    b_us.push_back(b.median_step_us);
    c_us.push_back(c.median_step_us);
    b_ratio.push_back(b.median_step_us / a.median_step_us);
    c_ratio.push_back(c.median_step_us / a.median_step_us);
    std::fprintf(stderr, "rep %d: a %.1f us, b %.1f us, c %.1f us\n", rep + 1, a.median_step_us, b.median_step_us,
                 c.median_step_us);
  }

  std::printf("Trainer overhead per step: MLP 784-256-128-10, batch %lld, %lld steps x %d repetitions\n\n",
              static_cast<long long>(batch_size), static_cast<long long>(steps), reps);
  std::printf("| run | median step (us) | ratio to (a), median | goal |\n|---|---:|---:|---|\n");
  std::printf("| (a) hand-written LibTorch loop | %.1f | 1.000 | |\n", median(a_us));
  std::printf("| (b) Trainer, no callbacks | %.1f | %.3f | <= 1.02 |\n", median(b_us), median(b_ratio));
  std::printf("| (c) Trainer, 10 no-op callbacks on every hook | %.1f | %.3f | <= 1.05 |\n\n", median(c_us),
              median(c_ratio));
  std::printf("losses of (a), (b) and (c) identical step by step: %s\n", identical ? "yes" : "NO");
  return identical ? 0 : 1;
}
