// What a checkpoint costs the training thread, for a model of >= 100 MB of parameters, in one run:
//
// Part 1, one save of the full state (weights + SGD momentum) per training step, the cases
// rotated round by round, so that memory is as warm or cold as between the saves of a real run:
//   (a) trainer.save_checkpoint(path): synchronous, serialise + write + fsync + rename;
//   (b) trainer.save_checkpoint(path, SaveCheckpointOptions().async(true)) after
//   trainer.checkpoints().prepare() at the
//       batch's start, as ModelCheckpoint does: the time until it returns (the stall);
//   (b-) the same without preparing; the background write is reported beside them;
//   (c) memcpy of the same tensors into newly allocated memory;
//   (d) memcpy of the same tensors into memory touched right before (memory bandwidth).
//   Goals: (b) <= (a) / 10 and (b) <= 1.25 x (c) or (d).
//
// Part 2, a training run of `--steps` steps that checkpoints every `--every` steps
// (ModelCheckpoint, latest kept): none, async (the default), sync, and async without
// prepare_ahead, repeated in a rotated order; the wall time of each run, including its final wait
// for saves in flight, and the time on_train_batch_end takes at the steps that save (the stall as
// training sees it). Goals: async <= 1.05 x none, and its save-step stall <= 0.1 x sync's.
//
// Checkpoints go to --dir (default: ./bench-checkpoints, on the disk, not /tmp which may be tmpfs).
#include <sys/vfs.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>
#include <CLI/CLI.hpp>

#include "bench/bench_mlp.h"
#include "callbacks/model_checkpoint.h"
#include "checkpoint/writer.h"
#include "core/trainer.h"
#include "data/data_module.h"

namespace {

using namespace trainbus;
using bench::Clock;
using bench::median;
namespace fs = std::filesystem;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// An MLP 784 -> width (x hidden layers) -> 10 trained with SGD + momentum, so that the optimizer
/// state is as large as the weights.
class WideMlp : public Module {
 public:
  WideMlp(int64_t width, int hidden_layers) {
    namespace nn = torch::nn;
    net = register_module("net", nn::Sequential());
    net->push_back(nn::Linear(784, width));
    net->push_back(nn::ReLU());
    for (int i = 1; i < hidden_layers; ++i) {
      net->push_back(nn::Linear(width, width));
      net->push_back(nn::ReLU());
    }
    net->push_back(nn::Linear(width, 10));
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    return torch::nn::functional::cross_entropy(net->forward(batch.data), batch.target);
  }
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(),
                                               torch::optim::SGDOptions(1e-3).momentum(0.9));
  }
  // The module's hook runs after every callback's: the end of what ModelCheckpoint made it wait.
  void on_train_batch_end(const StepOutput&, const Batch&, int64_t) override {
    batch_end_hooks_done = Clock::now();
  }
  torch::nn::Sequential net{nullptr};
  Clock::time_point batch_end_hooks_done;
};

/// Part 2: how long the training thread spends in on_train_batch_end at the steps that save
/// (ModelCheckpoint runs last among the callbacks, and the module's hook after it).
class HookTimer : public Callback {
 public:
  HookTimer(const WideMlp& module, int64_t every) : module_(module), every_(every) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t) override {
    if (trainer.global_step() % every_ == 0) started_ = Clock::now();
  }
  void on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) override { take(); }
  void on_train_end(Trainer&, Module&) override { take(); }
  std::vector<double> save_step_hooks;

 private:
  void take() {
    if (!started_) return;
    save_step_hooks.push_back(
        std::chrono::duration<double>(module_.batch_end_hooks_done - *started_).count());
    started_.reset();
  }
  const WideMlp& module_;
  int64_t every_;
  std::optional<Clock::time_point> started_;
};

std::shared_ptr<DataLoader> random_loader(int64_t batches, int64_t batch_size) {
  torch::manual_seed(5);
  return std::make_shared<data::TensorDataLoader>(
      torch::rand({batches * batch_size, 784}), torch::randint(0, 10, {batches * batch_size}),
      data::DataLoaderOptions().batch_size(batch_size).shuffle(false).drop_last(false).seed(1));
}

