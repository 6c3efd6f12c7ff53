// The `trainbus` command line: a thin program over the public API.
#include <iostream>

#include <CLI/CLI.hpp>

#include "apps/ckpt_command.h"
#include "apps/fit_command.h"
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
  trainbus::apps::ReplayArguments replay_args;
  const trainbus::apps::ReplayCommand replay = trainbus::apps::add_replay_command(app, replay_args);
  trainbus::apps::TuneLrArguments tune_lr_args;
  trainbus::apps::TuneBatchSizeArguments tune_batch_size_args;
  const trainbus::apps::TuneCommand tune =
      trainbus::apps::add_tune_command(app, tune_lr_args, tune_batch_size_args);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    // Usage for --help; the message and the usage for a bad flag or value, with a non-zero exit.
    if (error.get_exit_code() != 0) std::cerr << app.help() << '\n';
    return app.exit(error);
  }
  try {
    if (fit->parsed()) {
      fit_args.flags = trainbus::apps::flag_values(*fit);
      for (int i = 0; i < argc; ++i) fit_args.command_line += (i ? " " : "") + std::string(argv[i]);
      trainbus::apps::run_fit_command(fit_args, std::cout);
    }
    if (replay.replay->parsed()) {
      return trainbus::apps::run_replay_command(replay, replay_args, std::cout, std::cerr);
    }
    if (inspect->parsed()) return trainbus::apps::run_ckpt_inspect(ckpt_path, std::cout);
    if (tune.lr->parsed()) trainbus::apps::run_tune_lr(tune_lr_args, std::cout);
    if (tune.batch_size->parsed()) {
      trainbus::apps::run_tune_batch_size(tune_batch_size_args, std::cout);
    }
  } catch (const std::exception& error) {
    std::cerr << "trainbus: error: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
