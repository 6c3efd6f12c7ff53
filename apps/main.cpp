// The `trainbus` command line: a thin program over the public API.
#include <cctype>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/ckpt_command.h"
#include "apps/evaluate_command.h"
#include "apps/fit_command.h"
#include "apps/fit_config.h"
#include "apps/fit_launch.h"
#include "apps/replay_command.h"
#include "apps/tune_command.h"
#include "base/errors.h"

int main(int argc, char** argv) {
  CLI::App app{"trainbus: Lightning-style training for LibTorch"};
  app.require_subcommand(1);
  trainbus::apps::FitArguments fit_args;
  CLI::App* fit = trainbus::apps::add_fit_command(app, fit_args);
  std::string ckpt_path;
  CLI::App* inspect = trainbus::apps::add_ckpt_command(app, ckpt_path);
  trainbus::apps::EvaluateArguments evaluate_args;
  const trainbus::apps::EvaluateCommands evaluate =
      trainbus::apps::add_evaluate_commands(app, evaluate_args);
  trainbus::apps::ReplayArguments replay_args;
  const trainbus::apps::ReplayCommand replay = trainbus::apps::add_replay_command(app, replay_args);
  trainbus::apps::TuneLrArguments tune_lr_args;
  trainbus::apps::TuneBatchSizeArguments tune_batch_size_args;
  const trainbus::apps::TuneCommand tune =
      trainbus::apps::add_tune_command(app, tune_lr_args, tune_batch_size_args);
  // `fit --config FILE`: the file's flags go in before the command line's own.
  trainbus::apps::ConfigOrigins config_origins;
  std::vector<std::string> arguments;
  try {
    arguments = trainbus::apps::expand_config_files(std::vector<std::string>(argv + 1, argv + argc),
                                                    &config_origins);
  } catch (const std::exception& error) {
    std::cerr << "trainbus: error: " << error.what() << std::endl;
    return 2;
  }
  std::vector<char*> expanded_argv{argv[0]};
  for (std::string& argument : arguments) expanded_argv.push_back(argument.data());
  try {
    app.parse(static_cast<int>(expanded_argv.size()), expanded_argv.data());
  } catch (const CLI::ParseError& error) {
    // Usage for --help; the message and the usage for a bad flag or value, with a non-zero exit.
    if (error.get_exit_code() != 0) std::cerr << app.help() << '\n';
    const int code = app.exit(error);
    const std::string message = error.what();
    for (const auto& [flag, origin] : config_origins) {
      // The flag itself, not a longer one it begins (--lr in --lr-gamma).
      for (std::size_t at = message.find(flag); at != std::string::npos;
           at = message.find(flag, at + 1)) {
        const std::size_t end = at + flag.size();
        if (end < message.size() && (std::isalnum(static_cast<unsigned char>(message[end])) ||
                                     message[end] == '-' || message[end] == '_'))
          continue;
        std::cerr << "note: " << flag << " may have come from " << origin << '\n';
        break;
      }
    }
    return code;
  }
  try {
    if (fit->parsed() && fit_args.print_config) {
      std::cout << trainbus::apps::effective_config(fit_args);
      return 0;
    }
    if (fit->parsed()) {
      // --nproc-per-node N: this process starts the N ranks (this program again, without the
      // launcher's flags) and waits for them; each rank then trains below.
      fit_args.launch.validate();
      // CUDA ranks are not bound to CPUs (as torchrun binds none): their CPU work feeds a GPU,
      // whose nearby CPUs the launcher does not know.
      if (fit_args.device.rfind("cuda", 0) == 0) fit_args.launch.bind_cpus(false);
      if (trainbus::apps::fit_launches_ranks(fit_args.launch)) {
        return trainbus::apps::run_fit_launcher(
            fit_args.launch, std::vector<std::string>(argv, argv + argc), std::cerr);
      }
      trainbus::distributed::stop_with_launcher();  // a rank: not without its launcher
      fit_args.flags = trainbus::apps::flag_values(*fit);
      for (int i = 0; i < argc; ++i) fit_args.command_line += (i ? " " : "") + std::string(argv[i]);
      trainbus::apps::run_fit_command(fit_args, std::cout);
    }
    using trainbus::Stage;
    if (evaluate.validate->parsed())
      trainbus::apps::run_evaluate_command(Stage::kValidate, evaluate_args, std::cout);
    if (evaluate.test->parsed())
      trainbus::apps::run_evaluate_command(Stage::kTest, evaluate_args, std::cout);
    if (evaluate.predict->parsed())
      trainbus::apps::run_evaluate_command(Stage::kPredict, evaluate_args, std::cout);
    if (replay.replay->parsed()) {
      return trainbus::apps::run_replay_command(replay, replay_args, std::cout, std::cerr);
    }
    if (inspect->parsed()) return trainbus::apps::run_ckpt_inspect(ckpt_path, std::cout);
    if (tune.lr->parsed()) trainbus::apps::run_tune_lr(tune_lr_args, std::cout);
    if (tune.batch_size->parsed()) {
      trainbus::apps::run_tune_batch_size(tune_batch_size_args, std::cout);
    }
  } catch (const std::exception& error) {
    // In one write: the ranks of `fit --nproc-per-node` share this stderr, and their lines must
    // not interleave.
    // A rank whose Trainer failed has declared that already (its first declaration is kept);
    // this one is for a failure before or after the Trainer's runs.
    trainbus::distributed::declare_rank_failure(error);
    std::cerr << "trainbus: error: " + std::string(error.what()) + "\n" << std::flush;
    // 75 for a rank that failed only because another one did, which the launcher then does not
    // name as the job's failure; else 1.
    return trainbus::distributed::rank_exit_code(error);
  }
  return 0;
}
