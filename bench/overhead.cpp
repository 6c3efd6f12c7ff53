// What the Trainer costs per training step, against a hand-written LibTorch loop, in one run:
//   (a) a hand-written loop as LibTorch users write it: optimizer.zero_grad(), forward,
//       cross-entropy, backward, Adam step;
//   (a') the same loop releasing gradients to none instead of zero-filling them, as the Trainer
//       does (PyTorch 2's default) -- the baseline that isolates the framework's own cost;
//   (b) the same module in Trainer::fit with no callbacks;
//   (c) the same with 10 callbacks overriding every hook with an empty body;
//   (d) (b) with a module that logs train_loss and train_acc on the progress bar, as the main
//       job's;
//   (e) (d) with the observers `trainbus fit` attaches by default: the Recorder (events.tbrec),
//       the CSV and TensorBoard loggers and the progress bar (to a discarding stream), all
//       writing -- the cost of observing a run, whose goal is (e) within 2% of (d);
//   (e') with --pair only: (e) with the pool kicked every 1 ms, the default until 2026-12-04.
// Beside the step times, the CPU time the observer pool's threads ran per step (from
// /proc/self/task/TID/schedstat): the work observing puts on the machine, which a step time on 2
// noisy cores can hide or exaggerate by several percent.
// Same MLP (784-256-128-10, dropout 0.2), same initial weights, same Fashion-MNIST batches in the
// same order. A step's time is the time between the starts of consecutive steps, so everything
// the framework does between two steps counts. Each repetition runs them all in a rotated order;
// the table quotes the median over repetitions of each run's median step, and the medians of the
// per-repetition ratios. The losses of all runs must be identical step by step.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <torch/optim/adam.h>
#include <CLI/CLI.hpp>

#include "bench/bench_mlp.h"
#include "bench/no_op_callback.h"
#include "core/trainer.h"
#include "data/fashion_mnist.h"
#include "observers/csv_logger.h"
#include "observers/progress_bar.h"
#include "observers/tensorboard_logger.h"
#include "record/recorder.h"

namespace {

using namespace trainbus;
using bench::BenchMlp;
using bench::Clock;

struct RunResult {
  double median_step_us;
  std::vector<double> losses;
  double mean_step_us = 0;
  /// CPU time the observer pool's threads (tb-observer-N, tb-obs-flusher) spent in the run, per
  /// step, in microseconds: the work the observers put on the machine's other cores.
  double observer_cpu_us_per_step = 0;
};

using bench::median;

RunResult summarize(const BenchMlp& module) {
  return {module.median_step_us(), module.losses, module.mean_step_us()};
}

RunResult run_hand_written(const std::shared_ptr<DataLoader>& loader, int64_t steps, uint64_t seed,
                           bool grads_to_none) {
  auto module = bench::fresh_mlp(seed);
  module->train();
  torch::optim::Adam optimizer(module->parameters(), torch::optim::AdamOptions(1e-3));
  loader->set_epoch(0);
  for (int64_t i = 0; i < steps; ++i) {
    const Batch batch = loader->batch(i);
    module->step_starts.push_back(Clock::now());
    if (grads_to_none) {
      for (auto& parameter : module->parameters()) parameter.mutable_grad().reset();
    } else {
      optimizer.zero_grad();
    }
    at::Tensor loss = module->loss_of(batch);
    module->losses.push_back(loss.item<double>());
    loss.backward();
    optimizer.step();
  }
  return summarize(*module);
}

// An observed run against (d), one ratio per repetition: of mean steps (the goal's measure: work
// that lands on a few steps only, the pool's hand-overs every 10 ms, is in it, where the median
// step can miss it), of median steps, and the observers' CPU time per (d)'s mean step.
struct CostAgainstLogging {
  std::vector<double> mean_steps, median_steps, cpu_share;
  void add(const RunResult& observed, const RunResult& logging) {
    mean_steps.push_back(observed.mean_step_us / logging.mean_step_us);
    median_steps.push_back(observed.median_step_us / logging.median_step_us);
    cpu_share.push_back(observed.observer_cpu_us_per_step / logging.mean_step_us);
  }
};

// CPU time, in nanoseconds, that this process's threads whose names start with `prefix` have run
// (/proc/self/task/TID/schedstat's first field; NaN where the kernel has no schedstat). The pool
// names its threads for this. What they do after the read (the pool's last flush and the
// recording's end, in the trainer's destructor) is not counted.
double cpu_ns_of_threads_named(const std::string& prefix) {
  if (!std::filesystem::exists("/proc/self/schedstat")) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  double total = 0;
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", error)) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (!std::getline(comm, name) || name.rfind(prefix, 0) != 0) continue;
    std::ifstream schedstat(task.path() / "schedstat");
    double on_cpu_ns = 0;
    if (schedstat >> on_cpu_ns) total += on_cpu_ns;
  }
  return total;
}

