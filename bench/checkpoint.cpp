// What a checkpoint costs the training thread, for a model of >= 100 MB of parameters, in one run:
//
// Part 1, one save of the full state (weights + SGD momentum), repeated in a rotated order:
//   (a) trainer.save_checkpoint(path): synchronous, serialise + write + fsync + rename;
//   (b) trainer.save_checkpoint(path, {.async = true}): the time until it returns (the stall);
//       the background write that follows is reported beside it;
//   (c) memcpy of the same tensors into freshly allocated buffers (what any copy must do);
//   (d) memcpy of the same tensors into buffers already allocated and touched (memory bandwidth).
//   Goals: (b) <= (a) / 10 and (b) <= 1.25 x (c).
//
// Part 2, a training run of `--steps` steps that checkpoints every `--every` steps
// (ModelCheckpoint, latest kept): none, async (the default) and sync, repeated in a rotated order;
// the wall time of each run, including its final wait for saves in flight. Goal: async <= 1.05 x none.
//
// Checkpoints go to --dir (default: ./bench-checkpoints, on the disk, not /tmp which may be tmpfs).
#include <sys/vfs.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include <CLI/CLI.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <torch/utils.h>

#include "bench/bench_mlp.h"
#include "core/checkpoint_writer.h"
#include "core/data_module.h"
#include "core/trainer.h"
#include "observers/model_checkpoint.h"

namespace {

using namespace trainbus;
using bench::Clock;
using bench::median;
namespace fs = std::filesystem;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

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
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
  }
  torch::nn::Sequential net{nullptr};
};

std::shared_ptr<DataLoader> random_loader(int64_t batches, int64_t batch_size) {
  torch::manual_seed(5);
  return std::make_shared<TensorDataLoader>(torch::rand({batches * batch_size, 784}),
                                            torch::randint(0, 10, {batches * batch_size}),
                                            DataLoaderOptions{batch_size, false, false, 1});
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
  std::vector<double> sync, async_stall, async_background, memcpy_fresh, memcpy_warm;
  std::vector<double> reusable_mb;  // snapshot buffers kept for reuse when each async save started
  std::size_t state_bytes = 0;
};

/// After the first training step (so momentum exists), measures (a)-(d) `reps` times.
class SaveTimer : public Callback {
 public:
  SaveTimer(std::string dir, int reps) : dir_(std::move(dir)), reps_(reps) {}
  void on_train_batch_end(Trainer& trainer, Module& module, const StepOutput&, const Batch&, int64_t batch_idx) override {
    if (batch_idx != 1) return;
    const std::vector<at::Tensor> tensors = state_tensors(trainer, module);
    for (const auto& t : tensors) times.state_bytes += t.nbytes();
    std::vector<std::unique_ptr<char[]>> warm;
    for (const auto& t : tensors) {
      warm.emplace_back(new char[t.nbytes()]);
      std::memset(warm.back().get(), 1, t.nbytes());
    }
    for (int rep = 0; rep < reps_; ++rep) {
      for (int k = 0; k < 4; ++k) {
        switch ((rep + k) % 4) {
          case 0: {
            const std::string path = dir_ + "/sync.ckpt";
            const auto start = Clock::now();
            trainer.save_checkpoint(path);
            times.sync.push_back(seconds_since(start));
            fs::remove_all(path);
            break;
          }
          case 1: {
            const std::string path = dir_ + "/async.ckpt";
            const CheckpointWriter* writer = trainer.checkpoint_writer();
            times.reusable_mb.push_back(writer ? static_cast<double>(writer->stats().bytes_kept) / 1e6 : 0.0);
            const auto start = Clock::now();
            trainer.save_checkpoint(path, {/*weights_only=*/false, /*async=*/true});
            times.async_stall.push_back(seconds_since(start));
            trainer.wait_for_checkpoints();
            times.async_background.push_back(trainer.checkpoint_writer()->stats().last_write_seconds);
            fs::remove_all(path);
            break;
          }
          case 2: {
            const auto start = Clock::now();
            std::vector<std::unique_ptr<char[]>> copies;
            for (const auto& t : tensors) {
              copies.emplace_back(new char[t.nbytes()]);
              std::memcpy(copies.back().get(), t.data_ptr(), t.nbytes());
            }
            times.memcpy_fresh.push_back(seconds_since(start));
            break;
          }
          case 3: {
            const auto start = Clock::now();
            for (size_t i = 0; i < tensors.size(); ++i) std::memcpy(warm[i].get(), tensors[i].data_ptr(), tensors[i].nbytes());
            times.memcpy_warm.push_back(seconds_since(start));
            break;
          }
        }
      }
    }
  }
  SaveTimes times;

