#include "apps/fit_command.h"

#include <chrono>
#include <filesystem>
#include <iomanip>
#include <memory>
#include <sstream>

#include <torch/version.h>
#include <CLI/CLI.hpp>

#include "apps/fit_launch.h"
#include "base/errors.h"
#include "callbacks/callback_spec.h"
#include "callbacks/early_stopping.h"
#include "callbacks/model_checkpoint.h"
#include "core/trainer.h"
#include "distributed/ddp_strategy.h"
#include "observers/csv_logger.h"
#include "observers/progress_bar.h"
#include "observers/tensorboard_logger.h"
#include "record/recorder.h"

namespace trainbus::apps {
namespace {

int64_t default_max_epochs(Architecture architecture) {
  return architecture == Architecture::kMlp ? 15 : 10;
}

// CLI11 check for `--flag 0.5` / `--flag 20` batch limits, so that a bad value is a usage error.
std::string check_batch_limit(const std::string& text) {
  try {
    parse_batch_limit(text, "");
    return {};
  } catch (const std::exception&) {
    return "expected a number of batches (e.g. 100) or a fraction in [0.0, 1.0] (e.g. 0.25), got "
           "'" +
           text + "'";
  }
}

// Tells the launcher at once that this rank failed, and why (distributed::declare_rank_failure):
// in on_exception, which runs before OnExceptionCheckpoint's (checkpoint callbacks come last) and
// before the Trainer waits for checkpoint writes, so that the launcher names this rank while it
// still cleans up. Only the fit's own Trainer has it: a tuner's trial that fails and is caught
// declares nothing.
class DeclareFailureToLauncher final : public Callback {
 public:
  void on_exception(Trainer&, Module&, const std::exception& error) override {
    distributed::declare_rank_failure(error);
  }
};

// --ddp-backend's text (CLI11 checked it is one of the three).
distributed::DDPOptions::Backend ddp_backend(const std::string& name) {
  if (name == "gloo") return distributed::DDPOptions::Backend::kGloo;
  if (name == "nccl") return distributed::DDPOptions::Backend::kNccl;
  return distributed::DDPOptions::Backend::kAuto;
}

}  // namespace

c10::Device parse_device(const std::string& text, const std::string& flag) {
  try {
    return c10::Device(text);
  } catch (const std::exception&) {
    throw MisconfigurationError(flag + ": expected cpu or cuda[:N], got '" + text + "'");
  }
}

BatchLimit parse_batch_limit(const std::string& text, const std::string& flag) {
  size_t used = 0;
  try {
    if (text.find_first_of(".eE") == std::string::npos) {
      const long long batches = std::stoll(text, &used);
      if (used == text.size() && batches >= 0) return BatchLimit(static_cast<int64_t>(batches));
    } else {
      const double fraction = std::stod(text, &used);
      if (used == text.size() && fraction >= 0.0 && fraction <= 1.0) return BatchLimit(fraction);
    }
  } catch (const std::exception&) {
  }
  throw MisconfigurationError(
      flag +
      ": expected a number of batches (e.g. 100) or a fraction in [0.0, 1.0] (e.g. "
      "0.25), got '" +
      text + "'");
}

CLI::App* add_fit_command(CLI::App& app, FitArguments& args) {
  CLI::App* fit = app.add_subcommand(
      "fit", "Train a classifier on Fashion-MNIST, then test it (the default job)");
  // A flag given twice (by a --config file, then on the command line) takes the last value.
  fit->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  fit->add_option("--config", args.config,
                  "Read flags from a YAML file laid out as LightningCLI's (trainer, model, data; "
                  "see --print-config); flags after it override it, --callback adds to its "
                  "callbacks. Repeatable")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  fit->add_flag("--print-config", args.print_config,
                "Print the effective configuration as YAML (for --config) and exit");
  fit->add_option("--model", args.model, "mlp (784-256-128-10) or cnn (2 conv + pooling)")
      ->check(CLI::IsMember({"mlp", "cnn"}))
      ->capture_default_str();
  fit->add_option("--max-epochs", args.max_epochs,
                  "Epochs to train (default: 15 for mlp, 10 for cnn)")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  fit->add_option("--max-steps", args.max_steps,
                  "Stop after this many optimizer steps, even mid-epoch; -1: no limit")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 40))
      ->capture_default_str();
  fit->add_option("--max-time", args.max_time,
                  "Stop training after this long, as DD:HH:MM:SS (checked after every batch; "
                  "time trained before a --resume counts)");
  fit->add_option("--batch-size", args.batch_size, "Training batch size")
      ->check(CLI::Range(int64_t{1}, int64_t{60000}))
      ->capture_default_str();
  fit->add_option("--lr", args.lr, "Adam learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  fit->add_option("--weight-decay", args.weight_decay, "Adam weight decay")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  fit->add_option("--dropout", args.dropout, "Dropout probability")
      ->check(CLI::Range(0.0, 0.95))
      ->capture_default_str();
  fit->add_option("--lr-step-epochs", args.lr_step_epochs,
                  "Multiply the LR by --lr-gamma every N epochs; 0: constant")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  fit->add_option("--lr-gamma", args.lr_gamma, "LR factor applied every --lr-step-epochs")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  fit->add_option("--seed", args.seed, "Seed of weights, data order and dropout")
      ->capture_default_str();
  fit->add_option("--data", args.data,
                  "Directory with the four Fashion-MNIST IDX files (.gz or not)")
      ->capture_default_str();
  fit->add_option("--out", args.out, "Run directory for logs and checkpoints")
      ->capture_default_str();
  fit->add_option("--val-size", args.val_size, "Training images held out for validation")
      ->check(CLI::Range(int64_t{0}, int64_t{59999}))
      ->capture_default_str();
  fit->add_option("--limit-train-batches", args.limit_train_batches,
                  "Batches per epoch: a count or a fraction")
      ->check(CLI::Validator(check_batch_limit, "BATCHES|FRACTION"))
      ->capture_default_str();
  fit->add_option("--limit-val-batches", args.limit_val_batches,
                  "Validation batches: a count or a fraction")
      ->check(CLI::Validator(check_batch_limit, "BATCHES|FRACTION"))
      ->capture_default_str();
  fit->add_option("--limit-test-batches", args.limit_test_batches,
                  "Test batches: a count or a fraction")
      ->check(CLI::Validator(check_batch_limit, "BATCHES|FRACTION"))
      ->capture_default_str();
  fit->add_option("--accumulate-grad-batches", args.accumulate_grad_batches,
                  "Step the optimizer every N batches")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}))
      ->capture_default_str();
  fit->add_option("--gradient-clip-val", args.gradient_clip_val,
                  "Clip the gradient norm to this value")
      ->check(CLI::PositiveNumber);
  fit->add_option("--num-sanity-val-steps", args.num_sanity_val_steps,
                  "Validation batches before training; -1: all")
      ->check(CLI::Range(int64_t{-1}, int64_t{100000}))
      ->capture_default_str();
  fit->add_option("--early-stopping-patience", args.early_stopping_patience,
                  "Stop when val_loss has not improved for N epochs")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  fit->add_option("--callback", args.callbacks,
                  "Add a built-in callback: NAME:key=value,... with Lightning's option names, e.g. "
                  "'learning_rate_monitor:logging_interval=step'. Repeatable. Names and keys:\n" +
                      callbacks::describe_callback_specs())
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  fit->add_flag("--deterministic", args.deterministic,
                "Use only deterministic LibTorch algorithms");
  fit->add_option("--device", args.device, "cpu, or cuda[:N] where LibTorch has CUDA")
      ->capture_default_str();
  fit->add_option("--log-every-n-steps", args.log_every_n_steps,
                  "Write step-level metrics every N steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}))
      ->capture_default_str();
  fit->add_flag("!--no-csv", args.csv, "Do not write metrics.csv / hparams.yaml");
  fit->add_flag("!--no-tensorboard", args.tensorboard, "Do not write TensorBoard event files");
  fit->add_flag("--log-every-rank", args.log_every_rank,
                "Data-parallel training: every rank writes its own logs (metrics.csv, "
                "hparams.yaml, TensorBoard's event file), rank R's in rank_R/ under rank 0's run "
                "directory (by default rank 0 alone logs; no effect on one process)")
      ->group(kDataParallelGroup);
  fit->add_flag("!--no-model-summary", args.model_summary,
                "Do not print the model summary table when training starts");
  fit->add_flag("!--no-progress-bar", args.progress_bar,
                "Do not show the progress bar and epoch lines");
  fit->add_flag("!--no-checkpoint", args.checkpoint,
                "Do not save checkpoints (by default the best by val_acc and last.ckpt, in "
                "--out/checkpoints; a --callback model_checkpoint takes their place, in that "
                "directory unless it names a dirpath); refused with a checkpoint --callback, as "
                "Lightning's enable_checkpointing=False");
  fit->add_option("--resume", args.resume,
                  "Resume from a checkpoint directory, or 'last': the newest complete one in "
                  "--out/checkpoints (or a --callback model_checkpoint's dirpath)");
  fit->add_flag("!--no-record", args.record,
                "Do not record the run's events (by default --out/version_N/events.tbrec, for "
                "`trainbus replay`)");
  fit->add_option("--record-path", args.record_path,
                  "Where to record the run's events instead (a new file: an existing one is "
                  "never replaced)");
  fit->add_flag("--record-every-rank", args.record_every_rank,
                "Data-parallel training: every rank records its own events, rank R in "
                "events.rankR.tbrec beside rank 0's recording (by default rank 0 alone records; no "
                "effect on one process)")
      ->group(kDataParallelGroup);
  add_launch_flags(*fit, args.launch);
  fit->add_option("--ddp-timeout", args.ddp_timeout,
                  "Data-parallel training: seconds a rank waits for the others to join and at any "
                  "collective before it fails, naming the operation (a rank that died is noticed "
                  "at once)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str()
      ->group(kDataParallelGroup);
  fit->add_option("--ddp-backend", args.ddp_backend,
                  "Data-parallel training: how the ranks talk (torch.distributed's backend): auto "
                  "is nccl on --device cuda where LibTorch has NCCL, else gloo")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}))
      ->capture_default_str()
      ->group(kDataParallelGroup);
  fit->add_flag("--ddp-find-unused-parameters", args.ddp_find_unused_parameters,
                "Data-parallel training: allow parameters that get no gradient in a step (walks "
                "the loss's graph every step, as DDP's find_unused_parameters)")
      ->group(kDataParallelGroup);
  fit->add_flag("--ddp-fp16-gradients", args.ddp_fp16_gradients,
                "Data-parallel training: send gradients between ranks as float16, in half of "
                "float32's bytes, at float16's precision: elements with |g| >= 65520 become "
                "+-inf, those below about 3e-8 become 0. For networks where bandwidth limits: "
                "on one machine it is no faster than float32, which is exact (DDP's "
                "fp16_compress_hook on Gloo: 0.56x to 0.60x of one process with 2 ranks, "
                "bench/README.md). Gloo with 2 ranks: all-gathered and averaged in float32; 3 "
                "ranks or more, where an all-gather would send more bytes than a float16 "
                "all-reduce, and NCCL: DDP's fp16_compress_hook, a float16 all-reduce (slow sums "
                "on Gloo)")
      ->group(kDataParallelGroup);
  fit->add_option("--ddp-gloo-loop-nice", args.ddp_gloo_loop_nice,
                  "Data-parallel training: the nice value of Gloo's event loop thread, which "
                  "busy-waits: 19 lets training and the collective's own work go first where "
                  "every core is busy; 0 leaves it as PyTorch does")
      ->check(CLI::Range(0, 19))
      ->capture_default_str()
      ->group(kDataParallelGroup);
  return fit;
}