// Where (e) writes: a fresh directory per run, removed afterwards.
struct ScratchDir {
  ScratchDir() {
    static int runs = 0;
    path = std::filesystem::temp_directory_path() /
           ("trainbus-bench-overhead-" + std::to_string(::getpid()) + "-" + std::to_string(++runs));
    std::filesystem::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::filesystem::path path;
};

enum class Observed { kNothing, kLoggedOnly, kFitObservers };

// Which of `trainbus fit`'s observers (e) attaches (--observers), to see what each one costs.
struct ObserverSet {
  bool recorder = true, csv = true, tensorboard = true, progress_bar = true;
};

RunResult run_trainer(const std::shared_ptr<DataLoader>& loader, int64_t steps, uint64_t seed,
                      int callbacks, Observed observed = Observed::kNothing,
                      const ObserverSet& attached = {},
                      std::optional<std::chrono::microseconds> kick_interval = std::nullopt) {
  auto module = bench::fresh_mlp(seed);
  module->log_metrics = observed != Observed::kNothing;
  TrainerOptions options;
  options.max_epochs(1);
  options.enable_model_summary(false);  // no table in the benchmark's output
  // Only the observers a run asks for (its progress bar draws into nothing), no checkpoints.
  options.enable_progress_bar(observed == Observed::kFitObservers && attached.progress_bar);
  options.enable_checkpointing(false);
  options.limit_train_batches(steps);
  options.num_sanity_val_steps(0);
  if (kick_interval) options.observer_kick_interval(*kick_interval);
  std::vector<std::shared_ptr<Callback>> no_ops;
  for (int i = 0; i < callbacks; ++i) no_ops.push_back(std::make_shared<bench::NoOpCallback>());
  // Before the trainer: its observers close their files into them when it is destroyed.
  ScratchDir dir;
  std::ofstream discard;  // never opened: the progress bar draws into nothing
  Trainer trainer(options, no_ops);
  if (observed == Observed::kFitObservers) {
    if (attached.progress_bar) {
      trainer.add_observer(
          std::make_shared<observers::ProgressBar>(observers::ProgressBarOptions().out(&discard)));
    }
    if (attached.csv) {
      trainer.add_observer(std::make_shared<observers::CsvLogger>(
          observers::CsvLoggerOptions().log_dir(dir.path.string())));
    }
    if (attached.tensorboard) {
      trainer.add_observer(std::make_shared<observers::TensorBoardLogger>(
          observers::TensorBoardLoggerOptions().log_dir(dir.path.string())));
    }
    if (attached.recorder) {
      trainer.add_observer(std::make_shared<record::Recorder>(
          record::RecorderOptions().path((dir.path / "events.tbrec").string())));
    }
  }
  data::LoaderDataModule data(loader);
  trainer.fit(*module, data);
  RunResult result = summarize(*module);
  // fit drained the observers; their threads live until the trainer goes.
  result.observer_cpu_us_per_step =
      cpu_ns_of_threads_named("tb-obs") / 1e3 / static_cast<double>(steps);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "trainbus benchmark: Trainer overhead per step against a hand-written LibTorch loop"};
  int64_t steps = 400;
  int reps = 5;
  int64_t batch_size = 64;
  uint64_t seed = 0;
  app.add_option("--steps", steps, "Training steps per run")
      ->check(CLI::Range(int64_t{10}, int64_t{800}));
  app.add_option("--reps", reps, "Repetitions of the runs")->check(CLI::Range(1, 100));
  app.add_option("--batch-size", batch_size, "Batch size")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  std::vector<std::string> observer_names{"recorder", "csv", "tensorboard", "progress_bar"};
  app.add_option("--observers", observer_names,
                 "The observers (e) attaches, comma-separated: one alone shows what it costs")
      ->delimiter(',')
      ->check(CLI::IsMember({"recorder", "csv", "tensorboard", "progress_bar"}))
      ->capture_default_str();
  bool pair_only = false;
  app.add_flag("--pair", pair_only,
               "Run only (d), (e) and (e') (the pool kicked every 1 ms), rotating which goes "
               "first: more repetitions of the observers' cost in the same time");
  CLI11_PARSE(app, argc, argv);
  const auto named = [&](const char* name) {
    return std::find(observer_names.begin(), observer_names.end(), name) != observer_names.end();
  };
  const ObserverSet attached{named("recorder"), named("csv"), named("tensorboard"),
                             named("progress_bar")};

  auto loader = bench::fashion_train_loader(batch_size);
  steps = std::min(steps, loader->num_batches());

  // Warm-up: allocator, BLAS threads, page faults.
  run_hand_written(loader, 100, seed, false);
  run_trainer(loader, 100, seed, 0);

