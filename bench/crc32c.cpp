// Micro-benchmarks (Google Benchmark) of CRC32C throughput: trainbus::Crc32c with the CPU's CRC32
// instruction against its portable path (Boost.CRC's table), over buffers from a TFRecord-sized
// 64 B to a checkpoint-chunk-sized 4 MiB. Bytes per second is the column to read.
//
//   build/bin/bench_crc32c --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <cstdint>
#include <string>

#include <benchmark/benchmark.h>

#include "base/crc32c.h"

namespace {

std::string bytes_of_size(int64_t size) {
  std::string bytes(static_cast<std::size_t>(size), '\0');
  uint32_t state = 2463534242u;  // xorshift: contents the compiler cannot fold
  for (char& byte : bytes) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    byte = static_cast<char>(state);
  }
  return bytes;
}

void run(benchmark::State& state, bool portable) {
  const std::string bytes = bytes_of_size(state.range(0));
  for (auto _ : state) {
    trainbus::Crc32c crc(portable);
    crc.update(bytes.data(), bytes.size());
    benchmark::DoNotOptimize(crc.value());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}

void BM_Crc32cInstruction(benchmark::State& state) { run(state, /*portable=*/false); }
void BM_Crc32cBoostTable(benchmark::State& state) { run(state, /*portable=*/true); }

BENCHMARK(BM_Crc32cInstruction)->ArgName("bytes")->RangeMultiplier(64)->Range(64, 4 << 20);
BENCHMARK(BM_Crc32cBoostTable)->ArgName("bytes")->RangeMultiplier(64)->Range(64, 4 << 20);

}  // namespace

BENCHMARK_MAIN();
