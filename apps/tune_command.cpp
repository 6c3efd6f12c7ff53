#include "apps/tune_command.h"

#include <filesystem>
#include <fstream>

#include <torch/utils.h>
#include <CLI/CLI.hpp>

#include "apps/fashion_classifier.h"
#include "base/errors.h"
#include "core/trainer_options.h"
#include "tuner/batch_size_scaling.h"
#include "tuner/lr_finder.h"
#include "tuner/out_of_memory.h"

namespace trainbus::apps {

namespace {

CLI::App* add_tune_batch_size(CLI::App& tune, TuneBatchSizeArguments& args) {
  CLI::App* command = tune.add_subcommand(
      "batch-size",
      "Batch size finder on Fashion-MNIST: trials of a few training steps at growing batch sizes "
      "until one runs out of memory (on the CPU: goes past --memory-budget), and the largest "
      "that fits");
  command->add_option("--model", args.model, "mlp or cnn, as trainbus fit")->capture_default_str();
  command->add_option("--seed", args.seed, "Seed of weights, data order and dropout")
      ->capture_default_str();
  command->add_option("--data", args.data, "Fashion-MNIST directory")->capture_default_str();
  command->add_option("--val-size", args.val_size, "Training images held out for validation")
      ->capture_default_str();
  command->add_option("--mode", args.mode, "power (double until out of memory) or binsearch")
      ->check(CLI::IsMember({"power", "binsearch"}))
      ->capture_default_str();
  command->add_option("--steps-per-trial", args.steps_per_trial, "Training steps of each trial")
      ->capture_default_str();
  command->add_option("--init-val", args.init_val, "First batch size tried")->capture_default_str();
  command
      ->add_option("--max-trials", args.max_trials,
                   "Trials (power) or successful trials (binsearch) at most")
      ->capture_default_str();
  command->add_option("--margin", args.margin, "binsearch: lower the size found by this fraction")
      ->capture_default_str();
  command->add_option("--max-val", args.max_val, "Largest batch size tried")->capture_default_str();
  command
      ->add_option("--memory-budget", args.memory_budget,
                   "CPU memory a trial may allocate on the training thread (bytes, 256MiB, "
                   "1GiB); none: only a real out-of-memory error counts")
      ->capture_default_str();
  return command;
}

}  // namespace

TuneCommand add_tune_command(CLI::App& app, TuneLrArguments& args,
                             TuneBatchSizeArguments& batch_size_args) {
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
  return {lr, add_tune_batch_size(*tune, batch_size_args)};
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

void run_tune_batch_size(const TuneBatchSizeArguments& args, std::ostream& out) {
  tuner::BatchSizeFinderOptions finder;
  finder.mode(tuner::parse_batch_size_mode(args.mode))
      .steps_per_trial(args.steps_per_trial)
      .init_val(args.init_val)
      .max_trials(args.max_trials)
      .margin(args.margin)
      .max_val(args.max_val);
  if (args.memory_budget != "none") {
    finder.memory_budget(tuner::parse_byte_size(args.memory_budget, "--memory-budget"));
  }
  tuner::check_batch_size_finder_options(finder);
  ClassifierOptions model_options;
  model_options.architecture = parse_architecture(args.model);
  data::FashionMnistDataModule data(
      data::FashionMnistOptions().root(args.data).val_size(args.val_size));
  torch::manual_seed(args.seed);
  FashionClassifier model(model_options);

  out << "trainbus tune batch-size: " << args.model << " on Fashion-MNIST (" << args.data
      << "), mode " << args.mode << ", " << args.steps_per_trial
      << " steps per trial from batch size " << args.init_val << ", memory budget "
      << (finder.memory_budget() ? tuner::format_bytes(*finder.memory_budget()) : "none")
      << std::endl;
  const tuner::BatchSizeResult result =
      tuner::scale_batch_size(TrainerOptions().seed(args.seed), model, data, finder);
  out << result.table();
  out << "suggested batch size: " << result.batch_size;
  if (result.batch_size != result.largest_fitting) {
    out << " (the largest that fits, " << result.largest_fitting << ", less the margin "
        << args.margin << ")";
  }
  out << "\ntrain with it: trainbus fit --batch-size " << result.batch_size << std::endl;
}

}  // namespace trainbus::apps
