#include "distributed/cpu_binding.h"

#include <sched.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

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

std::string read_first_line(const std::string& path) {
  std::ifstream file(path);
  std::string line;
  std::getline(file, line);
  return line;
}

// The number in the file at `path`; -1 where it cannot be read.
int number_in(const std::string& path) {
  std::ifstream file(path);
  int value = -1;
  if (!(file >> value)) return -1;
  return value;
}

// The OpenMP variable set for which libgomp binds the first thread as it loads; empty if none.
std::string openmp_binding_variable() {
  for (const char* name : {"OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY"}) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    std::string lower(value);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (std::string_view(name) == "OMP_PROC_BIND" && lower == "false") continue;
    return name;
  }
  return {};
}

// The CPUs of this process's cgroup cpuset (v2, else v1); empty where there is none to read.
std::vector<int> cgroup_cpuset() {
  std::ifstream cgroups("/proc/self/cgroup");
  std::string line;
  while (std::getline(cgroups, line)) {
    // "0::/path" (v2), "3:cpuset:/path" or "3:cpuset,cpu:/path" (v1)
    const auto first = line.find(':');
    const auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = "," + line.substr(first + 1, second - first - 1) + ",";
    const std::string path = line.substr(second + 1);
    std::vector<std::string> files;
    if (controllers == ",,") files = {"/sys/fs/cgroup" + path + "/cpuset.cpus.effective"};
    if (controllers.find(",cpuset,") != std::string::npos) {
      files = {"/sys/fs/cgroup/cpuset" + path + "/cpuset.effective_cpus",
               "/sys/fs/cgroup/cpuset" + path + "/cpuset.cpus"};
    }
    for (const std::string& file : files) {
      std::vector<int> cpus = parse_cpu_list(read_first_line(file));
      if (!cpus.empty()) return cpus;
    }
  }
  return {};
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

std::vector<std::vector<int>> cpus_by_core(const std::vector<int>& cpus,
                                           const std::string& sysfs_cpu_dir) {
  // A core: its package and its hardware threads (those of `cpus`).
  std::map<std::vector<int>, std::pair<int, std::vector<int>>> cores;  // by sibling list
  for (int cpu : cpus) {
    const std::string topology = sysfs_cpu_dir + "/cpu" + std::to_string(cpu) + "/topology/";
    std::vector<int> siblings = parse_cpu_list(read_first_line(topology + "thread_siblings_list"));
    if (std::find(siblings.begin(), siblings.end(), cpu) == siblings.end()) siblings = {cpu};
    auto& core = cores[siblings];
    if (core.second.empty()) core.first = number_in(topology + "physical_package_id");
    core.second.push_back(cpu);
  }
  std::vector<std::pair<int, std::vector<int>>> ordered;
  for (auto& [siblings, core] : cores) {
    std::sort(core.second.begin(), core.second.end());
    ordered.push_back(std::move(core));
  }
  std::sort(ordered.begin(), ordered.end());  // by package, then first CPU
  std::vector<std::vector<int>> grouped;
  for (auto& [package, threads] : ordered) grouped.push_back(std::move(threads));
  return grouped;
}

std::vector<std::vector<int>> cpus_for_local_ranks(const std::vector<std::vector<int>>& cores,
                                                   int local_ranks) {
  if (local_ranks < 2) return {};
  const auto ranks = static_cast<std::size_t>(local_ranks);
  // What is shared out: whole cores, or with fewer cores than ranks, single CPUs.
  std::vector<std::vector<int>> units = cores;
  if (units.size() < ranks) {
    units.clear();
    for (const auto& core : cores) {
      for (int cpu : core) units.push_back({cpu});
    }
    if (units.size() < ranks) return {};
  }
  const std::size_t per_rank = units.size() / ranks;
  std::vector<std::vector<int>> shares(ranks);
  for (std::size_t unit = 0; unit < per_rank * ranks; ++unit) {
    std::vector<int>& share = shares[unit / per_rank];
    share.insert(share.end(), units[unit].begin(), units[unit].end());
  }
  for (auto& share : shares) std::sort(share.begin(), share.end());
  return shares;
}

CpusToShare cpus_to_share() {
  CpusToShare share;
  share.openmp_variable = openmp_binding_variable();
  if (share.openmp_variable.empty()) {
    share.cpus = calling_thread_cpus();
    return share;
  }
  const std::vector<int> online = parse_cpu_list(read_first_line("/sys/devices/system/cpu/online"));
  const std::vector<int> cpuset = cgroup_cpuset();
  if (cpuset.empty() || online.empty()) {
    share.cpus = online.empty() ? cpuset : online;
  } else {
    std::set_intersection(cpuset.begin(), cpuset.end(), online.begin(), online.end(),
                          std::back_inserter(share.cpus));
  }
  if (share.cpus.empty()) share.cpus = calling_thread_cpus();
  return share;
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

std::vector<int> parse_cpu_list(const std::string& text) {
  std::vector<int> cpus;
  std::istringstream in(text);
  std::string range;
  while (std::getline(in, range, ',')) {
    const auto begin = range.find_first_not_of(" \t\n");
    if (begin == std::string::npos) return {};
    range = range.substr(begin, range.find_last_not_of(" \t\n") - begin + 1);
    int first = 0, last = 0;
    char dash = 0;
    std::istringstream numbers(range);
    if (!(numbers >> first) || first < 0) return {};
    if (numbers >> dash) {
      if (dash != '-' || !(numbers >> last) || last < first || last >= kMaxCpus) return {};
    } else {
      last = first;
    }
    std::string rest;
    if (numbers >> rest) return {};
    for (int cpu = first; cpu <= last; ++cpu) cpus.push_back(cpu);
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

}  // namespace trainbus::distributed
