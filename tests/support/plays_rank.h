#pragma once
// A strategy for tests of one process that plays a rank of a data-parallel job.

#include <string_view>

#include "distributed/strategy.h"

namespace trainbus::testing {

/// One process playing rank `rank` of a job of `world_size`, `local_rank` on its machine: every
/// collective returns this rank's own value (Strategy's defaults), as if the others agreed. What
/// a rank does alone (which observers run, which files they write) shows as in a real job.
class PlaysRank final : public distributed::Strategy {
 public:
  PlaysRank(int world_size, int rank, int local_rank) {
    environment_.world_size = world_size;
    environment_.rank = rank;
    environment_.local_rank = local_rank;
    environment_.local_world_size = local_rank + 1;
    environment_.node_rank = rank - local_rank == 0 ? 0 : 1;
  }
  std::string_view name() const noexcept override { return "plays_rank"; }
  const distributed::DistributedEnvironment& environment() const noexcept override {
    return environment_;
  }

 private:
  distributed::DistributedEnvironment environment_;
};

}  // namespace trainbus::testing
