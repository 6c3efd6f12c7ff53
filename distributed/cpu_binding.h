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

/// The CPUs this process may run on (its affinity, which `taskset` or a container's cpuset
/// narrows), ordered so that the hardware threads of one core are neighbours: by package, then
/// core, as /sys/devices/system/cpu/cpuN/topology tells; by number where it does not.
std::vector<int> allowed_cpus_by_core();

/// For each of `local_ranks` ranks in order, CPUs of its own from `cpus`: consecutive runs of
/// cpus.size() / local_ranks (as many as threads_per_rank gives it threads), so that a core's
/// hardware threads go to one rank. CPUs left over go to none. Empty (nothing to bind) when there
/// are fewer CPUs than ranks, or one rank.
std::vector<std::vector<int>> cpus_for_local_ranks(const std::vector<int>& cpus, int local_ranks);

/// Binds the calling thread to `cpus`; a process or thread it starts from now on inherits them.
/// Throws std::system_error (naming the CPUs) where the system refuses.
void bind_calling_thread_to(const std::vector<int>& cpus);

/// The calling thread's CPUs, as bind_calling_thread_to takes them back.
std::vector<int> calling_thread_cpus();

/// `cpus` as taskset's list: "0-3,8,10-11".
std::string cpu_list_text(const std::vector<int>& cpus);

}  // namespace trainbus::distributed
