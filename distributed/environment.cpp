#include "distributed/environment.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <sstream>

#include "base/errors.h"

namespace trainbus::distributed {
namespace {

const char* variable(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? value : nullptr;
}

long parse_number(const char* name, const char* text, long low, long high) {
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  TRAINBUS_CHECK(errno == 0 && end != text && *end == '\0' && value >= low && value <= high,
                 "environment variable ", name, "='", text, "' is not a number in [", low, ", ",
                 high,
                 "]; unset it or give one (torchrun and `trainbus fit --nproc-per-node` set it)");
  return value;
}

int number_or(const char* name, int fallback, long low, long high) {
  const char* text = variable(name);
  return text != nullptr ? static_cast<int>(parse_number(name, text, low, high)) : fallback;
}

}  // namespace

std::string DistributedEnvironment::describe() const {
  std::ostringstream out;
  out << "rank " << rank << "/" << world_size << " (local " << local_rank << "/" << local_world_size
      << ", node " << node_rank << ") via " << master_addr << ":" << master_port;
  return out.str();
}

std::string DistributedEnvironment::rank_message(std::string_view message) const {
  std::ostringstream out;
  out << "rank " << rank << " of " << world_size << ": " << message;
  return out.str();
}

void DistributedEnvironment::validate() const {
  TRAINBUS_CHECK(world_size >= 1, "distributed world_size must be >= 1, got ", world_size);
  TRAINBUS_CHECK(rank >= 0 && rank < world_size,
                 "distributed rank must be in [0, world_size=", world_size, "), got ", rank,
                 " (RANK)");
  TRAINBUS_CHECK(local_world_size >= 1 && local_world_size <= world_size,
                 "distributed local_world_size must be in [1, world_size=", world_size, "], got ",
                 local_world_size, " (LOCAL_WORLD_SIZE)");
  TRAINBUS_CHECK(local_rank >= 0 && local_rank < local_world_size,
                 "distributed local_rank must be in [0, local_world_size=", local_world_size,
                 "), got ", local_rank, " (LOCAL_RANK)");
  TRAINBUS_CHECK(node_rank >= 0, "distributed node_rank must be >= 0, got ", node_rank,
                 " (GROUP_RANK)");
  TRAINBUS_CHECK(!master_addr.empty(), "distributed master_addr is empty (MASTER_ADDR)");
}

DistributedEnvironment environment_from_variables() {
  DistributedEnvironment environment;
  environment.world_size = number_or("WORLD_SIZE", 1, 1, INT_MAX);
  if (environment.world_size == 1) return environment;
  for (const char* required : {"RANK", "MASTER_ADDR", "MASTER_PORT"}) {
    TRAINBUS_CHECK(
        variable(required) != nullptr, "WORLD_SIZE=", environment.world_size, " but ", required,
        " is not set: start the ranks with `trainbus fit --nproc-per-node N` (or "
        "torchrun), which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT");
  }
  environment.rank = number_or("RANK", 0, 0, environment.world_size - 1);
  environment.local_world_size =
      number_or("LOCAL_WORLD_SIZE", environment.world_size, 1, environment.world_size);
  environment.local_rank = number_or("LOCAL_RANK", environment.rank % environment.local_world_size,
                                     0, environment.local_world_size - 1);
  environment.node_rank =
      number_or("GROUP_RANK", environment.rank / environment.local_world_size, 0, INT_MAX);
  environment.master_addr = variable("MASTER_ADDR");
  environment.master_port =
      static_cast<uint16_t>(parse_number("MASTER_PORT", variable("MASTER_PORT"), 1, 65535));
  environment.validate();
  return environment;
}

std::vector<std::pair<std::string, std::string>> environment_variables(
    const DistributedEnvironment& environment) {
  return {{"RANK", std::to_string(environment.rank)},
          {"WORLD_SIZE", std::to_string(environment.world_size)},
          {"LOCAL_RANK", std::to_string(environment.local_rank)},
          {"LOCAL_WORLD_SIZE", std::to_string(environment.local_world_size)},
          {"GROUP_RANK", std::to_string(environment.node_rank)},
          {"MASTER_ADDR", environment.master_addr},
          {"MASTER_PORT", std::to_string(environment.master_port)}};
}

void export_environment_variables(const DistributedEnvironment& environment) {
  for (const auto& [name, value] : environment_variables(environment)) {
    ::setenv(name.c_str(), value.c_str(), /*overwrite=*/1);
  }
}

}  // namespace trainbus::distributed
