// How a launcher shares this machine's CPUs out to its ranks (cpu_binding.h): by core, from a
// made-up sysfs topology, and that binding a thread holds and is inherited. Binding runs in a
// thread of its own, so that the test process keeps its CPUs.
#include "distributed/cpu_binding.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/scoped_environment.h"
#include "tests/support/temp_dir.h"

using namespace trainbus::distributed;
using Shares = std::vector<std::vector<int>>;

namespace {

// A sysfs cpu directory for `cpus`: each with its package and its core's hardware threads.
struct FakeCpu {
  int cpu;
  int package;
  std::string siblings;
};
void write_topology(const trainbus::testing::TempDir& dir, const std::vector<FakeCpu>& cpus) {
  for (const FakeCpu& cpu : cpus) {
    const auto topology = dir.path() / ("cpu" + std::to_string(cpu.cpu)) / "topology";
    std::filesystem::create_directories(topology);
    std::ofstream(topology / "physical_package_id") << cpu.package << "\n";
    std::ofstream(topology / "thread_siblings_list") << cpu.siblings << "\n";
  }
}

}  // namespace

TEST_CASE("cpu_list_text and parse_cpu_list write and read taskset's lists",
          "[distributed][cpu_binding]") {
  CHECK(cpu_list_text({}).empty());
  CHECK(cpu_list_text({3}) == "3");
  CHECK(cpu_list_text({0, 1, 2, 3}) == "0-3");
  CHECK(cpu_list_text({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11");
  CHECK(parse_cpu_list("0-3,8,10-11\n") == std::vector<int>{0, 1, 2, 3, 8, 10, 11});
  CHECK(parse_cpu_list("4,0") == std::vector<int>{0, 4});
  CHECK(parse_cpu_list("").empty());
  CHECK(parse_cpu_list("0-x").empty());
  CHECK(parse_cpu_list("3-1").empty());
}

TEST_CASE("cpus_by_core keeps a core's hardware threads together, cores by package",
          "[distributed][cpu_binding]") {
  trainbus::testing::TempDir sysfs;
  // Two packages of two cores with two threads each, numbered as Intel's: CPU N and N + 4 share
  // a core; cores 2 and 3 are on package 1.
  write_topology(sysfs, {{0, 0, "0,4"},
                         {1, 0, "1,5"},
                         {2, 1, "2,6"},
                         {3, 1, "3,7"},
                         {4, 0, "0,4"},
                         {5, 0, "1,5"},
                         {6, 1, "2,6"},
                         {7, 1, "3,7"}});
  const std::string dir = sysfs.path().string();
  const Shares cores = cpus_by_core({0, 1, 2, 3, 4, 5, 6, 7}, dir);
  CHECK(cores == Shares{{0, 4}, {1, 5}, {2, 6}, {3, 7}});
  SECTION("whole cores to each rank, the rest to none") {
    CHECK(cpus_for_local_ranks(cores, 2) == Shares{{0, 1, 4, 5}, {2, 3, 6, 7}});
    CHECK(cpus_for_local_ranks(cores, 3) == Shares{{0, 4}, {1, 5}, {2, 6}});
    CHECK(cpus_for_local_ranks(cores, 4) == Shares{{0, 4}, {1, 5}, {2, 6}, {3, 7}});
  }
  SECTION("fewer cores than ranks: single CPUs") {
    CHECK(cpus_for_local_ranks(cores, 8) == Shares{{0}, {4}, {1}, {5}, {2}, {6}, {3}, {7}});
    CHECK(cpus_for_local_ranks(cores, 5) == Shares{{0}, {4}, {1}, {5}, {2}});
  }
  SECTION("only the CPUs this process may use count") {
    CHECK(cpus_by_core({0, 1, 4}, dir) == Shares{{0, 4}, {1}});
  }
  SECTION("a CPU without topology is a core of its own") {
    CHECK(cpus_by_core({0, 4, 9}, dir) == Shares{{9}, {0, 4}});  // package unknown sorts first
  }
  SECTION("nothing to bind: one rank, or fewer CPUs than ranks") {
    CHECK(cpus_for_local_ranks(cores, 1).empty());
    CHECK(cpus_for_local_ranks(cores, 9).empty());
    CHECK(cpus_for_local_ranks({}, 2).empty());
  }
}

TEST_CASE("cpus_to_share is this thread's CPUs, or with OpenMP's binding set every CPU allowed",
          "[distributed][cpu_binding]") {
  trainbus::testing::ScopedEnvironment environment;
  environment.unset("OMP_PROC_BIND").unset("OMP_PLACES").unset("GOMP_CPU_AFFINITY");
  CHECK(cpus_to_share().cpus == calling_thread_cpus());
  CHECK(cpus_to_share().openmp_variable.empty());
  environment.set("OMP_PROC_BIND", "FALSE");
  CHECK(cpus_to_share().openmp_variable.empty());
  for (const char* variable : {"OMP_PROC_BIND", "OMP_PLACES", "GOMP_CPU_AFFINITY"}) {
    environment.unset("OMP_PROC_BIND").set(variable, "close");
    const CpusToShare share = cpus_to_share();
    CHECK(share.openmp_variable == variable);
    // the cpuset (or the online CPUs), which holds this thread's
    for (int cpu : calling_thread_cpus())
      CHECK(std::find(share.cpus.begin(), share.cpus.end(), cpu) != share.cpus.end());
    environment.unset(variable);
  }
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
