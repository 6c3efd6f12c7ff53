// Data-parallel training on this machine: samples per second of one process against two DDP ranks
// (Gloo over loopback), for the main job's MLP and for a larger one where compute dominates.
// Every case runs `--steps` training steps of Trainer::fit on Fashion-MNIST in fresh processes
// (this program started again per rank), interleaved per repetition; quoted: medians over
// repetitions of each case's median and mean step. Samples per second = samples of one step over
// all ranks / mean step (the run's throughput: a stall on a few steps counts). Each rank times its
// backward (under DDP with the gradients' all-reduce in it), and after the fit an all-reduce of
// its gradients' bytes. Each process runs on CPUs of its own, as `trainbus fit --nproc-per-node`
// binds its ranks, unless the case says not. Two cases bound the DDP cases: two processes
// training side by side without communicating, started together at their first step, their
// rates added up (what a second core can give at most), and a hand-written LibTorch + c10d loop
// (what DDP costs without the framework).
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <CLI/CLI.hpp>

#include "bench/bench_mlp.h"
#include "bench/raw_ddp_loop.h"
#include "core/trainer.h"
#include "data/data_module.h"
#include "distributed/cpu_binding.h"
#include "distributed/ddp_strategy.h"

namespace {

using namespace trainbus;
using bench::Clock;

// How the processes of a case train.
enum class Kind {
  kTrainer,      // Trainer::fit; with several ranks, on DDPStrategy
  kIndependent,  // Trainer::fit alone in each process, side by side: no communication, the ceiling
  kRawLoop,      // a hand-written LibTorch + c10d loop (raw_ddp_loop.h): the baseline
};

struct Case {
  std::string name;
  int ranks = 1;
  int threads_per_rank = 1;
  int64_t batch_per_rank = 64;
  bool fp16_gradients = false;
  Kind kind = Kind::kTrainer;
  bool stop_agreement_every_batch = true;
  // Gradients averaged (and the optimizer stepping) on every this-many-th batch only; its ratio
  // is against one process accumulating alike, which also steps less often.
  int64_t accumulate_grad_batches = 1;
  // DDPOptions::gloo_event_loop_nice (19, the default); 0: Gloo's loop as PyTorch leaves it.
  int gloo_event_loop_nice = 19;
  // Each process on CPUs of its own, as `trainbus fit --nproc-per-node` binds its ranks
  // (LaunchOptions::bind_cpus); false: the kernel moves them (--no-cpu-binding).
  bool bind_cpus = true;
  bool gradient_as_bucket_view = false;  // DDPOptions::gradient_as_bucket_view
  // With fp16_gradients: LibTorch's float16 all-reduce (kFp16AllReduce) instead of kFp16 (on
  // Gloo, trainbus's all-gather summed in float32).
  bool fp16_all_reduce = false;
};

// The large MLP: 784-2048-2048-10, about 5.8M parameters.
class LargeMlp : public bench::BenchMlp {
 public:
  LargeMlp() {
    namespace nn = torch::nn;
    net = replace_module("net",
                         nn::Sequential(nn::Flatten(), nn::Linear(784, 2048), nn::ReLU(),
                                        nn::Linear(2048, 2048), nn::ReLU(), nn::Linear(2048, 10)));
  }
};

// Steps left out of the mean: the first ones allocate and warm caches (and thread pools).
constexpr size_t kWarmUpSteps = 20;

struct RankResult {
  double median_step_us = 0;
  double mean_step_us = 0;  // what samples per second come from: stalls on a few steps count
  double allreduce_us = 0;
  double scalar_allreduce_us = 0;  // one value: the per-batch stop agreement
  // Median backward, from on_before_backward to on_after_backward: under DDP it holds the
  // gradients' all-reduce (and the wait for the other rank), so against one process's backward
  // it tells what the all-reduce costs a step in training, where the idle one above does not.
  double backward_us = 0;
  // CPU time a step (after the warm-up), of the training thread and of the process's other
  // threads (under DDP: c10d's workers and Gloo's event loop, which move the all-reduce's bytes).
  // With one CPU a rank, their sum against the mean step says whether the CPU waited or worked.
  double training_thread_cpu_us = 0;
  double other_threads_cpu_us = 0;
  // DDPStatistics at the end: the Reducer's buckets after its rebuild, and the time its
  // all-reduces ran beside backward's compute, averaged over the steps it sampled.
  double buckets = 0;
  double overlap_us = 0;