/// The tensors a checkpoint copies: parameters, buffers and every optimizer state tensor.
std::vector<at::Tensor> state_tensors(Trainer& trainer, Module& module) {
  std::vector<at::Tensor> tensors;
  for (const auto& p : module.parameters()) tensors.push_back(p);
  for (const auto& b : module.buffers()) tensors.push_back(b);
  for (const auto& optimizer : trainer.optimizers()) {
    for (const auto& [key, state] : optimizer->state()) {
      if (auto* sgd = dynamic_cast<torch::optim::SGDParamState*>(state.get())) {
        if (sgd->momentum_buffer().defined()) tensors.push_back(sgd->momentum_buffer());
      }
    }
  }
  return tensors;
}

struct SaveTimes {
  // One vector per case, one entry per round; a round measures every case at neighbouring steps.
  std::vector<double> sync, prepared_stall, cold_stall, background, memcpy_fresh, memcpy_warm;
  std::vector<uint64_t> cold_fresh_copies;  // tensors a cold save copied into new memory
  std::size_t state_bytes = 0;
};

/// Measures one case per training step, from the second step on (momentum exists then), in
/// rounds of five steps whose order rotates: (a) a sync save, (b) an async save whose buffers were
/// prepared when its batch started, (b-) an async save without (the buffers of the last save, as
/// left), (c) a memcpy into new memory, (d) a memcpy into memory touched right before.
class SaveTimer : public Callback {
 public:
  static constexpr int kCases = 5;
  SaveTimer(std::string dir, int rounds) : dir_(std::move(dir)), rounds_(rounds) {}

  int case_at(int64_t batch_idx) const {
    const int64_t k = batch_idx - 1;
    return static_cast<int>((k / kCases + k % kCases) % kCases);
  }
  void on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t batch_idx) override {
    if (batch_idx >= 1 && case_at(batch_idx) == 1) trainer.checkpoints().prepare();
  }
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (batch_idx < 1 || batch_idx > static_cast<int64_t>(rounds_) * kCases) return;
    const std::vector<at::Tensor> tensors = state_tensors(trainer, module);
    if (times.state_bytes == 0) {
      for (const auto& t : tensors) {
        times.state_bytes += t.nbytes();
        warm_.emplace_back(new char[t.nbytes()]);
      }
    }
    switch (case_at(batch_idx)) {
      case 0: {
        const std::string path = dir_ + "/sync.ckpt";
        const auto start = Clock::now();
        trainer.save_checkpoint(path);
        times.sync.push_back(seconds_since(start));
        fs::remove_all(path);
        break;
      }
      case 1:
        times.prepared_stall.push_back(async_save(trainer));
        break;
      case 2: {
        const uint64_t fresh = trainer.checkpoints().writer()
                                   ? trainer.checkpoints().writer()->stats().fresh_copies
                                   : 0;
        times.cold_stall.push_back(async_save(trainer));
        times.cold_fresh_copies.push_back(trainer.checkpoints().writer()->stats().fresh_copies -
                                          fresh);
        break;
      }
      case 3: {
        const auto start = Clock::now();
        std::vector<std::unique_ptr<char[]>> copies;
        for (const auto& t : tensors) {
          copies.emplace_back(new char[t.nbytes()]);
          std::memcpy(copies.back().get(), t.data_ptr(), t.nbytes());
        }
        times.memcpy_fresh.push_back(seconds_since(start));
        break;
      }
      case 4: {
        for (size_t i = 0; i < tensors.size(); ++i)
          std::memset(warm_[i].get(), 1, tensors[i].nbytes());
        const auto start = Clock::now();
        for (size_t i = 0; i < tensors.size(); ++i)
          std::memcpy(warm_[i].get(), tensors[i].data_ptr(), tensors[i].nbytes());
        times.memcpy_warm.push_back(seconds_since(start));
        break;
      }
    }
  }
  SaveTimes times;

 private:
  // The time an async save takes to return; then waits for it, off the clock, and notes its write.
  double async_save(Trainer& trainer) {
    const std::string path = dir_ + "/async.ckpt";
    const auto start = Clock::now();
    trainer.save_checkpoint(path, SaveCheckpointOptions().async(true));
    const double stall = seconds_since(start);
    trainer.checkpoints().wait();
    times.background.push_back(trainer.checkpoints().writer()->stats().last_write_seconds);
    fs::remove_all(path);
    return stall;
  }

  std::string dir_;
  int rounds_;
  std::vector<std::unique_ptr<char[]>> warm_;
};