  enum Run {
    kLoop,
    kLoopToNone,
    kTrainer,
    kTrainer10,
    kLogging,
    kObserved,
    kObservedKick1ms,
    kRuns
  };
  const char* names[kRuns] = {
      "(a) hand-written loop, optimizer.zero_grad()",
      "(a') hand-written loop, gradients set to none",
      "(b) Trainer, no callbacks",
      "(c) Trainer, 10 no-op callbacks on every hook",
      "(d) Trainer, module logging loss and accuracy (prog_bar), no observers",
      "(e) (d) with recorder, CSV, TensorBoard and progress bar",
      "(e') (e) with the pool kicked every 1 ms (observer_kick_interval; the default until "
      "2026-12-04)"};
  const char* goals[kRuns] = {"", "", "<= 1.02", "<= 1.05", "", "<= 1.02 x (d)", ""};
  std::vector<double> us[kRuns], ratio_a[kRuns], ratio_a2[kRuns];
  CostAgainstLogging observed_cost, kick1ms_cost;
  bool identical = true;
  const std::vector<int> order =
      pair_only ? std::vector<int>{kLogging, kObserved, kObservedKick1ms}
                : std::vector<int>{kLoop, kLoopToNone, kTrainer, kTrainer10, kLogging, kObserved};
  const int first_shown = order.front();
  const int last_shown = pair_only ? kRuns : kObservedKick1ms;  // one past
  for (int rep = 0; rep < reps; ++rep) {
    RunResult results[kRuns];
    for (std::size_t k = 0; k < order.size(); ++k) {
      const int run = order[(static_cast<std::size_t>(rep) + k) % order.size()];
      if (run == kLoop) results[run] = run_hand_written(loader, steps, seed, false);
      if (run == kLoopToNone) results[run] = run_hand_written(loader, steps, seed, true);
      if (run == kTrainer) results[run] = run_trainer(loader, steps, seed, 0);
      if (run == kTrainer10) results[run] = run_trainer(loader, steps, seed, 10);
      if (run == kLogging)
        results[run] = run_trainer(loader, steps, seed, 0, Observed::kLoggedOnly);
      if (run == kObserved) {
        results[run] = run_trainer(loader, steps, seed, 0, Observed::kFitObservers, attached);
      }
      if (run == kObservedKick1ms) {
        results[run] = run_trainer(loader, steps, seed, 0, Observed::kFitObservers, attached,
                                   std::chrono::milliseconds(1));
      }
    }
    observed_cost.add(results[kObserved], results[kLogging]);
    if (pair_only) kick1ms_cost.add(results[kObservedKick1ms], results[kLogging]);
    std::fprintf(stderr, "rep %d:", rep + 1);
    for (int run = first_shown; run < last_shown; ++run) {
      identical = identical && results[run].losses == results[first_shown].losses;
      us[run].push_back(results[run].median_step_us);
      std::fprintf(stderr, " %.1f us", results[run].median_step_us);
      if (run == kObserved || run == kObservedKick1ms) {
        std::fprintf(stderr, " (observer threads %.1f us CPU a step)",
                     results[run].observer_cpu_us_per_step);
      }
      if (pair_only) continue;
      ratio_a[run].push_back(results[run].median_step_us / results[kLoop].median_step_us);
      ratio_a2[run].push_back(results[run].median_step_us / results[kLoopToNone].median_step_us);
    }
    std::fprintf(stderr, "\n");
  }

  std::printf(
      "Trainer overhead per step: MLP 784-256-128-10, batch %lld, %lld steps x %d repetitions\n\n",
      static_cast<long long>(batch_size), static_cast<long long>(steps), reps);
  std::printf(
      "| run | median step (us) | ratio to (a) | ratio to (a') | goal (vs a') "
      "|\n|---|---:|---:|---:|---|\n");
  for (int run = first_shown; run < last_shown; ++run) {
    if (pair_only) {
      std::printf("| %s | %.1f | | | %s |\n", names[run], median(us[run]), goals[run]);
    } else {
      std::printf("| %s | %.1f | %.3f | %.3f | %s |\n", names[run], median(us[run]),
                  median(ratio_a[run]), median(ratio_a2[run]), goals[run]);
    }
  }
  std::string attached_list;
  for (const auto& name : observer_names)
    attached_list += (attached_list.empty() ? "" : ",") + name;
  std::printf(
      "\n(e) / (d), the cost of the observers (%s), median over repetitions of the ratio of mean "
      "steps: %.3f (goal <= 1.02); of median steps: %.3f\n",
      attached_list.c_str(), median(observed_cost.mean_steps), median(observed_cost.median_steps));
  std::printf(
      "the observers' threads ran %.2f%% of (d)'s mean step on the CPU (median), what they take "
      "from training where no core is spare\n",
      100 * median(observed_cost.cpu_share));
  if (pair_only) {
    std::printf(
        "(e') / (d), kicked every 1 ms: mean steps %.3f, median steps %.3f; its observers' "
        "threads ran %.2f%%\n",
        median(kick1ms_cost.mean_steps), median(kick1ms_cost.median_steps),
        100 * median(kick1ms_cost.cpu_share));
  }
  std::printf("losses of all runs identical step by step: %s\n", identical ? "yes" : "NO");
  return identical ? 0 : 1;
}
