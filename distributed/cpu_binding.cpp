#include "distributed/cpu_binding.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <memory>
#include <system_error>
#include <tuple>

namespace trainbus::distributed {
namespace {

// Larger than any machine's CPU count: the kernel takes (and fills) a mask longer than its own.
constexpr int kMaxCpus = 8192;

struct CpuSetDeleter {
  void operator()(cpu_set_t* set) const noexcept { CPU_FREE(set); }
};
using CpuSet = std::unique_ptr<cpu_set_t, CpuSetDeleter>;

CpuSet empty_cpu_set() {
  CpuSet set(CPU_ALLOC(kMaxCpus));
  if (!set) throw std::system_error(ENOMEM, std::generic_category(), "allocating a CPU set");
  CPU_ZERO_S(CPU_ALLOC_SIZE(kMaxCpus), set.get());
  return set;
}

// A number from /sys/devices/system/cpu/cpuN/topology/<name>; -1 where it cannot be read.
int topology_value(int cpu, const char* name) {
  std::ifstream file("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/" + name);
  int value = -1;
  if (!(file >> value)) return -1;
  return value;
}

}  // namespace

std::vector<int> calling_thread_cpus() {
  const CpuSet set = empty_cpu_set();
  if (::sched_getaffinity(0, CPU_ALLOC_SIZE(kMaxCpus), set.get()) != 0)
    throw std::system_error(errno, std::generic_category(), "reading this thread's CPUs");
  std::vector<int> cpus;
  for (int cpu = 0; cpu < kMaxCpus; ++cpu) {
    if (CPU_ISSET_S(cpu, CPU_ALLOC_SIZE(kMaxCpus), set.get())) cpus.push_back(cpu);
  }
  return cpus;
}

std::vector<int> allowed_cpus_by_core() {
  std::vector<std::tuple<int, int, int>> keyed;  // package, core, CPU
  for (int cpu : calling_thread_cpus()) {
    keyed.emplace_back(topology_value(cpu, "physical_package_id"), topology_value(cpu, "core_id"),
                       cpu);
  }
  std::sort(keyed.begin(), keyed.end());
  std::vector<int> cpus;
  for (const auto& [package, core, cpu] : keyed) cpus.push_back(cpu);
  return cpus;
}

std::vector<std::vector<int>> cpus_for_local_ranks(const std::vector<int>& cpus, int local_ranks) {
  if (local_ranks < 2 || cpus.size() < static_cast<std::size_t>(local_ranks)) return {};
  const std::size_t per_rank = cpus.size() / static_cast<std::size_t>(local_ranks);
  std::vector<std::vector<int>> shares;
  for (int rank = 0; rank < local_ranks; ++rank) {
    const auto first = cpus.begin() + static_cast<std::ptrdiff_t>(rank * per_rank);
    shares.emplace_back(first, first + static_cast<std::ptrdiff_t>(per_rank));
  }
  return shares;
}

void bind_calling_thread_to(const std::vector<int>& cpus) {
  const CpuSet set = empty_cpu_set();
  for (int cpu : cpus) {
    if (cpu >= 0 && cpu < kMaxCpus) CPU_SET_S(cpu, CPU_ALLOC_SIZE(kMaxCpus), set.get());
  }
  if (::sched_setaffinity(0, CPU_ALLOC_SIZE(kMaxCpus), set.get()) != 0) {
    throw std::system_error(errno, std::generic_category(),
                            "binding to CPUs " + cpu_list_text(cpus));
  }
}

std::string cpu_list_text(const std::vector<int>& cpus) {
  std::string text;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t last = i;  // the end of a run of consecutive numbers
    while (last + 1 < cpus.size() && cpus[last + 1] == cpus[last] + 1) ++last;
    if (!text.empty()) text += ",";
    text += std::to_string(cpus[i]);
    if (last > i) text += "-" + std::to_string(cpus[last]);
    i = last + 1;
  }
  return text;
}

}  // namespace trainbus::distributed
