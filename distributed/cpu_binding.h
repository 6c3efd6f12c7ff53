#pragma once
/// CPUs of its own for each rank a launcher starts on one machine, as PyTorch's CPU launcher
/// (torch.backends.xeon.run_cpu) binds each instance to its cores. Data-parallel ranks step in
/// lockstep: each collective waits for the slowest rank. Unbound, the kernel moves a rank's
/// threads (its training thread, c10d's worker, Gloo's event loop) between cores, and a thread
/// woken by a collective can queue behind another rank's training thread for a scheduler slice;
/// bound, a rank's threads hand over on its own cores only. Measured in bench/README.md.

#include <string>
#include <vector>

namespace trainbus::distributed {

/// The CPUs a launcher shares out to its ranks, and where that list came from.
struct CpusToShare {
  std::vector<int> cpus;  ///< ascending
  /// Empty: this process's affinity (which `taskset` or a container's cpuset narrows). Else the
  /// OpenMP variable (OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY) for which OpenMP, which
  /// LibTorch loads, bound this process's first thread to one place as it started, so that its
  /// affinity no longer tells: the CPUs are then those of its cgroup's cpuset, else the online
  /// ones.
  std::string openmp_variable;
};

/// The CPUs this process may share out to ranks it starts (CpusToShare).
CpusToShare cpus_to_share();

/// `cpus` grouped by core: a core's hardware threads (topology/thread_siblings_list in
/// `sysfs_cpu_dir`) together, the cores ordered by package, then by their first CPU. A CPU whose
/// topology cannot be read is a core of its own.
std::vector<std::vector<int>> cpus_by_core(
    const std::vector<int>& cpus, const std::string& sysfs_cpu_dir = "/sys/devices/system/cpu");

/// For each of `local_ranks` ranks in order, CPUs of its own: whole cores, cores.size() /
/// local_ranks each, so that no core is split between ranks; with fewer cores than ranks, single
/// CPUs, as many each as all of them divided by local_ranks. What is left over goes to none.
/// Empty (nothing to bind) for one rank, or fewer CPUs than ranks. Each share ascending.
std::vector<std::vector<int>> cpus_for_local_ranks(const std::vector<std::vector<int>>& cores,
                                                   int local_ranks);

/// Binds the calling thread to `cpus`; a process or thread it starts from now on inherits them.
/// Throws std::system_error (naming the CPUs) where the system refuses.
void bind_calling_thread_to(const std::vector<int>& cpus);

/// The calling thread's CPUs (its affinity), ascending.
std::vector<int> calling_thread_cpus();

/// `cpus` as taskset's list: "0-3,8,10-11".
std::string cpu_list_text(const std::vector<int>& cpus);

/// A list as the kernel writes it ("0-3,8,10-11", blanks around it ignored); empty where `text`
/// is not one.
std::vector<int> parse_cpu_list(const std::string& text);

}  // namespace trainbus::distributed
