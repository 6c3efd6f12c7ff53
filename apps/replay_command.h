#pragma once
/// `trainbus replay RUN.tbrec`: a recorded run's events as a timeline, or regenerated logs;
/// `trainbus replay info RUN.tbrec`: what the recording holds and how it ended;
/// `trainbus replay diff A.tbrec B.tbrec`: where two runs start to differ;
/// `trainbus replay RUN.tbrec --callback SPEC`: what callbacks decide on the recorded run, beside
/// what the live run decided.

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace trainbus::apps {

struct ReplayArguments {
  std::string path;
  std::optional<int64_t> from_step;
  std::optional<int64_t> to_step;
  std::optional<int64_t> epoch;
  std::string events;  ///< comma-separated event names
  std::string format = "text";
  bool salvage = false;
  std::string to_csv;                        ///< directory for a regenerated metrics.csv
  std::string to_tensorboard;                ///< directory for regenerated TensorBoard event files
  std::optional<int64_t> log_every_n_steps;  ///< for the regenerated logs; default: the run's
  std::string info_path;                     ///< `replay info`
  std::string diff_a, diff_b;                ///< `replay diff`
  double rtol = 1e-6;
  double atol = 0.0;
  /// `--callback SPEC`: callbacks to replay the recording through (callbacks/callback_spec.h).
  std::vector<std::string> callbacks;
};

struct ReplayCommand {
  CLI::App* replay = nullptr;
  CLI::App* info = nullptr;
  CLI::App* diff = nullptr;
};

/// Adds `replay` and its `info` and `diff` subcommands to `app`, bound to `args`.
ReplayCommand add_replay_command(CLI::App& app, ReplayArguments& args);

/// Runs whichever was parsed; returns the exit code (diff, and --callback: 0 the same decisions,
/// 1 different; diff: 2 trouble). Throws
/// RecordingError for a file that is not a recording or is damaged (without --salvage).
int run_replay_command(const ReplayCommand& command, const ReplayArguments& args, std::ostream& out,
                       std::ostream& err);

}  // namespace trainbus::apps