enum class Checkpointing { kNone, kAsync, kSync, kAsyncUnprepared };
constexpr int kModes = 4;

struct RunTimes {
  double seconds = 0;                     // wall time of fit()
  std::vector<double> save_stalls;        // on_train_batch_end at the steps that saved
  double write_cpu = 0, prepare_cpu = 0;  // background CPU seconds, all saves of the run
};

/// A run of `steps` steps, saving every `every` steps as asked, saves included.
RunTimes timed_run(Checkpointing mode, const std::shared_ptr<DataLoader>& loader, int64_t steps,
                   int64_t every, int64_t width, int layers, const std::string& dir) {
  torch::manual_seed(1);
  WideMlp module(width, layers);
  TrainerOptions options;
  options.max_epochs(1);
  options.enable_model_summary(false);  // no table in the benchmark's output
  // No default progress bar, and no default ModelCheckpoint in the baseline without saves.
  options.enable_progress_bar(false).enable_checkpointing(mode != Checkpointing::kNone);
  options.limit_train_batches(steps);
  options.num_sanity_val_steps(0);
  auto hooks = std::make_shared<HookTimer>(module, every);
  std::vector<std::shared_ptr<Callback>> callbacks{hooks};
  if (mode != Checkpointing::kNone) {
    callbacks::ModelCheckpointOptions checkpoint;
    checkpoint.dirpath(dir);
    checkpoint.every_n_train_steps(every);
    checkpoint.async(mode == Checkpointing::kAsync || mode == Checkpointing::kAsyncUnprepared);
    checkpoint.prepare_ahead(mode != Checkpointing::kAsyncUnprepared);
    callbacks.push_back(std::make_shared<callbacks::ModelCheckpoint>(checkpoint));
  }
  Trainer trainer(options, callbacks);
  data::LoaderDataModule data(loader);
  const auto start = Clock::now();
  trainer.fit(module, data);  // waits for the saves in flight before it returns
  RunTimes times{seconds_since(start), hooks->save_step_hooks};
  if (const checkpoint::CheckpointWriter* writer = trainer.checkpoints().writer()) {
    times.write_cpu = writer->stats().write_cpu_seconds;
    times.prepare_cpu = writer->stats().prepare_cpu_seconds;
  }
  fs::remove_all(dir);
  return times;
}

