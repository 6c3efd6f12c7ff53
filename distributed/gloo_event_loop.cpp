#include "distributed/gloo_event_loop.h"

#include <dirent.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <set>
#include <vector>

namespace trainbus::distributed {
namespace {

// This process's threads, by thread id.
std::set<pid_t> threads_of_this_process() {
  std::set<pid_t> threads;
  DIR* tasks = ::opendir("/proc/self/task");
  if (tasks == nullptr) return threads;
  while (const dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] != '.') threads.insert(static_cast<pid_t>(std::atoi(entry->d_name)));
  }
  ::closedir(tasks);
  return threads;
}

}  // namespace

bool create_gloo_device_with_niced_loop(const std::function<void()>& create_device, int nice) {
  if (nice == 0) {
    create_device();
    return false;
  }
  const std::set<pid_t> before = threads_of_this_process();
  create_device();
  if (before.empty()) return false;  // no /proc
  std::vector<pid_t> started;
  for (pid_t thread : threads_of_this_process())
    if (before.count(thread) == 0) started.push_back(thread);
  if (started.size() != 1) return false;
  // On Linux a thread id names that one thread here (not its process, as POSIX has it). Never a
  // higher priority than the loop started with (a process already niced past `nice`).
  const auto loop = static_cast<id_t>(started.front());
  errno = 0;
  const int current = ::getpriority(PRIO_PROCESS, loop);
  if (errno != 0) return false;
  return ::setpriority(PRIO_PROCESS, loop, std::max(current, nice)) == 0;
}

}  // namespace trainbus::distributed
