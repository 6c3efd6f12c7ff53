// Micro-benchmarks (Google Benchmark) of what the training thread pays per event:
// EventBus::publish, EventBus::publish_lazy (what the Trainer calls) and, as the baseline, a bare
// Boost.Signals2 signal with the same no-op slots; the argument is the number of synchronous
// subscribers.
//
//   build/bin/bench_publish --benchmark_repetitions=7 --benchmark_report_aggregates_only=true
#include <atomic>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/signals2/signal.hpp>

#include "events/event_bus.h"

namespace {

namespace events = trainbus::events;

std::atomic<uint64_t> delivered{0};

void count(const events::TrainBatchEnd&) { delivered.fetch_add(1, std::memory_order_relaxed); }

void BM_EventBusPublish(benchmark::State& state) {
  events::EventBus bus;
  std::vector<events::Subscription> subscriptions;
  for (int64_t s = 0; s < state.range(0); ++s) {
    subscriptions.push_back(bus.subscribe<events::TrainBatchEnd>(count));
  }
  events::TrainBatchEnd event;
  event.loss = 0.5;
  int64_t batch_idx = 0;
  for (auto _ : state) {
    event.batch.batch_idx = batch_idx++;
    bus.publish(event);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_EventBusPublishLazy(benchmark::State& state) {
  events::EventBus bus;
  std::vector<events::Subscription> subscriptions;
  for (int64_t s = 0; s < state.range(0); ++s) {
    subscriptions.push_back(bus.subscribe<events::TrainBatchEnd>(count));
  }
  int64_t batch_idx = 0;
  for (auto _ : state) {
    bus.publish_lazy<events::TrainBatchEnd>([&] {
      events::TrainBatchEnd built;
      built.loss = 0.5;
      built.batch.batch_idx = batch_idx++;
      return built;
    });
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_BareSignals2Signal(benchmark::State& state) {
  boost::signals2::signal<void(const events::TrainBatchEnd&)> signal;
  for (int64_t s = 0; s < state.range(0); ++s) signal.connect(count);
  events::TrainBatchEnd event;
  event.loss = 0.5;
  int64_t batch_idx = 0;
  for (auto _ : state) {
    event.batch.batch_idx = batch_idx++;
    signal(event);
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_EventBusPublish)->ArgName("subscribers")->Arg(0)->Arg(1)->Arg(5)->Arg(20);
BENCHMARK(BM_EventBusPublishLazy)->ArgName("subscribers")->Arg(0)->Arg(1)->Arg(5)->Arg(20);
BENCHMARK(BM_BareSignals2Signal)->ArgName("subscribers")->Arg(0)->Arg(1)->Arg(5)->Arg(20);

}  // namespace

BENCHMARK_MAIN();