std::string filesystem_of(const std::string& dir) {
  struct statfs info {};
  if (::statfs(dir.c_str(), &info) != 0) return "unknown";
  switch (static_cast<unsigned long>(info.f_type)) {
    case 0x01021994:
      return "tmpfs (fsync is free: numbers are not a disk's)";
    case 0xEF53:
      return "ext2/3/4";
    case 0x58465342:
      return "xfs";
    case 0x9123683E:
      return "btrfs";
    case 0x794c7630:
      return "overlayfs";
    default: {
      char hex[32];
      std::snprintf(hex, sizeof hex, "f_type 0x%lx", static_cast<unsigned long>(info.f_type));
      return hex;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "trainbus benchmark: checkpoint save cost (sync, async stall, memcpy) and training with "
      "checkpoints"};
  std::string dir = "bench-checkpoints";
  int64_t width = 4096;
  int layers = 3;
  int reps = 5;
  int64_t steps = 60;
  int64_t every = 10;
  int64_t batch_size = 64;
  int run_reps = 3;
  app.add_option("--dir", dir, "Where checkpoints are written (removed after)");
  app.add_option("--width", width, "Hidden width of the MLP")
      ->check(CLI::Range(int64_t{16}, int64_t{16384}));
  app.add_option("--layers", layers, "Hidden layers of the MLP")->check(CLI::Range(1, 16));
  app.add_option("--reps", reps, "Repetitions of each single save (part 1)")
      ->check(CLI::Range(1, 100));
  app.add_option("--steps", steps, "Training steps per run (part 2)")
      ->check(CLI::Range(int64_t{2}, int64_t{100000}));
  app.add_option("--every", every, "Checkpoint every N steps (part 2)")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  app.add_option("--run-reps", run_reps,
                 "Repetitions of each training run (part 2); 0 skips part 2")
      ->check(CLI::Range(0, 100));
  app.add_option("--batch-size", batch_size, "Batch size (part 2)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  CLI11_PARSE(app, argc, argv);
  fs::create_directories(dir);
  dir = fs::canonical(dir).string();

  // Part 1.
  torch::manual_seed(1);
  WideMlp module(width, layers);
  auto timer = std::make_shared<SaveTimer>(dir + "/part1", reps);
  {
    const int64_t part1_steps = 1 + int64_t{reps} * SaveTimer::kCases;
    TrainerOptions options;
    options.max_epochs(1);
    options.enable_model_summary(false);  // no table in the benchmark's output
    options.enable_progress_bar(false).enable_checkpointing(false);  // it saves by itself
    options.limit_train_batches(part1_steps);
    options.num_sanity_val_steps(0);
    Trainer trainer(options, {timer});
    data::LoaderDataModule data(random_loader(part1_steps, batch_size));
    trainer.fit(module, data);
  }
  const SaveTimes& t = timer->times;
  // Each round's measurements are compared with each other (this VM's memory speed drifts by 10x
  // and more within minutes), and the medians of those ratios quoted. A cold save that had no
  // buffers to reuse (the first async save of a run, if it is one) is reported on its own.
  std::vector<double> sync_vs_warm, prepared_vs_sync, prepared_vs_fresh, prepared_vs_warm, cold,
      cold_vs_sync, cold_vs_fresh, cold_vs_warm;
  std::optional<double> first_cold;
  for (size_t i = 0; i < t.sync.size(); ++i) {
    sync_vs_warm.push_back(t.sync[i] / t.memcpy_warm[i]);
    prepared_vs_sync.push_back(t.prepared_stall[i] / t.sync[i]);
    prepared_vs_fresh.push_back(t.prepared_stall[i] / t.memcpy_fresh[i]);
    prepared_vs_warm.push_back(t.prepared_stall[i] / t.memcpy_warm[i]);
    if (t.cold_fresh_copies[i] > 0) {
      first_cold = t.cold_stall[i];
      continue;
    }
    cold.push_back(t.cold_stall[i]);
    cold_vs_sync.push_back(t.cold_stall[i] / t.sync[i]);
    cold_vs_fresh.push_back(t.cold_stall[i] / t.memcpy_fresh[i]);
    cold_vs_warm.push_back(t.cold_stall[i] / t.memcpy_warm[i]);
  }
  const double mb = static_cast<double>(t.state_bytes) / 1e6;
  std::printf(
      "Checkpoint of MLP 784-%lldx%d-10 + SGD momentum: %.0f MB of tensors (%.0f MB of "
      "parameters), "
      "written to %s (%s); %d rounds, one case per training step (batch %lld)\n\n",
      static_cast<long long>(width), layers, mb, mb / 2, dir.c_str(), filesystem_of(dir).c_str(),
      reps, static_cast<long long>(batch_size));
  std::printf(
      "| what the training thread waits for | median (ms) | vs (a) | vs (c) | vs (d) | goal |\n"
      "|---|---:|---:|---:|---:|---|\n");
  std::printf(
      "| (a) synchronous save: serialise + write + fsync + rename | %.1f | 1 | | %.2f | |\n",
      median(t.sync) * 1e3, median(sync_vs_warm));
  std::printf(
      "| (b) asynchronous save, the stall (buffers prepared when the batch started, as "
      "ModelCheckpoint "
      "does) | %.1f | %.3f | %.3f | %.2f | <= 0.1 (a), <= 1.25 (c) or (d) |\n",
      median(t.prepared_stall) * 1e3, median(prepared_vs_sync), median(prepared_vs_fresh),
      median(prepared_vs_warm));
  if (!cold.empty()) {
    std::printf(
        "| (b-) asynchronous save without preparing (the last save's buffers, as left) | %.1f | "
        "%.3f | %.3f | "
        "%.2f | |\n",
        median(cold) * 1e3, median(cold_vs_sync), median(cold_vs_fresh), median(cold_vs_warm));
  }
  if (first_cold)
    std::printf("| (b0) (b-) with no buffers yet | %.1f | | | | |\n", *first_cold * 1e3);
  std::printf(
      "| (b') the background write of (b) and (b-), off the training thread | %.1f | | | | |\n",
      median(t.background) * 1e3);
  std::printf("| (c) memcpy into new memory | %.1f | | 1 | | |\n", median(t.memcpy_fresh) * 1e3);
  std::printf("| (d) memcpy into memory touched right before | %.1f | | | 1 | |\n",
              median(t.memcpy_warm) * 1e3);
  auto print_raw = [](const char* name, const std::vector<double>& values) {
    std::printf("%s", name);
    for (double v : values) std::printf(" %.0f", v * 1e3);
    std::printf(";");
  };
  std::printf("\nraw (ms):");
  print_raw(" sync", t.sync);
  print_raw(" prepared stall", t.prepared_stall);
  print_raw(" unprepared stall", t.cold_stall);
  print_raw(" memcpy new", t.memcpy_fresh);
  print_raw(" memcpy touched", t.memcpy_warm);
  std::printf("\n");
  if (run_reps == 0) return 0;

  // Part 2.
  auto loader = random_loader(steps, batch_size);
  (void)timed_run(Checkpointing::kNone, loader, std::min<int64_t>(steps, 5), every, width, layers,
                  dir + "/warmup");
  const char* names[kModes] = {"no checkpoints", "async checkpoints (default)", "sync checkpoints",
                               "async, without prepare_ahead"};
  std::vector<double> secs[kModes], ratio[kModes], stalls[kModes], write_cpu[kModes],
      prepare_cpu[kModes];
  for (int rep = 0; rep < run_reps; ++rep) {
    RunTimes run[kModes];
    for (int k = 0; k < kModes; ++k) {
      const int which = (rep + k) % kModes;
      run[which] = timed_run(static_cast<Checkpointing>(which), loader, steps, every, width, layers,
                             dir + "/part2");
    }
    std::fprintf(stderr,
                 "rep %d: none %.2f s, async %.2f s, sync %.2f s, async unprepared %.2f s\n",
                 rep + 1, run[0].seconds, run[1].seconds, run[2].seconds, run[3].seconds);
    for (int which = 0; which < kModes; ++which) {
      secs[which].push_back(run[which].seconds);
      ratio[which].push_back(run[which].seconds / run[0].seconds);
      stalls[which].insert(stalls[which].end(), run[which].save_stalls.begin(),
                           run[which].save_stalls.end());
      write_cpu[which].push_back(run[which].write_cpu);
      prepare_cpu[which].push_back(run[which].prepare_cpu);
    }
  }
  std::printf(
      "\nTraining %lld steps (batch %lld), a checkpoint every %lld steps; median of %d runs. The "
      "save-step hook is on_train_batch_end at the steps that save, median over all runs\n\n",
      static_cast<long long>(steps), static_cast<long long>(batch_size),
      static_cast<long long>(every), run_reps);
  std::printf(
      "| run | wall time (s) | per step (ms) | vs no checkpoints | save-step hook (ms) | "
      "background CPU "
      "(s): write + prepare | goal |\n|---|---:|---:|---:|---:|---:|---|\n");
  const char* goals[kModes] = {"", "<= 1.05", "", ""};
  for (int which = 0; which < kModes; ++which) {
    std::printf("| %s | %.2f | %.1f | %.3f | %.1f | %.2f + %.2f | %s |\n", names[which],
                median(secs[which]), median(secs[which]) * 1e3 / static_cast<double>(steps),
                median(ratio[which]), median(stalls[which]) * 1e3, median(write_cpu[which]),
                median(prepare_cpu[which]), goals[which]);
  }
  std::printf("\nasync save-step hook vs sync: %.3f (goal <= 0.1); without prepare_ahead: %.3f\n",
              median(stalls[1]) / median(stalls[2]), median(stalls[3]) / median(stalls[2]));
  std::printf("raw save-step hooks (ms):");
  for (int which = 1; which < kModes; ++which) {
    std::printf(" %s", names[which]);
    for (double v : stalls[which]) std::printf(" %.0f", v * 1e3);
    std::printf(";");
  }
  std::printf("\n");
  return 0;
}
