#pragma once
/// `trainbus tune lr` and `trainbus tune batch-size`: the learning rate range test
/// (tuner::lr_find) and the batch size finder (tuner::scale_batch_size) on Fashion-MNIST.

#include <cstdint>
#include <ostream>
#include <string>

#include "data/fashion_mnist.h"

namespace CLI {
class App;
}

namespace trainbus::apps {

/// Everything `trainbus tune lr` takes; the model and data defaults are `trainbus fit`'s.
struct TuneLrArguments {
  std::string model = "mlp";
  int64_t batch_size = 64;
  uint64_t seed = 42;
  std::string data = data::kFashionMnistDir;
  int64_t val_size = 5000;
  std::string out = "trainbus_logs/lr_find";
  double min_lr = 1e-8;
  double max_lr = 1.0;
  int64_t num_training = 100;
  std::string mode = "exponential";
  std::string early_stop_threshold = "4.0";  ///< a number, or "none"
};

/// Everything `trainbus tune batch-size` takes; the model and data defaults are `trainbus fit`'s,
/// the search's Lightning's BatchSizeFinder's.
struct TuneBatchSizeArguments {
  std::string model = "mlp";
  uint64_t seed = 42;
  std::string data = data::kFashionMnistDir;
  int64_t val_size = 5000;
  std::string mode = "power";
  int64_t steps_per_trial = 3;
  int64_t init_val = 2;
  int64_t max_trials = 25;
  double margin = 0.05;
  int64_t max_val = 8192;
  std::string memory_budget = "256MiB";  ///< bytes, 256MiB, 1GiB..., or "none"
};

/// The `tune` subcommands.
struct TuneCommand {
  CLI::App* lr = nullptr;
  CLI::App* batch_size = nullptr;
};

/// Adds `tune` and its `lr` and `batch-size` subcommands to `app`.
TuneCommand add_tune_command(CLI::App& app, TuneLrArguments& lr_args,
                             TuneBatchSizeArguments& batch_size_args);

/// Runs the range test, writes lr_find.svg and lr_find.txt into `out` and prints the suggestion.
void run_tune_lr(const TuneLrArguments& args, std::ostream& out);

/// Runs the batch size finder and prints its trials and the batch size found.
void run_tune_batch_size(const TuneBatchSizeArguments& args, std::ostream& out);

}  // namespace trainbus::apps