 private:
  std::string dir_;
  int reps_;
};

enum class Checkpointing { kNone, kAsync, kSync };

/// Wall time of a run of `steps` steps, saving every `every` steps as asked, saves included.
double timed_run(Checkpointing mode, const std::shared_ptr<DataLoader>& loader, int64_t steps, int64_t every,
                 int64_t width, int layers, const std::string& dir) {
  torch::manual_seed(1);
  WideMlp module(width, layers);
  TrainerOptions options;
  options.max_epochs = 1;
  options.limit_train_batches = steps;
  options.num_sanity_val_steps = 0;
  std::vector<std::shared_ptr<Callback>> callbacks;
  if (mode != Checkpointing::kNone) {
    observers::ModelCheckpointOptions checkpoint;
    checkpoint.dirpath = dir;
    checkpoint.every_n_train_steps = every;
    checkpoint.async = mode == Checkpointing::kAsync;
    callbacks.push_back(std::make_shared<observers::ModelCheckpoint>(checkpoint));
  }
  Trainer trainer(options, callbacks);
  LoaderDataModule data(loader);
  const auto start = Clock::now();
  trainer.fit(module, data);  // waits for the saves in flight before it returns
  const double seconds = seconds_since(start);
  fs::remove_all(dir);
  return seconds;
}

