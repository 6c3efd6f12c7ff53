#pragma once
/// `trainbus fit`: train a FashionClassifier on Fashion-MNIST, then test it.

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "apps/fashion_classifier.h"
#include "callbacks/model_checkpoint.h"
#include "core/trainer_options.h"
#include "data/fashion_mnist.h"
#include "distributed/environment.h"
#include "distributed/launcher.h"

namespace CLI {
class App;
}

namespace trainbus::apps {

/// Everything `trainbus fit` takes; the defaults are the main job's.
struct FitArguments {
  std::string model = "mlp";
  /// Unset: the model's default (see default_max_epochs).
  std::optional<int64_t> max_epochs;
  int64_t max_steps = -1;  ///< optimizer steps; -1: no limit
  std::string max_time;    ///< "DD:HH:MM:SS"; empty: no limit
  int64_t batch_size = 64;
  double lr = 1e-3;
  double weight_decay = 0.0;
  double dropout = 0.2;
  int64_t lr_step_epochs = 5;
  double lr_gamma = 0.5;
  uint64_t seed = 42;
  std::string data = data::kFashionMnistDir;
  std::string out = "trainbus_logs";
  int64_t val_size = 5000;
  std::string limit_train_batches = "1.0";
  std::string limit_val_batches = "1.0";
  std::string limit_test_batches = "1.0";
  int64_t accumulate_grad_batches = 1;
  std::optional<double> gradient_clip_val;
  int64_t num_sanity_val_steps = 2;
  std::optional<int64_t> early_stopping_patience;
  /// Built-in callbacks to add: "NAME:key=value,..." (callbacks/callback_spec.h).
  std::vector<std::string> callbacks;
  bool deterministic = false;
  std::string device = "cpu";
  bool csv = true;
  bool tensorboard = true;
  /// Data-parallel training: every rank writes its own logs (the CSV and TensorBoard loggers'),
  /// rank R's in rank_R/ under rank 0's run directory (observers::rank_files_dir); otherwise rank
  /// 0 alone logs.
  bool log_every_rank = false;
  bool progress_bar = true;
  bool model_summary = true;
  int64_t log_every_n_steps = 50;
  bool checkpoint = true;
  /// A checkpoint directory, or "last": the newest complete one in `out`/checkpoints.
  std::string resume;
  /// Record every event to `record_path` (default: events.tbrec in the run directory).
  bool record = true;
  std::string record_path;
  /// Data-parallel training: every rank records its own events, rank R beside rank 0's recording
  /// with ".rankR" before the extension (record::recording_path_of_rank); otherwise rank 0 alone
  /// records.
  bool record_every_rank = false;
  /// YAML files of flags (apps/fit_config.h), expanded before parsing; kept for the recording.
  std::vector<std::string> config;
  /// Print the effective configuration as YAML and exit without training.
  bool print_config = false;
  /// --nproc-per-node, --nnodes, --node-rank, --master-addr, --master-port: with more than one
  /// process, `trainbus fit` starts its ranks instead of training (apps/fit_launch.h).
  distributed::LaunchOptions launch;
  /// DDP: the longest wait for the rendezvous and any collective, in seconds, and whether
  /// parameters may go without a gradient in a step (distributed::DDPOptions).
  double ddp_timeout = 300.0;
  /// DDP: auto, gloo or nccl (DDPOptions::backend).
  std::string ddp_backend = "auto";
  bool ddp_find_unused_parameters = false;
  /// DDP: send gradients as float16 (fewer bytes; DDPOptions::gradient_compression kFp16).
  bool ddp_fp16_gradients = false;
  /// DDP: the nice value of Gloo's event loop thread (DDPOptions::gloo_event_loop_nice).
  int ddp_gloo_loop_nice = 19;
  /// Every flag's value, as the recording's header keeps them (see flag_values).
  std::map<std::string, std::string> flags;
  /// The command line, for the recording's header.
  std::string command_line;
};

/// Adds the `fit` subcommand and its flags to `app`, bound to `args`.
CLI::App* add_fit_command(CLI::App& app, FitArguments& args);

/// Every flag of `command` (a parsed subcommand) with its value or default: "max-epochs" -> "10".
std::map<std::string, std::string> flag_values(const CLI::App& command);

/// The ModelCheckpoint `trainbus fit` keeps its checkpoints with in `out`/checkpoints (the best by
/// val_acc, and last.ckpt); validate/test/predict --ckpt best|last find them with the same one.
callbacks::ModelCheckpointOptions fit_checkpoint_options(const std::string& out);

/// Parses "cpu" or "cuda[:N]"; throws MisconfigurationError naming `flag`.
c10::Device parse_device(const std::string& text, const std::string& flag);

/// Parses "10" as 10 batches and "0.25" as a fraction; throws MisconfigurationError naming `flag`.
BatchLimit parse_batch_limit(const std::string& text, const std::string& flag);

/// This process's place in a data-parallel job, from the variables the launcher of
/// `--nproc-per-node` (or torchrun) set: RANK, WORLD_SIZE, LOCAL_RANK, ... (one process when they
/// are not set). Throws MisconfigurationError naming a bad variable.
distributed::DistributedEnvironment fit_distributed_environment();

/// Trains and tests; shows the progress bar (one summary line per epoch) and prints the test
/// metrics to `out`; writes CSV and TensorBoard logs and the event recording (events.tbrec) under
/// `--out`/version_N. Returns the test
/// metrics. Throws trainbus errors (bad data, bad options) for main() to report.
Metrics run_fit_command(const FitArguments& args, std::ostream& out);

}  // namespace trainbus::apps
