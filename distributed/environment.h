#pragma once
/// DistributedEnvironment: who this process is in a data-parallel job (rank, world size, where
/// rank 0's store listens), as torchrun describes it in environment variables.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trainbus::distributed {

/// One process's place in the job. The defaults are a job of one process.
struct DistributedEnvironment {
  /// This process's rank among all processes (torchrun's RANK), 0-based.
  int rank = 0;
  /// Processes in the job (WORLD_SIZE).
  int world_size = 1;
  /// Rank among the processes of this machine (LOCAL_RANK).
  int local_rank = 0;
  /// Processes on this machine (LOCAL_WORLD_SIZE).
  int local_world_size = 1;
  /// This machine's index among the machines (torchrun's GROUP_RANK, our --node-rank).
  int node_rank = 0;
  /// Where rank 0 runs the rendezvous store (MASTER_ADDR, MASTER_PORT).
  std::string master_addr = "127.0.0.1";
  uint16_t master_port = 29500;

  bool distributed() const noexcept { return world_size > 1; }
  /// "rank 1/2 (local 1/2, node 0) via 127.0.0.1:29500", for errors and logs.
  std::string describe() const;
  /// "rank 1 of 2: <message>": how every error of the rendezvous and of a collective starts, so
  /// that each rank's report says which rank it comes from.
  std::string rank_message(std::string_view message) const;
  /// Throws MisconfigurationError naming the first inconsistent field (a rank outside the world,
  /// a local world larger than the world, ...).
  void validate() const;
};

/// The environment torchrun (and `trainbus fit --nproc-per-node`) gives each rank: RANK,
/// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT. Without
/// WORLD_SIZE, a job of one process. Throws MisconfigurationError naming the variable for a value
/// that is not a number, out of range, or missing while WORLD_SIZE > 1 (RANK, MASTER_ADDR,
/// MASTER_PORT).
DistributedEnvironment environment_from_variables();

/// The variables environment_from_variables reads, named as torchrun names them, with their values
/// for `environment`: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,
/// MASTER_PORT. The launcher puts them in each rank's environment.
std::vector<std::pair<std::string, std::string>> environment_variables(
    const DistributedEnvironment& environment);

/// Sets the variables environment_from_variables reads, for a child process about to be started.
void export_environment_variables(const DistributedEnvironment& environment);

}  // namespace trainbus::distributed