std::string filesystem_of(const std::string& dir) {
  struct statfs info {};
  if (::statfs(dir.c_str(), &info) != 0) return "unknown";
  switch (static_cast<unsigned long>(info.f_type)) {
    case 0x01021994: return "tmpfs (fsync is free: numbers are not a disk's)";
    case 0xEF53: return "ext2/3/4";
    case 0x58465342: return "xfs";
    case 0x9123683E: return "btrfs";
    case 0x794c7630: return "overlayfs";
    default: {
      char hex[32];
      std::snprintf(hex, sizeof hex, "f_type 0x%lx", static_cast<unsigned long>(info.f_type));
      return hex;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trainbus benchmark: checkpoint save cost (sync, async stall, memcpy) and training with checkpoints"};
  std::string dir = "bench-checkpoints";
  int64_t width = 4096;
  int layers = 3;
  int reps = 5;
  int64_t steps = 60;
  int64_t every = 10;
  int64_t batch_size = 64;
  int run_reps = 3;
  app.add_option("--dir", dir, "Where checkpoints are written (removed after)");
  app.add_option("--width", width, "Hidden width of the MLP")->check(CLI::Range(int64_t{16}, int64_t{16384}));
  app.add_option("--layers", layers, "Hidden layers of the MLP")->check(CLI::Range(1, 16));
  app.add_option("--reps", reps, "Repetitions of each single save (part 1)")->check(CLI::Range(1, 100));
  app.add_option("--steps", steps, "Training steps per run (part 2)")->check(CLI::Range(int64_t{2}, int64_t{100000}));
  app.add_option("--every", every, "Checkpoint every N steps (part 2)")->check(CLI::Range(int64_t{1}, int64_t{100000}));
  app.add_option("--run-reps", run_reps, "Repetitions of each training run (part 2); 0 skips part 2")
      ->check(CLI::Range(0, 100));
  app.add_option("--batch-size", batch_size, "Batch size (part 2)")->check(CLI::Range(int64_t{1}, int64_t{4096}));
  CLI11_PARSE(app, argc, argv);
  fs::create_directories(dir);
  dir = fs::canonical(dir).string();

  // Part 1.
  torch::manual_seed(1);
  WideMlp module(width, layers);
  auto timer = std::make_shared<SaveTimer>(dir + "/part1", reps);
  {
    TrainerOptions options;
    options.max_epochs = 1;
    options.limit_train_batches = 2;
    options.num_sanity_val_steps = 0;
    Trainer trainer(options, {timer});
    LoaderDataModule data(random_loader(2, 16));
    trainer.fit(module, data);
  }
  const SaveTimes& t = timer->times;
  // The first asynchronous save of a run has no buffers to reuse yet: reported on its own. The
  // others are compared rep by rep with the measurements taken next to them (this VM's memory
  // speed drifts by 10x and more within minutes), and the medians of those ratios quoted.
  std::vector<double> stall, stall_vs_sync, stall_vs_fresh, stall_vs_warm, sync_vs_warm;
  for (size_t i = 0; i < t.async_stall.size(); ++i) {
    sync_vs_warm.push_back(t.sync[i] / t.memcpy_warm[i]);
    if (t.reusable_mb[i] == 0.0) continue;
    stall.push_back(t.async_stall[i]);
    stall_vs_sync.push_back(t.async_stall[i] / t.sync[i]);
    stall_vs_fresh.push_back(t.async_stall[i] / t.memcpy_fresh[i]);
    stall_vs_warm.push_back(t.async_stall[i] / t.memcpy_warm[i]);
  }
  const double mb = static_cast<double>(t.state_bytes) / 1e6;
  std::printf("Checkpoint of MLP 784-%lldx%d-10 + SGD momentum: %.0f MB of tensors (%.0f MB of parameters), "
              "written to %s (%s); %d repetitions\n\n",
              static_cast<long long>(width), layers, mb, mb / 2, dir.c_str(), filesystem_of(dir).c_str(), reps);
  std::printf("| what the training thread waits for | median (ms) | vs (a) | vs (c) | vs (d) | goal |\n"
              "|---|---:|---:|---:|---:|---|\n");
  std::printf("| (a) synchronous save: serialise + write + fsync + rename | %.1f | 1 | | %.2f | |\n",
              median(t.sync) * 1e3, median(sync_vs_warm));
  std::printf("| (b) asynchronous save, the stall (snapshot into reused buffers) | %.1f | %.3f | %.3f | %.2f | "
              "<= 0.1 (a), <= 1.25 (c) or (d) |\n",
              median(stall) * 1e3, median(stall_vs_sync), median(stall_vs_fresh), median(stall_vs_warm));
  std::printf("| (b0) the first asynchronous save of a run (no buffers yet) | %.1f | | | | |\n",
              t.async_stall.front() * 1e3);
  std::printf("| (b') the background write of (b), off the training thread | %.1f | | | | |\n",
              median(t.async_background) * 1e3);
  std::printf("| (c) memcpy into fresh buffers | %.1f | | 1 | | |\n", median(t.memcpy_fresh) * 1e3);
  std::printf("| (d) memcpy into warm buffers | %.1f | | | 1 | |\n", median(t.memcpy_warm) * 1e3);
  auto print_raw = [](const char* name, const std::vector<double>& values) {
    std::printf("%s", name);
    for (double v : values) std::printf(" %.0f", v * 1e3);
    std::printf(";");
  };
  std::printf("\nraw (ms):");
  print_raw(" sync", t.sync);
  print_raw(" stall", t.async_stall);
  print_raw(" memcpy fresh", t.memcpy_fresh);
  print_raw(" memcpy warm", t.memcpy_warm);
  std::printf("\n");
  if (run_reps == 0) return 0;

  // Part 2.
  auto loader = random_loader(steps, batch_size);
  timed_run(Checkpointing::kNone, loader, std::min<int64_t>(steps, 5), every, width, layers, dir + "/warmup");
  const char* names[3] = {"no checkpoints", "async checkpoints (default)", "sync checkpoints"};
  std::vector<double> secs[3], ratio[3];
  for (int rep = 0; rep < run_reps; ++rep) {
    double run[3];
    for (int k = 0; k < 3; ++k) {
      const int which = (rep + k) % 3;
      run[which] = timed_run(static_cast<Checkpointing>(which), loader, steps, every, width, layers, dir + "/part2");
    }
    std::fprintf(stderr, "rep %d: none %.2f s, async %.2f s, sync %.2f s\n", rep + 1, run[0], run[1], run[2]);
    for (int which = 0; which < 3; ++which) {
      secs[which].push_back(run[which]);
      ratio[which].push_back(run[which] / run[0]);
    }
  }
  std::printf("\nTraining %lld steps (batch %lld), a checkpoint every %lld steps; median of %d runs\n\n",
              static_cast<long long>(steps), static_cast<long long>(batch_size), static_cast<long long>(every),
              run_reps);
  std::printf("| run | wall time (s) | per step (ms) | vs no checkpoints | goal |\n|---|---:|---:|---:|---|\n");
  const char* goals[3] = {"", "<= 1.05", ""};
  for (int which = 0; which < 3; ++which) {
    std::printf("| %s | %.2f | %.1f | %.3f | %s |\n", names[which], median(secs[which]),
                median(secs[which]) * 1e3 / static_cast<double>(steps), median(ratio[which]), goals[which]);
  }
  return 0;
}
