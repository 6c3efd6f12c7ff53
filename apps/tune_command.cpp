#include "apps/tune_command.h"

#include <filesystem>
#include <fstream>

#include <torch/utils.h>
#include <CLI/CLI.hpp>

#include "apps/fashion_classifier.h"
#include "base/errors.h"
#include "core/trainer_options.h"
#include "tuner/lr_finder.h"

namespace trainbus::apps {

CLI::App* add_tune_command(CLI::App& app, TuneLrArguments& args) {
  CLI::App* tune =
      app.add_subcommand("tune", "Find hyper-parameters before training (Lightning's Tuner)");
  tune->require_subcommand(1);
  CLI::App* lr = tune->add_subcommand(
      "lr",
      "Learning rate range test on Fashion-MNIST: trains num-training steps at growing learning "
      "rates, suggests the one where the loss falls fastest, and writes the plot and the table");
  lr->add_option("--model", args.model, "mlp or cnn, as trainbus fit")->capture_default_str();
  lr->add_option("--batch-size", args.batch_size, "Training batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  lr->add_option("--seed", args.seed, "Seed of weights, data order and dropout")
      ->capture_default_str();
  lr->add_option("--data", args.data, "Fashion-MNIST directory")->capture_default_str();
  lr->add_option("--val-size", args.val_size, "Training images held out for validation")
      ->capture_default_str();
  lr->add_option("--out", args.out, "Directory for lr_find.svg and lr_find.txt")
      ->capture_default_str();
  lr->add_option("--min-lr", args.min_lr, "First learning rate tested")->capture_default_str();
  lr->add_option("--max-lr", args.max_lr, "Last learning rate tested")->capture_default_str();
  lr->add_option("--num-training", args.num_training, "Learning rates tested (optimizer steps)")
      ->capture_default_str();
  lr->add_option("--mode", args.mode, "How the rate grows: exponential or linear")
      ->check(CLI::IsMember({"exponential", "linear"}))
      ->capture_default_str();
  lr->add_option("--early-stop-threshold", args.early_stop_threshold,
                 "Stop once the loss passes this x its best; none: never")
      ->capture_default_str();
  return lr;
}

void run_tune_lr(const TuneLrArguments& args, std::ostream& out) {
  tuner::LRFinderOptions finder;
  finder.min_lr(args.min_lr)
      .max_lr(args.max_lr)
      .num_training(args.num_training)
      .mode(tuner::parse_lr_finder_mode(args.mode));
  if (args.early_stop_threshold == "none") {
    finder.early_stop_threshold(std::nullopt);
  } else {
    try {
      finder.early_stop_threshold(std::stod(args.early_stop_threshold));
    } catch (const std::exception&) {
      throw MisconfigurationError("--early-stop-threshold " + args.early_stop_threshold +
                                  ": expected a number, or none");
    }
  }
  tuner::check_lr_finder_options(finder);
  ClassifierOptions model_options;
  model_options.architecture = parse_architecture(args.model);
  data::FashionMnistDataModule data(data::FashionMnistOptions()
                                        .root(args.data)
                                        .batch_size(args.batch_size)
                                        .val_size(args.val_size));
  torch::manual_seed(args.seed);
  FashionClassifier model(model_options);

  out << "trainbus tune lr: " << args.model << " on Fashion-MNIST (" << args.data
      << "), batch size " << args.batch_size << ", " << args.num_training << " learning rates from "
      << args.min_lr << " to " << args.max_lr << " (" << args.mode << ")" << std::endl;
  const tuner::LRFinder result =
      tuner::lr_find(TrainerOptions().seed(args.seed), model, data, finder);

  std::filesystem::create_directories(args.out);
  const std::string plot = (std::filesystem::path(args.out) / "lr_find.svg").string();
  const std::string table = (std::filesystem::path(args.out) / "lr_find.txt").string();
  result.write_plot(plot);
  std::ofstream(table) << result.table();
  if (static_cast<int64_t>(result.lrs().size()) < args.num_training) {
    out << "stopped early after " << result.lrs().size() << " steps: the loss diverged (more than "
        << args.early_stop_threshold << " x its best)\n";
  }
  if (const auto lr = result.suggestion()) {
    out << "suggested lr: " << *lr << " (step " << *result.optimal_index() << ", smoothed loss "
        << result.losses()[*result.optimal_index()] << ")\n";
    out << "plot:  " << plot << "\ntable: " << table << "\ntrain with it: trainbus fit --lr " << *lr
        << std::endl;
  } else {
    out << "no suggestion: too few finite losses; raise --num-training\nplot:  " << plot
        << "\ntable: " << table << std::endl;
  }
}

}  // namespace trainbus::apps
