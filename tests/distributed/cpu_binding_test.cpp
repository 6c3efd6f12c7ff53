// How a launcher shares this machine's CPUs out to its ranks (cpu_binding.h), and that binding a
// thread holds and is inherited. Binding runs in a thread of its own, so that the test process
// keeps its CPUs.
#include "distributed/cpu_binding.h"

#include <algorithm>
#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

using namespace trainbus::distributed;

TEST_CASE("cpu_list_text writes CPUs as taskset's list", "[distributed][cpu_binding]") {
  CHECK(cpu_list_text({}).empty());
  CHECK(cpu_list_text({3}) == "3");
  CHECK(cpu_list_text({0, 1, 2, 3}) == "0-3");
  CHECK(cpu_list_text({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11");
  CHECK(cpu_list_text({0, 4}) == "0,4");  // a core's two hardware threads
}

TEST_CASE("cpus_for_local_ranks gives each rank consecutive CPUs of its own, the rest to none",
          "[distributed][cpu_binding]") {
  CHECK(cpus_for_local_ranks({0, 1}, 2) == std::vector<std::vector<int>>{{0}, {1}});
  // ordered by core (allowed_cpus_by_core): hardware threads 0 and 4 share core 0
  CHECK(cpus_for_local_ranks({0, 4, 1, 5, 2, 6, 3, 7}, 2) ==
        std::vector<std::vector<int>>{{0, 4, 1, 5}, {2, 6, 3, 7}});
  // as threads_per_rank: 5 CPUs for 2 ranks are 2 each; CPU 4 is left to the launcher
  CHECK(cpus_for_local_ranks({0, 1, 2, 3, 4}, 2) == std::vector<std::vector<int>>{{0, 1}, {2, 3}});
  SECTION("nothing to bind: one rank, or fewer CPUs than ranks") {
    CHECK(cpus_for_local_ranks({0, 1, 2, 3}, 1).empty());
    CHECK(cpus_for_local_ranks({0, 1}, 3).empty());
    CHECK(cpus_for_local_ranks({}, 2).empty());
  }
}

TEST_CASE("allowed_cpus_by_core lists this process's CPUs, each once",
          "[distributed][cpu_binding]") {
  const std::vector<int> by_core = allowed_cpus_by_core();
  std::vector<int> sorted = by_core;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == calling_thread_cpus());
  CHECK(std::set<int>(by_core.begin(), by_core.end()).size() == by_core.size());
}

TEST_CASE("A thread bound to a CPU stays there, and a thread it starts inherits it",
          "[distributed][cpu_binding]") {
  const std::vector<int> all = calling_thread_cpus();
  REQUIRE_FALSE(all.empty());
  const std::vector<int> one{all.back()};
  std::vector<int> bound, inherited, restored;
  std::thread([&] {
    bind_calling_thread_to(one);
    bound = calling_thread_cpus();
    std::thread([&] { inherited = calling_thread_cpus(); }).join();
    bind_calling_thread_to(all);
    restored = calling_thread_cpus();
  }).join();
  CHECK(bound == one);
  CHECK(inherited == one);
  CHECK(restored == all);
  CHECK(calling_thread_cpus() == all);  // this thread was never bound
}

TEST_CASE("Binding to no CPU it may use fails with the CPUs named", "[distributed][cpu_binding]") {
  std::thread([] {
    CHECK_THROWS_WITH(bind_calling_thread_to({8191}), Catch::Contains("binding to CPUs 8191"));
  }).join();
}
