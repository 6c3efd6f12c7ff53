#pragma once
// The baseline for bench_ddp: data-parallel training written by hand on LibTorch and c10d, as a
// C++ user without trainbus would write it. Its gap to trainbus's DDP is what the framework costs.

#include <cstdint>

#include "bench/bench_mlp.h"
#include "distributed/environment.h"

namespace trainbus::bench {

/// Trains `module` for `steps` steps on this rank's batches of `loader` (rank r takes batches
/// r, r + W, ...): forward with the loss and the accuracy read out (as the main job's module
/// logs them), backward, one Gloo all-reduce of all gradients flattened into one buffer after
/// backward (over a TCPStore rendezvous at the environment's MASTER_ADDR:MASTER_PORT), division by
/// the world size, Adam's step. Records each step's start in module.step_starts. Unlike the
/// Reducer it does not overlap the all-reduce with backward: the same for the main job's MLP,
/// whose 0.94 MB of gradients fit DDP's first 1 MiB bucket, but not for larger models.
void run_raw_ddp_loop(BenchMlp& module, DataLoader& loader, int64_t steps,
                      const distributed::DistributedEnvironment& environment);

}  // namespace trainbus::bench