  // One line of numbers, which a rank writes and the bench reads back.
  void write(const std::string& path) const {
    std::ofstream(path) << median_step_us << " " << mean_step_us << " " << allreduce_us << " "
                        << scalar_allreduce_us << " " << backward_us << " "
                        << training_thread_cpu_us << " " << other_threads_cpu_us << " " << buckets
                        << " " << overlap_us << "\n";
  }
  static RankResult read(const std::string& path) {
    RankResult result;
    std::ifstream(path) >> result.median_step_us >> result.mean_step_us >> result.allreduce_us >>
        result.scalar_allreduce_us >> result.backward_us >> result.training_thread_cpu_us >>
        result.other_threads_cpu_us >> result.buckets >> result.overlap_us;
    return result;
  }
};

// Times every backward (RankResult::backward_us).
class BackwardTimer : public Callback {
 public:
  void on_before_backward(Trainer&, Module&, const at::Tensor&) override { start_ = Clock::now(); }
  void on_after_backward(Trainer&, Module&) override {
    times_.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start_).count());
  }
  double median_us() const { return times_.empty() ? 0.0 : bench::median(times_); }

 private:
  Clock::time_point start_;
  std::vector<double> times_;
};

// CPU time of the training thread and of the whole process from the first batch after the
// warm-up to the end of training (RankResult::training_thread_cpu_us, other_threads_cpu_us).
class CpuTimer : public Callback {
 public:
  void on_train_batch_start(Trainer&, Module&, const Batch&, int64_t batch_idx) override {
    if (static_cast<size_t>(batch_idx) != kWarmUpSteps) return;
    first_batch_ = batch_idx;
    thread_start_ = cpu_us(CLOCK_THREAD_CPUTIME_ID);
    process_start_ = cpu_us(CLOCK_PROCESS_CPUTIME_ID);
  }
  void on_train_batch_end(Trainer&, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    last_batch_ = batch_idx;
  }
  void on_train_end(Trainer&, Module&) override {
    thread_end_ = cpu_us(CLOCK_THREAD_CPUTIME_ID);
    process_end_ = cpu_us(CLOCK_PROCESS_CPUTIME_ID);
  }
  // Per step; zeros where training ended before the warm-up did.
  void write_into(RankResult& result) const {
    if (first_batch_ < 0 || last_batch_ < first_batch_) return;
    const auto steps = static_cast<double>(last_batch_ - first_batch_ + 1);
    result.training_thread_cpu_us = (thread_end_ - thread_start_) / steps;
    // Clocks of different granularity: a process without other threads may read a hair below.
    result.other_threads_cpu_us =
        std::max(0.0, ((process_end_ - process_start_) - (thread_end_ - thread_start_)) / steps);
  }

 private:
  static double cpu_us(clockid_t clock) {
    timespec now{};
    ::clock_gettime(clock, &now);
    return static_cast<double>(now.tv_sec) * 1e6 + static_cast<double>(now.tv_nsec) / 1e3;
  }
  int64_t first_batch_ = -1;
  int64_t last_batch_ = -1;
  double thread_start_ = 0, process_start_ = 0, thread_end_ = 0, process_end_ = 0;
};

// Median of 21 all-reduces of `count` doubles, in microseconds.
double time_all_reduce(distributed::Strategy& strategy, size_t count) {
  std::vector<double> values(count, 1.0);
  std::vector<double> times;
  for (int i = 0; i < 21; ++i) {
    const auto start = Clock::now();
    strategy.all_reduce(values, distributed::ReduceOp::kSum);
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  }
  return bench::median(times);
}