callbacks::ModelCheckpointOptions fit_checkpoint_options(const std::string& out) {
  return callbacks::ModelCheckpointOptions()
      .dirpath((std::filesystem::path(out) / "checkpoints").string())
      .filename("{epoch}-{val_acc:.4f}")
      .monitor("val_acc")
      .mode("max");
}

std::map<std::string, std::string> flag_values(const CLI::App& command) {
  // CLI11 writes every option with its value or default as TOML lines: name=value.
  std::map<std::string, std::string> values;
  std::istringstream lines(
      command.config_to_str(/*default_also=*/true, /*write_description=*/false));
  std::string line;
  while (std::getline(lines, line)) {
    const std::size_t equals = line.find('=');
    if (equals == std::string::npos || line.empty() || line[0] == '[' || line[0] == '#') continue;
    std::string value = line.substr(equals + 1);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    values[line.substr(0, equals)] = value;
  }
  return values;
}

distributed::DistributedEnvironment fit_distributed_environment() {
  return distributed::environment_from_variables();
}

Metrics run_fit_command(const FitArguments& args, std::ostream& out) {
  // This process's rank, when `--nproc-per-node` (or torchrun) started it as one of several: it
  // trains its share of the data with DDP, and only rank 0 prints and writes checkpoints, and (but
  // for --log-every-rank, --record-every-rank) logs and records (the run directory is rank 0's).
  const distributed::DistributedEnvironment environment = fit_distributed_environment();
  const bool rank_zero = environment.rank == 0;

  ClassifierOptions model_options;
  model_options.architecture = parse_architecture(args.model);
  model_options.lr = args.lr;
  model_options.weight_decay = args.weight_decay;
  model_options.dropout = args.dropout;
  model_options.lr_step_epochs = args.lr_step_epochs;
  model_options.lr_gamma = args.lr_gamma;

  TrainerOptions options;
  options.max_epochs(args.max_epochs.value_or(default_max_epochs(model_options.architecture)));
  options.max_steps(args.max_steps);
  if (!args.max_time.empty()) {
    try {
      options.max_time(Duration(args.max_time));
    } catch (const MisconfigurationError& e) {
      throw MisconfigurationError(std::string("--max-time: ") + e.what());
    }
  }
  options.seed(args.seed);
  options.default_root_dir(args.out);
  options.limit_train_batches(parse_batch_limit(args.limit_train_batches, "--limit-train-batches"));
  options.limit_val_batches(parse_batch_limit(args.limit_val_batches, "--limit-val-batches"));
  options.limit_test_batches(parse_batch_limit(args.limit_test_batches, "--limit-test-batches"));
  options.accumulate_grad_batches(args.accumulate_grad_batches);
  options.gradient_clip_val(args.gradient_clip_val);
  options.num_sanity_val_steps(args.num_sanity_val_steps);
  if (args.deterministic) options.deterministic(true);
  options.device(parse_device(args.device, "--device"));

  options.log_every_n_steps(args.log_every_n_steps);
  options.enable_model_summary(args.model_summary && rank_zero);
  // The fit's own progress bar (on `out`) and checkpoint callback (below) take the place of the
  // Trainer's defaults; --no-checkpoint --resume last keeps a checkpoint callback that saves
  // nothing, to find the last checkpoint.
  options.enable_progress_bar(args.progress_bar);
  options.enable_checkpointing(args.checkpoint || args.resume == "last");
  if (environment.distributed()) {
    options.strategy(std::make_shared<distributed::DDPStrategy>(
        environment,
        distributed::DDPOptions()
            .timeout(std::chrono::milliseconds(static_cast<int64_t>(args.ddp_timeout * 1000.0)))
            .backend(ddp_backend(args.ddp_backend))
            .find_unused_parameters(args.ddp_find_unused_parameters)
            // Only built-in callbacks run here, and they stop every rank alike without it:
            // EarlyStopping decides at validation and epoch ends, where the Trainer agrees
            // anyway, and the Timer follows rank 0's clock (a broadcast per check, in place of
            // the agreement, with --max-time). One collective less per step otherwise.
            .stop_agreement_every_batch(false)
            // Nothing here calls Optimizer::zero_grad() (which refuses views) or keeps a
            // gradient past its step: the averaged gradients stay in the buckets instead of
            // being copied back (bench/README.md: 1.28x to 1.39x of one process for the MLP,
            // 1.26x to 1.52x for the large one, same run).
            .gradient_as_bucket_view(true)
            .gloo_event_loop_nice(args.ddp_gloo_loop_nice)
            .gradient_compression(args.ddp_fp16_gradients
                                      ? distributed::DDPOptions::GradientCompression::kFp16
                                      : distributed::DDPOptions::GradientCompression::kNone)));
  }
  std::vector<std::shared_ptr<Callback>> callbacks;
  if (environment.distributed()) callbacks.push_back(std::make_shared<DeclareFailureToLauncher>());
  if (args.early_stopping_patience) {
    callbacks::EarlyStoppingOptions early;
    early.monitor("val_loss");
    early.patience(*args.early_stopping_patience);
    callbacks.push_back(std::make_shared<callbacks::EarlyStopping>(early));
  }

  // A ModelCheckpoint given with --callback takes the place of fit's own (two would save side by
  // side), in fit's directory unless it names one, so that --resume last and `trainbus validate
  // --ckpt` find its checkpoints.
  const std::string checkpoint_dir = (std::filesystem::path(args.out) / "checkpoints").string();
  callbacks::SpecDefaults spec_defaults;
  spec_defaults.checkpoint_dirpath = checkpoint_dir;
  std::shared_ptr<callbacks::ModelCheckpoint> given_checkpoint;
  for (const std::string& spec : args.callbacks) {
    callbacks.push_back(callbacks::make_callback(spec, spec_defaults));
    if (callbacks.back()->kind() != CallbackKind::kCheckpoint) continue;
    TRAINBUS_CHECK(args.checkpoint, "--no-checkpoint turns checkpoints off, but --callback '", spec,
                   "' saves them; drop one of the two");
    if (!given_checkpoint)
      given_checkpoint = std::dynamic_pointer_cast<callbacks::ModelCheckpoint>(callbacks.back());
  }

  data::FashionMnistDataModule data(data::FashionMnistOptions()
                                        .root(args.data)
                                        .batch_size(args.batch_size)
                                        .val_size(args.val_size));

  // The model's initial weights come from the seed too.
  torch::manual_seed(args.seed);
  FashionClassifier model(model_options);
  if (!given_checkpoint && (args.checkpoint || args.resume == "last")) {
    using SaveLast = callbacks::ModelCheckpointOptions::SaveLast;
    callbacks.push_back(std::make_shared<callbacks::ModelCheckpoint>(
        fit_checkpoint_options(args.out)
            .save_top_k(args.checkpoint ? 1 : 0)
            .save_last(args.checkpoint ? SaveLast::kLink : SaveLast::kNo)));
  }
  Trainer trainer(options, callbacks);
  // Rank 0 picks the run directory; with --log-every-rank or --record-every-rank every rank
  // writes into it. The same flags on every rank: all of them meet at the broadcast, or none.
  std::string run_dir = rank_zero ? observers::next_version_dir(args.out) : std::string();
  const bool every_rank_logs =
      (args.csv || args.tensorboard) && args.log_every_rank && environment.distributed();
  const bool every_rank_records =
      args.record && args.record_every_rank && environment.distributed();
  if (every_rank_logs || every_rank_records)
    run_dir = trainer.strategy().broadcast_text(run_dir, 0);
  // Each rank's loggers are its own (one logger runs on one rank); rank R's write rank_R/.
  const auto add_loggers = [&] {
    const auto where = events::ObserverOptions().every_rank(every_rank_logs);
    if (args.csv) {
      trainer.add_observer(std::make_shared<observers::CsvLogger>(
                               observers::CsvLoggerOptions().log_dir(run_dir).log_every_n_steps(
                                   args.log_every_n_steps)),
                           where);
    }
    if (args.tensorboard) {
      trainer.add_observer(
          std::make_shared<observers::TensorBoardLogger>(
              observers::TensorBoardLoggerOptions().log_dir(run_dir).log_every_n_steps(
                  args.log_every_n_steps)),
          where);
    }
  };
  std::string record_path;
  const auto add_recorder = [&] {
    const std::string rank_zero_path =
        args.record_path.empty() ? (std::filesystem::path(run_dir) / "events.tbrec").string()
                                 : args.record_path;
    const std::filesystem::path parent = std::filesystem::path(rank_zero_path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent);
    // The Recorder takes its rank and world size from the trainer that runs it: rank R's
    // recording is rank 0's path with .rankR before the extension.
    auto recorder = std::make_shared<record::Recorder>(record::RecorderOptions()
                                                           .path(rank_zero_path)
                                                           .seed(static_cast<int64_t>(args.seed))
                                                           .command_line(args.command_line)
                                                           .libtorch_version(TORCH_VERSION)
                                                           .run_options(args.flags));
    // A recording that cannot be written (a full disk) is reported once and switched off: it
    // must not end the training it records.
    trainer.add_observer(recorder, events::ObserverOptions()
                                       .on_error(events::ObserverOptions::OnError::kDisable)
                                       .every_rank(every_rank_records));
    record_path = recorder->path();
  };
  if (!rank_zero) {  // the same run, quietly: rank 0 reports, and (by default) logs and records
    if (every_rank_logs) add_loggers();
    if (every_rank_records) add_recorder();
    trainer.fit(model, data, FitOptions().ckpt_path(args.resume));
    return trainer.test(model, data);
  }
  if (args.progress_bar) {
    trainer.add_observer(
        std::make_shared<observers::ProgressBar>(observers::ProgressBarOptions().out(&out)));
  }
  add_loggers();
  if (args.record) add_recorder();
  out << "trainbus fit: " << args.model << " on Fashion-MNIST (" << args.data << "), "
      << trainer.max_epochs() << " epochs, batch size " << args.batch_size
      << (environment.distributed()
              ? " per rank x " + std::to_string(environment.world_size) + " ranks (DDP)"
              : std::string())
      << ", lr " << args.lr << ", seed " << args.seed << std::endl;
  trainer.fit(model, data, FitOptions().ckpt_path(args.resume));
  if (!trainer.checkpoints().resumed_from().empty())
    out << "resumed from: " << trainer.checkpoints().resumed_from() << '\n';
  const Metrics tested = trainer.test(model, data);
  if (!args.progress_bar) {  // the progress bar prints the test line itself
    out << std::fixed << std::setprecision(4) << "test ";
    for (const auto& [name, value] : tested) out << ' ' << name << ' ' << value;
    out << '\n';
  }
  if (args.csv || args.tensorboard) {
    out << "logs: " << run_dir << (every_rank_logs ? " (rank 0; rank R's in rank_R under it)" : "")
        << '\n';
  }
  if (given_checkpoint) {
    out << "checkpoints: " << given_checkpoint->dirpath() << '\n';
  } else if (args.checkpoint) {
    out << "checkpoints: " << checkpoint_dir << '\n';
  }
  if (args.record) {
    out << "recording: " << record_path
        << (every_rank_records ? " (rank 0; rank R's beside it, with .rankR before .tbrec)" : "")
        << '\n';
  }
  out << std::flush;
  return tested;
}

}  // namespace trainbus::apps
