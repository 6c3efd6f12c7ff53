#pragma once
/// `trainbus tune lr`: the learning rate range test (tuner::lr_find) on Fashion-MNIST.

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

/// Adds `tune` and its `lr` subcommand to `app`; returns `tune lr`.
CLI::App* add_tune_command(CLI::App& app, TuneLrArguments& args);

/// Runs the range test, writes lr_find.svg and lr_find.txt into `out` and prints the suggestion.
void run_tune_lr(const TuneLrArguments& args, std::ostream& out);

}  // namespace trainbus::apps