// One rank (or the single process) of a case; writes "median_step_us mean_step_us allreduce_us
// scalar_allreduce_us" to `out` unless `out` is empty.
// Side by side (Kind::kIndependent): every process waits at its first training step until all
// `count` have reached theirs, so that they train at the same time, not one after the other.
class StartTogether : public Callback {
 public:
  StartTogether(std::string prefix, int index, int count)
      : prefix_(std::move(prefix)), index_(index), count_(count) {}
  void on_train_start(Trainer&, Module&) override {
    std::ofstream(prefix_ + ".ready" + std::to_string(index_)).put('1');
    for (int other = 0; other < count_; ++other) {
      while (!std::filesystem::exists(prefix_ + ".ready" + std::to_string(other)))
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

 private:
  std::string prefix_;
  int index_;
  int count_;
};

// One rank of `c` (its kind and settings; not its name, ranks or threads).
int run_rank(const std::string& model, const Case& c, int64_t steps, int side_by_side_index,
             int side_by_side_count, const std::string& out) {
  const int64_t batch = c.batch_per_rank;
  torch::manual_seed(0);
  std::unique_ptr<bench::BenchMlp> module =
      model == "large" ? std::make_unique<LargeMlp>() : std::make_unique<bench::BenchMlp>();
  module->log_metrics = true;  // as the main job's module: train_loss and train_acc every step
  if (c.kind == Kind::kRawLoop) {
    const auto environment = distributed::environment_from_variables();
    bench::run_raw_ddp_loop(*module, *bench::fashion_train_loader(batch), steps, environment);
    if (environment.rank == 0) {
      RankResult result;
      result.median_step_us = module->median_step_us();
      result.mean_step_us = module->mean_step_us(kWarmUpSteps);
      result.write(out);
    }
    return 0;
  }
  TrainerOptions options;
  options.max_epochs(1).enable_model_summary(false).num_sanity_val_steps(0);
  options.enable_progress_bar(false).enable_checkpointing(false);
  options.limit_train_batches(steps).accumulate_grad_batches(c.accumulate_grad_batches);
  std::shared_ptr<distributed::DDPStrategy> strategy;
  if (distributed::environment_from_variables().distributed()) {
    strategy = std::make_shared<distributed::DDPStrategy>(
        distributed::environment_from_variables(),
        distributed::DDPOptions()
            .gradient_compression(
                !c.fp16_gradients   ? distributed::DDPOptions::GradientCompression::kNone
                : c.fp16_all_reduce ? distributed::DDPOptions::GradientCompression::kFp16AllReduce
                                    : distributed::DDPOptions::GradientCompression::kFp16)
            .stop_agreement_every_batch(c.stop_agreement_every_batch)
            .gradient_as_bucket_view(c.gradient_as_bucket_view)
            .gloo_event_loop_nice(c.gloo_event_loop_nice));
    options.strategy(strategy);
  }
  const auto backward_timer = std::make_shared<BackwardTimer>();
  const auto cpu_timer = std::make_shared<CpuTimer>();
  std::vector<std::shared_ptr<Callback>> callbacks{backward_timer, cpu_timer};
  if (side_by_side_count > 1) {
    // `out` is the shared prefix with ".<index>" after it (run_case).
    const std::string prefix = out.substr(0, out.rfind('.'));
    callbacks.push_back(
        std::make_shared<StartTogether>(prefix, side_by_side_index, side_by_side_count));
  }
  Trainer trainer(options, callbacks);
  data::LoaderDataModule data(bench::fashion_train_loader(batch));
  trainer.fit(*module, data);
  RankResult result;
  result.median_step_us = module->median_step_us();
  result.mean_step_us = module->mean_step_us(kWarmUpSteps);
  result.backward_us = backward_timer->median_us();
  cpu_timer->write_into(result);
  if (strategy) {
    int64_t parameters = 0;
    for (const auto& parameter : module->parameters()) parameters += parameter.numel();
    // float gradients: as many bytes as half as many doubles
    result.allreduce_us = time_all_reduce(*strategy, static_cast<size_t>(parameters / 2));
    result.scalar_allreduce_us = time_all_reduce(*strategy, 1);
    result.buckets = static_cast<double>(strategy->statistics().buckets);
    result.overlap_us =
        static_cast<double>(strategy->statistics().backward_compute_comm_overlap_ns) / 1e3;
  }
  if (!out.empty() && (strategy == nullptr || strategy->is_global_zero())) {
    result.write(out);
  }
  return 0;
}

// Runs `c` in fresh processes; rank 0's result.
RankResult run_case(const Case& c, const std::string& model, int64_t steps, int port,
                    const std::string& out) {
  std::vector<pid_t> children;
  // As the launcher shares out CPUs (LaunchOptions::bind_cpus).
  std::vector<std::vector<int>> bindings;
  try {
    if (c.bind_cpus) {
      bindings = distributed::cpus_for_local_ranks(
          distributed::cpus_by_core(distributed::cpus_to_share().cpus), c.ranks);
    }
  } catch (const std::system_error&) {  // as the launcher: the ranks run unbound
  }
  for (int rank = 0; rank < c.ranks; ++rank) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("OMP_NUM_THREADS", std::to_string(c.threads_per_rank).c_str(), 1);
      if (!bindings.empty()) {
        try {
          distributed::bind_calling_thread_to(bindings[static_cast<size_t>(rank)]);
        } catch (const std::system_error&) {  // as the launcher: the rank runs unbound
        }
      }
      if (c.ranks > 1 && c.kind != Kind::kIndependent) {
        ::setenv("RANK", std::to_string(rank).c_str(), 1);
        ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
        ::setenv("WORLD_SIZE", std::to_string(c.ranks).c_str(), 1);
        ::setenv("MASTER_ADDR", "127.0.0.1", 1);
        ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      }
      const std::string batch = std::to_string(c.batch_per_rank);
      const std::string step_count = std::to_string(steps);
      const std::string accumulate = std::to_string(c.accumulate_grad_batches);
      const std::string loop_nice = std::to_string(c.gloo_event_loop_nice);
      // Side by side, every process reports in a file of its own; with ranks, rank 0 does.
      const bool side_by_side = c.kind == Kind::kIndependent;
      const std::string result_file = side_by_side ? out + "." + std::to_string(rank) : out;
      const std::string index = std::to_string(side_by_side ? rank : 0);
      const std::string count = std::to_string(side_by_side ? c.ranks : 1);
      ::execl("/proc/self/exe", "bench_ddp", "--rank-child", "--model", model.c_str(), "--batch",
              batch.c_str(), "--steps", step_count.c_str(), "--out", result_file.c_str(),
              "--side-by-side-index", index.c_str(), "--side-by-side-count", count.c_str(),
              c.fp16_gradients ? "--fp16" : "--no-fp16",
              c.fp16_all_reduce ? "--fp16-all-reduce" : "--no-fp16-all-reduce",
              c.kind == Kind::kRawLoop ? "--raw-loop" : "--no-raw-loop",
              c.stop_agreement_every_batch ? "--stop-agreement" : "--no-stop-agreement",
              "--loop-nice", loop_nice.c_str(), "--accumulate", accumulate.c_str(),
              c.gradient_as_bucket_view ? "--bucket-view" : "--no-bucket-view", nullptr);
      std::_Exit(127);
    }
    children.push_back(pid);
  }
  bool failed = false;
  for (pid_t child : children) {
    int status = 0;
    while (::waitpid(child, &status, 0) < 0) {
    }
    failed = failed || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  if (failed) throw std::runtime_error("case '" + c.name + "' failed");
  if (c.kind != Kind::kIndependent) return RankResult::read(out);
  RankResult result;
  // Side by side: the processes' rates add up; the mean step that gives their sum at
  // batch_per_rank x ranks samples a step is the harmonic mean of their mean steps.
  double steps_per_us = 0.0;
  for (int process = 0; process < c.ranks; ++process) {
    const std::string file = out + "." + std::to_string(process);
    const RankResult own = RankResult::read(file);
    if (process == 0) {
      result.median_step_us = own.median_step_us;
      result.backward_us = own.backward_us;
      result.training_thread_cpu_us = own.training_thread_cpu_us;
      result.other_threads_cpu_us = own.other_threads_cpu_us;
    }
    steps_per_us += 1.0 / own.mean_step_us;
    std::filesystem::remove(file);
    std::filesystem::remove(out + ".ready" + std::to_string(process));
  }
  result.mean_step_us = c.ranks / steps_per_us;
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Samples per second of one process against two DDP ranks on this machine"};
  int reps = 3;
  int64_t steps = 200;
  std::string model = "mlp";
  bool rank_child = false;
  std::string out;
  app.add_option("--reps", reps, "repetitions of every case")->capture_default_str();
  std::vector<std::string> only;
  app.add_option("--only", only,
                 "run only the cases whose name contains this text (repeatable), and the "
                 "1-process cases the ratios are against");
  app.add_option("--steps", steps,
                 "training steps per run (the first " + std::to_string(kWarmUpSteps) +
                     " are left out of the mean)")
      ->check(CLI::Range(static_cast<int64_t>(2 * kWarmUpSteps + 2), int64_t{10000000}))
      ->capture_default_str();
  app.add_option("--model", model, "mlp (784-256-128-10) or large (784-2048-2048-10)")
      ->check(CLI::IsMember({"mlp", "large"}))
      ->capture_default_str();
  app.add_flag("--rank-child", rank_child)->group("");  // internal: one rank of a case
  Case child;                                           // the case a --rank-child runs
  app.add_option("--batch", child.batch_per_rank)->group("");
  app.add_option("--out", out)->group("");
  app.add_flag("--fp16,!--no-fp16", child.fp16_gradients)->group("");
  app.add_flag("--fp16-all-reduce,!--no-fp16-all-reduce", child.fp16_all_reduce)->group("");
  bool raw_loop = false;
  app.add_flag("--raw-loop,!--no-raw-loop", raw_loop)->group("");
  app.add_flag("--stop-agreement,!--no-stop-agreement", child.stop_agreement_every_batch)
      ->group("");
  app.add_option("--loop-nice", child.gloo_event_loop_nice)->group("");
  app.add_option("--accumulate", child.accumulate_grad_batches)->group("");
  app.add_flag("--bucket-view,!--no-bucket-view", child.gradient_as_bucket_view)->group("");
  int side_by_side_index = 0;
  int side_by_side_count = 1;
  app.add_option("--side-by-side-index", side_by_side_index)->group("");
  app.add_option("--side-by-side-count", side_by_side_count)->group("");
  CLI11_PARSE(app, argc, argv);
  if (rank_child) {
    if (raw_loop) child.kind = Kind::kRawLoop;
    return run_rank(model, child, steps, side_by_side_index, side_by_side_count, out);
  }

  std::vector<Case> cases{
      {"1 process, 2 threads, batch 64", 1, 2, 64},
      {"1 process, 1 thread, batch 64", 1, 1, 64},
      {"2 ranks x 1 thread, batch 32 each (global 64)", 2, 1, 32},
      {"2 ranks x 1 thread, batch 64 each (global 128)", 2, 1, 64},
      {"2 ranks x 1 thread, batch 64 each, fp16 gradients", 2, 1, 64, true},
      {"2 ranks x 1 thread, batch 64 each, fp16 gradients by LibTorch's float16 all-reduce "
       "(kFp16AllReduce)",
       2, 1, 64, true, Kind::kTrainer, true, 1, 19, true, false, true},
      {"2 ranks x 1 thread, batch 64 each, stops agreed at validation and epoch ends only", 2, 1,
       64, false, Kind::kTrainer, false},
      {"2 ranks x 1 thread, batch 64 each, Gloo's event loop at normal priority (as PyTorch's)", 2,
       1, 64, false, Kind::kTrainer, true, 1, 0},
      {"2 ranks x 1 thread, batch 64 each, stops agreed at validation and epoch ends only, "
       "gradient_as_bucket_view",
       2, 1, 64, false, Kind::kTrainer, false, 1, 19, true, true},
      {"2 ranks x 1 thread, batch 64 each, not bound to CPUs (--no-cpu-binding)", 2, 1, 64, false,
       Kind::kTrainer, true, 1, 19, false},
      {"2 ranks x 1 thread, batch 64 each, stops agreed at validation and epoch ends only, not "
       "bound to CPUs",
       2, 1, 64, false, Kind::kTrainer, false, 1, 19, false},
      {"2 processes x 1 thread, batch 64 each, side by side, no communication (the ceiling)", 2, 1,
       64, false, Kind::kIndependent},
      {"raw LibTorch + c10d loop, 2 ranks x 1 thread, batch 64 each (the baseline)", 2, 1, 64,
       false, Kind::kRawLoop},
      // Fewer all-reduces: what a user can trade (a 4x larger effective batch) for the second core.
      {"1 process, 1 thread, batch 64, accumulate_grad_batches 4", 1, 1, 64, false, Kind::kTrainer,
       true, 4},
      {"2 ranks x 1 thread, batch 64 each, accumulate_grad_batches 4, stops agreed at validation "
       "and epoch ends only",
       2, 1, 64, false, Kind::kTrainer, false, 4},
  };
  if (!only.empty()) {
    cases.erase(std::remove_if(cases.begin(), cases.end(),
                               [&](const Case& c) {
                                 return c.ranks != 1 &&
                                        std::none_of(
                                            only.begin(), only.end(), [&](const std::string& text) {
                                              return c.name.find(text) != std::string::npos;
                                            });
                               }),
                cases.end());
  }
  const std::string out_file =
      (std::filesystem::temp_directory_path() / ("bench_ddp." + std::to_string(::getpid())))
          .string();
  std::map<std::string, std::vector<double>> step_us, mean_step_us, allreduce_us, scalar_us,
      backward_us, training_cpu_us, other_cpu_us, buckets, overlap_us;
  int port = 29700 + static_cast<int>(::getpid() % 200);
  for (int rep = 0; rep < reps; ++rep) {
    for (size_t i = 0; i < cases.size(); ++i) {
      const Case& c = cases[(i + static_cast<size_t>(rep)) % cases.size()];  // rotate the order
      const RankResult result = run_case(c, model, steps, port++, out_file);
      step_us[c.name].push_back(result.median_step_us);
      mean_step_us[c.name].push_back(result.mean_step_us);
      allreduce_us[c.name].push_back(result.allreduce_us);
      scalar_us[c.name].push_back(result.scalar_allreduce_us);
      backward_us[c.name].push_back(result.backward_us);
      training_cpu_us[c.name].push_back(result.training_thread_cpu_us);
      other_cpu_us[c.name].push_back(result.other_threads_cpu_us);
      buckets[c.name].push_back(result.buckets);
      overlap_us[c.name].push_back(result.overlap_us);
    }
  }
  std::filesystem::remove(out_file);

  // The baseline is one process at its best: of its cases (1 or 2 threads) with the same
  // accumulate_grad_batches, the faster here.
  std::map<int64_t, double> baseline_rate;  // by accumulate_grad_batches
  for (const Case& c : cases) {
    if (c.ranks == 1) {
      double& rate = baseline_rate[c.accumulate_grad_batches];
      rate = std::max(
          rate, static_cast<double>(c.batch_per_rank) * 1e6 / bench::median(mean_step_us[c.name]));
    }
  }
  std::printf("model: %s, %lld steps per run, %d repetitions, %u hardware threads\n\n",
              model.c_str(), static_cast<long long>(steps), reps,
              std::thread::hardware_concurrency());
  std::printf(
      "| case | median step (ms) | mean step (ms) | samples/s | vs 1 process (its faster case, "
      "same accumulation) | median backward, under DDP with the gradients' all-reduce (ms) | "
      "all-reduce of the gradients, idle (ms) | all-reduce of one value, idle (ms) | CPU a step: "
      "training thread (ms) | CPU a step: other threads, under DDP Gloo's (ms) | gradient "
      "buckets (all-reduces beside backward's compute, ms) |\n"
      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const Case& c : cases) {
    const double step = bench::median(step_us[c.name]);
    const double mean_step = bench::median(mean_step_us[c.name]);
    const double rate = static_cast<double>(c.batch_per_rank * c.ranks) * 1e6 / mean_step;
    const double reduce = bench::median(allreduce_us[c.name]);
    const double scalar = bench::median(scalar_us[c.name]);
    const double backward = bench::median(backward_us[c.name]);
    const double training_cpu = bench::median(training_cpu_us[c.name]);
    const double other_cpu = bench::median(other_cpu_us[c.name]);
    const bool trainer = c.kind != Kind::kRawLoop;
    const bool ddp = c.kind == Kind::kTrainer && c.ranks > 1;
    char bucket_text[64] = "-";
    if (ddp) {
      std::snprintf(bucket_text, sizeof bucket_text, "%.0f (%.3f)", bench::median(buckets[c.name]),
                    bench::median(overlap_us[c.name]) / 1000);
    }
    std::printf(
        "| %s | %.3f | %.3f | %.0f | %.2fx | %s | %s | %s | %s | %s | %s |\n", c.name.c_str(),
        step / 1000, mean_step / 1000, rate, rate / baseline_rate.at(c.accumulate_grad_batches),
        c.kind == Kind::kRawLoop ? "-" : std::to_string(backward / 1000).substr(0, 5).c_str(),
        c.kind == Kind::kTrainer && c.ranks > 1 ? std::to_string(reduce / 1000).substr(0, 5).c_str()
                                                : "-",
        c.kind == Kind::kTrainer && c.ranks > 1 ? std::to_string(scalar / 1000).substr(0, 5).c_str()
                                                : "-",
        trainer ? std::to_string(training_cpu / 1000).substr(0, 5).c_str() : "-",
        trainer ? std::to_string(other_cpu / 1000).substr(0, 5).c_str() : "-", bucket_text);
  }
  return 0;
}
