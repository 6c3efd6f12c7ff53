// The promise of asynchronous observers, in one run: an observer that takes 5 ms per training batch
// (a slow disk or network) does not slow training when it runs asynchronously, and costs the full
// 5 ms per step when subscribed synchronously. Same MLP, data and order in every run:
//   (1) no observer; (2) the slow observer on the observer pool (capacity for every event, so the
//   trainer never waits for room); (3) the same work as a synchronous bus subscriber.
// Quoted: the median training step, and the wall time of the training loop (first step start to
// last step end), each the median over repetitions; plus how long fit() then waited to drain.
#include <chrono>
#include <cstdio>
#include <thread>

#include <CLI/CLI.hpp>

#include "bench/bench_mlp.h"
#include "core/trainer.h"

namespace {

using namespace trainbus;
using bench::Clock;

constexpr auto kObserverWork = std::chrono::milliseconds(5);

class SlowObserver : public events::Observer {
 public:
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd&) override {
    std::this_thread::sleep_for(kObserverWork);
  }
};

struct Run {
  double median_step_us;
  double loop_seconds;   // first step start .. last step start + a median step
  double drain_seconds;  // fit() returning after the last step
};

enum class Mode { kNone, kAsync, kSync };

Run run(const std::shared_ptr<DataLoader>& loader, int64_t steps, Mode mode) {
  auto module = bench::fresh_mlp(0);
  TrainerOptions options;
  options.max_epochs(1);
  options.enable_model_summary(false);  // no table in the benchmark's output
  options.enable_progress_bar(false).enable_checkpointing(false);
  options.limit_train_batches(steps);
  options.num_sanity_val_steps(0);
  Trainer trainer(options);
  events::Subscription sync;
  if (mode == Mode::kAsync)
    trainer.add_observer(std::make_shared<SlowObserver>(),
                         events::ObserverOptions().capacity(static_cast<size_t>(steps) + 16));
  if (mode == Mode::kSync) {
    sync = trainer.bus().subscribe<events::TrainBatchEnd>(
        [](const events::TrainBatchEnd&) { std::this_thread::sleep_for(kObserverWork); });
  }
  data::LoaderDataModule data(loader);
  trainer.fit(*module, data);
  const auto returned = Clock::now();
  const double step_us = module->median_step_us();
  const double loop =
      std::chrono::duration<double>(module->step_starts.back() - module->step_starts.front())
          .count() +
      step_us / 1e6;
  const double total =
      std::chrono::duration<double>(returned - module->step_starts.front()).count();
  return {step_us, loop, std::max(0.0, total - loop)};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"trainbus benchmark: a 5 ms-per-batch observer, asynchronous vs synchronous"};
  int64_t steps = 200;
  int reps = 3;
  app.add_option("--steps", steps, "Training steps per run")
      ->check(CLI::Range(int64_t{10}, int64_t{800}));
  app.add_option("--reps", reps, "Repetitions")->check(CLI::Range(1, 50));
  CLI11_PARSE(app, argc, argv);

  auto loader = bench::fashion_train_loader(64);
  run(loader, 50, Mode::kNone);  // warm-up
  const char* names[] = {"(1) no observer", "(2) slow observer, asynchronous",
                         "(3) slow observer, synchronous"};
  std::vector<double> step[3], loop[3], drain[3];
  for (int rep = 0; rep < reps; ++rep) {
    for (int k = 0; k < 3; ++k) {
      const int mode = (rep + k) % 3;
      const Run r = run(loader, steps, static_cast<Mode>(mode));
      step[mode].push_back(r.median_step_us);
      loop[mode].push_back(r.loop_seconds);
      drain[mode].push_back(r.drain_seconds);
    }
  }
  std::printf(
      "MLP on Fashion-MNIST, %lld steps, observer work 5 ms per batch, median of %d "
      "repetitions\n\n",
      static_cast<long long>(steps), reps);
  std::printf(
      "| run | median step (us) | training loop (s) | loop vs (1) | then fit() drained for (s) "
      "|\n");
  std::printf("|---|---:|---:|---:|---:|\n");
  const double base = bench::median(loop[0]);
  for (int mode = 0; mode < 3; ++mode) {
    std::printf("| %s | %.0f | %.3f | %.3f | %.3f |\n", names[mode], bench::median(step[mode]),
                bench::median(loop[mode]), bench::median(loop[mode]) / base,
                bench::median(drain[mode]));
  }
  return 0;
}
