// launch_ranks with small shell scripts as ranks: each rank's torchrun environment, and torchrun's
// supervision (the first failure named, the others stopped, SIGKILL after the grace period, the
// launcher's own SIGINT/SIGTERM passed on). Nothing sleeps to wait for a result: every test waits
// on launch_ranks, and every rank's script ends by itself within a minute should the launcher not
// stop it.
#include "distributed/launcher.h"
#include "distributed/cpu_binding.h"
#include "distributed/strategy.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <streambuf>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "base/errors.h"
#include "tests/support/scoped_environment.h"
#include "tests/support/temp_dir.h"

using namespace trainbus;
using namespace trainbus::distributed;
using trainbus::testing::ScopedEnvironment;
using trainbus::testing::TempDir;
using Clock = std::chrono::steady_clock;
using Shares = std::vector<std::vector<int>>;

namespace {

struct Launched {
  LaunchResult result;
  std::string log;
  std::chrono::milliseconds took{};
};

// Runs `script` as every rank: /bin/sh -c SCRIPT sh DIR, so that the script finds `dir` in "$1".
Launched launch_script(const std::string& script, const std::string& dir,
                       const LaunchOptions& options) {
  std::ostringstream log;
  const Clock::time_point start = Clock::now();
  Launched launched;
  launched.result = launch_ranks("/bin/sh", {"sh", "-c", script, "sh", dir}, options, log);
  launched.took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  launched.log = log.str();
  return launched;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// No child of this process is left, running or unreaped.
bool no_children_left() { return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

LaunchOptions two_ranks() {
  return LaunchOptions().nproc_per_node(2).grace_period(std::chrono::seconds(5));
}

}  // namespace

TEST_CASE("launch_ranks gives each rank torchrun's environment", "[distributed][launcher]") {
  TempDir dir;
  ScopedEnvironment environment;
  // What the shell running the tests may have, and a user's RANK: the launcher's values win.
  environment.set("RANK", "99").set("TRAINBUS_LAUNCHED", "0").unset("OMP_NUM_THREADS");
  const std::string script =
      "echo \"$RANK $WORLD_SIZE $LOCAL_RANK $LOCAL_WORLD_SIZE $GROUP_RANK $MASTER_ADDR "
      "$MASTER_PORT $TRAINBUS_LAUNCHED $OMP_NUM_THREADS\" > \"$1/rank$LOCAL_RANK\"";
  const LaunchOptions options =
      two_ranks().nnodes(3).node_rank(1).master_addr("node0").master_port(29411);

  SECTION("every rank exits with 0: the launcher does") {
    const Launched launched = launch_script(script, dir.path().string(), options);
    CHECK(launched.result.exit_code == 0);
    CHECK_FALSE(launched.result.first_failure);
    CHECK(launched.result.interrupted_by == 0);
    REQUIRE(launched.result.ranks.size() == 2);
    for (const RankExit& rank : launched.result.ranks) CHECK(rank.succeeded());
    const std::string threads = std::to_string(threads_per_rank(2));
    CHECK(read_file(dir.file("rank0")) == "2 6 0 2 1 node0 29411 1 " + threads + "\n");
    CHECK(read_file(dir.file("rank1")) == "3 6 1 2 1 node0 29411 1 " + threads + "\n");
    CHECK_THAT(launched.log, Catch::Contains("launcher: starting 2 ranks (RANK 2-3 of WORLD_SIZE "
                                             "6, node 1 of 3), MASTER_ADDR=node0 "
                                             "MASTER_PORT=29411, OMP_NUM_THREADS=" +
                                             threads + " each"));
    CHECK_THAT(launched.log, !Catch::Contains("failed"));
  }
  SECTION("an OMP_NUM_THREADS of the user's is kept") {
    environment.set("OMP_NUM_THREADS", "7");
    const Launched launched = launch_script(script, dir.path().string(), options);
    CHECK(launched.result.exit_code == 0);
    CHECK_THAT(read_file(dir.file("rank1")), Catch::EndsWith(" 1 7\n"));
    CHECK_THAT(launched.log, Catch::Contains("OMP_NUM_THREADS=7 (set by you)"));
  }
  CHECK(no_children_left());
}

TEST_CASE("Each rank gets its share of the CPUs as OMP_NUM_THREADS", "[distributed][launcher]") {
  const int all = threads_per_rank(1);
  CHECK(all >= 1);
  CHECK(threads_per_rank(2) == std::max(1, all / 2));
  CHECK(threads_per_rank(all * 4) == 1);
}

TEST_CASE("Each rank runs on CPUs of its own, unless told not to", "[distributed][launcher]") {
  TempDir dir;
  ScopedEnvironment environment;
  environment.unset("OMP_NUM_THREADS").unset("OMP_PROC_BIND").unset("OMP_PLACES");
  environment.unset("GOMP_CPU_AFFINITY");
  const std::string script =
      "sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status > \"$1/rank$LOCAL_RANK\"; "
      "echo \"$OMP_NUM_THREADS\" > \"$1/threads$LOCAL_RANK\"";
  // As the kernel lists this thread's CPUs (sched_getaffinity leaves out offline ones).
  const auto own_list = [] {
    std::string line;
    std::ifstream status("/proc/thread-self/status");
    while (std::getline(status, line)) {
      if (line.rfind("Cpus_allowed_list:", 0) == 0)
        return line.substr(line.find_first_not_of(" \t", 18));
    }
    return std::string("?");
  };
  const std::vector<int> launcher_cpus = calling_thread_cpus();
  const Shares shares = cpus_for_local_ranks(cpus_by_core(cpus_to_share().cpus), 2);

  SECTION("bound: rank 0 on the first share, rank 1 on the next, and the log says so") {
    const Launched launched = launch_script(script, dir.path().string(), two_ranks());
    REQUIRE(launched.result.exit_code == 0);
    if (shares.empty()) {
      WARN("this machine lets the tests use one CPU: two ranks cannot have one each");
      CHECK(read_file(dir.file("rank0")) == own_list() + "\n");
      CHECK_THAT(launched.log, Catch::Contains("launcher: the ranks are not bound to CPUs of "
                                               "their own: 2 ranks share 1 CPU"));
    } else {
      std::string expected_log =
          "launcher: each rank on CPUs of its own (--no-cpu-binding lets them move):";
      for (int local_rank = 0; local_rank < 2; ++local_rank) {
        const std::vector<int>& share = shares[static_cast<size_t>(local_rank)];
        const std::string suffix = std::to_string(local_rank);
        CHECK(read_file(dir.file("rank" + suffix)) == cpu_list_text(share) + "\n");
        // as many threads as CPUs
        CHECK(read_file(dir.file("threads" + suffix)) == std::to_string(share.size()) + "\n");
        expected_log += std::string(local_rank == 0 ? " " : ", ") + "rank " + suffix + " on CPU" +
                        (share.size() == 1 ? " " : "s ") + cpu_list_text(share);
      }
      CHECK_THAT(launched.log, Catch::Contains(expected_log + "\n"));
    }
  }
  SECTION("an OMP_NUM_THREADS of the user's above a rank's CPUs is warned about") {
    environment.set("OMP_NUM_THREADS", "64");
    const Launched launched = launch_script(script, dir.path().string(), two_ranks());
    REQUIRE(launched.result.exit_code == 0);
    CHECK(read_file(dir.file("threads1")) == "64\n");
    if (!shares.empty()) {
      CHECK_THAT(launched.log, Catch::Contains("launcher: warning: OMP_NUM_THREADS=64 (set by "
                                               "you) is more threads than the " +
                                               std::to_string(shares[0].size()) + " CPU"));
    }
  }
  SECTION("not bound: every rank may use the launcher's CPUs") {
    const Launched launched =
        launch_script(script, dir.path().string(), two_ranks().bind_cpus(false));
    REQUIRE(launched.result.exit_code == 0);
    CHECK(read_file(dir.file("rank0")) == own_list() + "\n");
    CHECK(read_file(dir.file("rank1")) == own_list() + "\n");
    CHECK_THAT(launched.log, !Catch::Contains("CPUs of its own"));
  }
  SECTION("with OpenMP's binding set, the CPUs shared out are the cpuset's, and the log says why") {
    environment.set("OMP_PROC_BIND", "true");
    const Launched launched = launch_script(script, dir.path().string(), two_ranks());
    REQUIRE(launched.result.exit_code == 0);
    CHECK_THAT(launched.log, Catch::Contains("launcher: OMP_PROC_BIND is set, for which OpenMP "
                                             "bound this process to one CPU as it started: the "
                                             "ranks share out CPUs " +
                                             cpu_list_text(cpus_to_share().cpus)));
  }
  CHECK(calling_thread_cpus() == launcher_cpus);  // the launcher's own thread has them back
  CHECK(no_children_left());
}

TEST_CASE("Each rank gets NCCL's async error handling, as torchrun sets it, unless set",
          "[distributed][launcher]") {
  TempDir dir;
  ScopedEnvironment environment;
  environment.unset("NCCL_ASYNC_ERROR_HANDLING").unset("TORCH_NCCL_ASYNC_ERROR_HANDLING");
  const std::string script =
      "echo \"${NCCL_ASYNC_ERROR_HANDLING-unset} ${TORCH_NCCL_ASYNC_ERROR_HANDLING-unset}\" > "
      "\"$1/rank$LOCAL_RANK\"";
  SECTION("unset: 1, so that a hung NCCL collective ends at the timeout") {
    REQUIRE(launch_script(script, dir.path().string(), two_ranks()).result.exit_code == 0);
    CHECK(read_file(dir.file("rank0")) == "1 1\n");
    CHECK(read_file(dir.file("rank1")) == "1 1\n");
  }
  SECTION("the user's value is kept") {
    environment.set("NCCL_ASYNC_ERROR_HANDLING", "0");
    REQUIRE(launch_script(script, dir.path().string(), two_ranks()).result.exit_code == 0);
    CHECK(read_file(dir.file("rank1")) == "0 1\n");
  }
}

TEST_CASE("A failing rank stops the others and is named as the failure",
          "[distributed][launcher]") {
  TempDir dir;
  SECTION("rank 1 exits with 3 while rank 0 sleeps") {
    const Launched launched =
        launch_script("if [ \"$LOCAL_RANK\" = 1 ]; then exit 3; fi; exec sleep 60",
                      dir.path().string(), two_ranks());
    CHECK(launched.took < std::chrono::seconds(10));  // not the sleep
    CHECK(launched.result.exit_code == 3);
    REQUIRE(launched.result.first_failure == std::optional<std::size_t>(1));
    const RankExit& failed = launched.result.ranks[1];
    const RankExit& stopped = launched.result.ranks[0];
    CHECK_FALSE(failed.stopped);
    CHECK(stopped.stopped);
    CHECK(stopped.how == RankExit::How::kKilled);
    CHECK(stopped.code == SIGTERM);
    CHECK_THAT(launched.log, Catch::Contains("launcher: the job failed: rank 1 (pid " +
                                             std::to_string(failed.pid) +
                                             ") exited with code 3 (the first "
                                             "failure"));
    CHECK_THAT(launched.log,
               Catch::Contains("launcher:   rank 0 (pid " + std::to_string(stopped.pid) +
                               ") was killed by signal SIGTERM (15), stopped by the "
                               "launcher"));
  }
  SECTION("rank 1 is killed by SIGKILL") {
    const Launched launched =
        launch_script("if [ \"$LOCAL_RANK\" = 1 ]; then kill -KILL $$; fi; exec sleep 60",
                      dir.path().string(), two_ranks());
    CHECK(launched.took < std::chrono::seconds(10));
    CHECK(launched.result.exit_code == 128 + SIGKILL);
    REQUIRE(launched.result.first_failure == std::optional<std::size_t>(1));
    CHECK_THAT(launched.log, Catch::Contains("the job failed: rank 1 (pid ") &&
                                 Catch::Contains(") was killed by signal SIGKILL (9)"));
    CHECK(launched.result.ranks[0].stopped);
  }
  SECTION("with --nnodes 2 the ranks are named by RANK, with their local rank") {
    const Launched launched =
        launch_script("exit $LOCAL_RANK", dir.path().string(), two_ranks().nnodes(2).node_rank(1));
    CHECK(launched.result.exit_code == 1);
    CHECK_THAT(launched.log, Catch::Contains("the job failed: rank 3 (local rank 1, pid "));
    // Rank 2 exits with 0, or is stopped first: the race is the shell's.
    CHECK_THAT(launched.log, Catch::Contains("launcher:   rank 2 (local rank 0, pid "));
  }
  CHECK(no_children_left());
}

TEST_CASE("A rank that ignores SIGTERM is killed after the grace period",
          "[distributed][launcher]") {
  TempDir dir;
  // Rank 0 ignores SIGTERM (sleep inherits that) and says so; rank 1 fails once it has (or after
  // 10 s of looking, so that a broken rank 0 cannot hang the test).
  const std::string script =
      "if [ \"$LOCAL_RANK\" = 0 ]; then trap '' TERM; : > \"$1/ready\"; exec sleep 60; fi; "
      "i=0; while [ ! -e \"$1/ready\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; "
      "exit 3";
  const Launched launched = launch_script(script, dir.path().string(),
                                          two_ranks().grace_period(std::chrono::milliseconds(300)));
  CHECK(launched.took < std::chrono::seconds(10));
  CHECK(launched.result.exit_code == 3);
  CHECK(launched.result.first_failure == std::optional<std::size_t>(1));
  const RankExit& stubborn = launched.result.ranks[0];
  CHECK(stubborn.how == RankExit::How::kKilled);
  CHECK(stubborn.code == SIGKILL);
  CHECK(stubborn.stopped);
  CHECK_THAT(launched.log, Catch::Contains("rank 0 (pid " + std::to_string(stubborn.pid) +
                                           ") still runs 300 ms after being told to stop; "
                                           "sending SIGKILL"));
  CHECK(no_children_left());
}

TEST_CASE("A rank that cannot be started is named and nothing is left running",
          "[distributed][launcher]") {
  std::ostringstream log;
  const LaunchResult result =
      launch_ranks("/nonexistent/trainbus", {"trainbus", "fit"}, two_ranks(), log);
  CHECK(result.exit_code == 127);
  REQUIRE(result.first_failure == std::optional<std::size_t>(0));
  CHECK(result.ranks[0].how == RankExit::How::kNotStarted);
  CHECK(result.ranks[1].how == RankExit::How::kNotStarted);
  CHECK(result.ranks[1].error.empty());
  CHECK_THAT(log.str(), Catch::Contains("could not start rank 0: No such file or directory"));
  CHECK_THAT(log.str(), Catch::Contains("launcher:   rank 1 was not started"));
  CHECK(no_children_left());
}

TEST_CASE("SIGINT and SIGTERM to the launcher are passed on to the ranks",
          "[distributed][launcher]") {
  TempDir dir;
  // Rank 1 says it is ready (after `setup`); rank 0 waits for that (10 s at most), then signals
  // the launcher, its parent, with `signals`; both then wait to be stopped.
  const auto script = [](const std::string& setup, const std::string& signals) {
    return setup + "; if [ \"$LOCAL_RANK\" = 1 ]; then : > \"$1/ready\"; exec sleep 60; fi; " +
           "i=0; while [ ! -e \"$1/ready\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
           "done; " +
           signals + "; exec sleep 60";
  };
  SECTION("a SIGTERM stops every rank; the launcher's status is 128 + SIGTERM") {
    const Launched launched =
        launch_script(script(":", "kill -TERM $PPID"), dir.path().string(), two_ranks());
    CHECK(launched.took < std::chrono::seconds(10));
    CHECK(launched.result.interrupted_by == SIGTERM);
    CHECK(launched.result.exit_code == 128 + SIGTERM);
    CHECK_FALSE(launched.result.first_failure);
    for (const RankExit& rank : launched.result.ranks) {
      CHECK(rank.stopped);
      CHECK(rank.how == RankExit::How::kKilled);
      CHECK(rank.code == SIGTERM);
    }
    CHECK_THAT(launched.log,
               Catch::Contains("launcher: received SIGTERM (15); passing it on to the ranks"));
    CHECK_THAT(launched.log, Catch::Contains("launcher: the job was interrupted by SIGTERM (15)"));
  }
  SECTION("a SIGHUP (the terminal closed) stops every rank with SIGTERM") {
    const Launched launched =
        launch_script(script(":", "kill -HUP $PPID"), dir.path().string(), two_ranks());
    CHECK(launched.took < std::chrono::seconds(10));
    CHECK(launched.result.interrupted_by == SIGHUP);
    CHECK(launched.result.exit_code == 128 + SIGHUP);
    for (const RankExit& rank : launched.result.ranks) {
      CHECK(rank.stopped);
      CHECK(rank.how == RankExit::How::kKilled);
      CHECK(rank.code == SIGTERM);
    }
    CHECK_THAT(launched.log,
               Catch::Contains("launcher: received SIGHUP (1); passing SIGTERM on to the ranks"));
  }
  SECTION("a second signal kills the ranks at once, without the grace period") {
    // Both ranks ignore SIGINT and SIGTERM; rank 0 sends the launcher one of each.
    const Launched launched =
        launch_script(script("trap '' INT TERM", "kill -INT $PPID; kill -TERM $PPID"),
                      dir.path().string(), two_ranks().grace_period(std::chrono::seconds(60)));
    CHECK(launched.took < std::chrono::seconds(10));
    CHECK(launched.result.interrupted_by == SIGINT);
    CHECK(launched.result.exit_code == 128 + SIGINT);
    for (const RankExit& rank : launched.result.ranks) {
      CHECK(rank.how == RankExit::How::kKilled);
      CHECK(rank.code == SIGKILL);
    }
    CHECK_THAT(launched.log,
               Catch::Contains("received SIGTERM (15) while stopping; sending SIGKILL"));
  }
  CHECK(no_children_left());
}

TEST_CASE("Bad launch options are named by their flag before anything starts",
          "[distributed][launcher]") {
  const auto error_of = [](const LaunchOptions& options) {
    try {
      options.validate();
    } catch (const MisconfigurationError& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  CHECK(error_of(LaunchOptions()) == "no error");
  CHECK(error_of(LaunchOptions().nproc_per_node(4).nnodes(2).node_rank(1)) == "no error");
  CHECK_THAT(error_of(LaunchOptions().nproc_per_node(0)),
             Catch::StartsWith("--nproc-per-node must be >= 1, got 0"));
  CHECK_THAT(error_of(LaunchOptions().nnodes(0)),
             Catch::StartsWith("--nnodes must be >= 1, got 0"));
  CHECK_THAT(error_of(LaunchOptions().nnodes(2).node_rank(2)),
             Catch::StartsWith("--node-rank must be in [0, --nnodes=2), got 2: number the "
                               "machines 0 to 1"));
  CHECK_THAT(error_of(LaunchOptions().node_rank(-1)),
             Catch::StartsWith("--node-rank must be in [0, --nnodes=1), got -1"));
  CHECK_THAT(error_of(LaunchOptions().master_port(0)),
             Catch::StartsWith("--master-port must be in [1, 65535], got 0"));
  CHECK_THAT(error_of(LaunchOptions().master_port(65536)),
             Catch::StartsWith("--master-port must be in [1, 65535], got 65536"));
  CHECK_THAT(error_of(LaunchOptions().master_addr("")),
             Catch::StartsWith("--master-addr is empty"));
  CHECK_THAT(error_of(LaunchOptions().nproc_per_node(1 << 16).nnodes(1 << 16).node_rank(0)),
             Catch::Contains("is more ranks than"));
  CHECK_THAT(error_of(LaunchOptions().grace_period(std::chrono::milliseconds(-1))),
             Catch::Contains("grace period must be >= 0"));
  CHECK_THAT(error_of(LaunchOptions().culprit_wait(std::chrono::milliseconds(-1))),
             Catch::Contains("culprit wait must be >= 0"));

  std::ostringstream log;
  CHECK_THROWS_AS(launch_ranks("/bin/true", {"true"}, LaunchOptions().nproc_per_node(0), log),
                  MisconfigurationError);
  CHECK_THROWS_AS(launch_ranks("/bin/true", {}, LaunchOptions(), log), MisconfigurationError);
  CHECK(log.str().empty());  // nothing was started
}

TEST_CASE("TRAINBUS_LAUNCHED=1 marks a process the launcher started", "[distributed][launcher]") {
  ScopedEnvironment environment;
  environment.unset(kLaunchedVariable);
  CHECK_FALSE(launched_by_trainbus());
  environment.set(kLaunchedVariable, "0");
  CHECK_FALSE(launched_by_trainbus());
  environment.set(kLaunchedVariable, "1");
  CHECK(launched_by_trainbus());
}

TEST_CASE("A rank that ended because another rank failed is not named as the job's failure",
          "[distributed][launcher]") {
  TempDir dir;
  const std::string another = std::to_string(kAnotherRankFailedExitCode);
  SECTION("node 1 of 2, whose rank only saw another node's rank go: the failure is elsewhere") {
    // No other failure comes within the grace period (1 s here, 5 s at most): rank 2 is named.
    const Launched launched =
        launch_script("if [ \"$LOCAL_RANK\" = 0 ]; then exit " + another + "; fi; exec sleep 60",
                      dir.path().string(),
                      two_ranks().nnodes(2).node_rank(1).grace_period(std::chrono::seconds(1)));
    CHECK(launched.took < std::chrono::seconds(10));
    CHECK_THAT(launched.log,
               Catch::Contains("exited with code 75 (another rank failed); waiting up "
                               "to 1 s for the rank that failed first"));
    CHECK(launched.result.exit_code == kAnotherRankFailedExitCode);
    REQUIRE(launched.result.first_failure == std::optional<std::size_t>(0));
    CHECK_THAT(launched.log,
               Catch::Contains("launcher: the job stopped: rank 2 (local rank 0, pid " +
                               std::to_string(launched.result.ranks[0].pid) +
                               ") ended because another rank failed (exit code 75") &&
                   Catch::Contains("the first failure is on another node: its launcher's report "
                                   "names it"));
    CHECK_THAT(launched.log, !Catch::Contains("the job failed"));
    // The rank that went on (here: sleeps) is pointed at as the one that may hang.
    CHECK_THAT(launched.log,
               Catch::Contains("no rank failed on its own; still running after the others "
                               "ended: rank 3 (local rank 1, pid " +
                               std::to_string(launched.result.ranks[1].pid) + ")"));
  }
  SECTION("on one machine, the rank that failed on its own is named, not the one it took along") {
    // Rank 1 fails; rank 0 notices once rank 1 is gone (its file written just before the exit).
    const std::string script =
        "if [ \"$LOCAL_RANK\" = 1 ]; then : > \"$1/gone\"; exit 3; fi; "
        "i=0; while [ ! -e \"$1/gone\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; "
        "exit " +
        another;
    const Launched launched = launch_script(script, dir.path().string(), two_ranks());
    CHECK(launched.result.exit_code == 3);
    REQUIRE(launched.result.first_failure == std::optional<std::size_t>(1));
    CHECK_THAT(launched.log, Catch::Contains("the job failed: rank 1 (pid "));
  }
  SECTION("on one machine, the rank that failed on its own is named also when reaped after") {
    // Rank 1 exits with 75 at once; rank 0 fails only once the launcher has reaped rank 1 (a rank
    // not yet reaped still answers `kill -0`), as a rank still writing its error would.
    const std::string script =
        "if [ \"$LOCAL_RANK\" = 1 ]; then echo $$ > \"$1/pid.tmp\"; mv \"$1/pid.tmp\" \"$1/pid\"; "
        "exit " +
        another +
        "; fi; "
        "i=0; while [ ! -e \"$1/pid\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; "
        "pid=$(cat \"$1/pid\"); "
        "i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
        "done; exit 3";
    const Launched launched = launch_script(script, dir.path().string(), two_ranks());
    CHECK(launched.took < std::chrono::seconds(5));  // not the wait's bound
    CHECK(launched.result.exit_code == 3);
    REQUIRE(launched.result.first_failure == std::optional<std::size_t>(0));
    CHECK_THAT(launched.log, Catch::Contains("the job failed: rank 0 (pid "));
    CHECK_THAT(launched.log, Catch::Contains("launcher:   rank 1 (pid " +
                                             std::to_string(launched.result.ranks[1].pid) +
                                             ") exited with code 75"));
  }
  CHECK(no_children_left());
}

TEST_CASE("A rank that declared its failure is named at once and may finish its cleanup",
          "[distributed][launcher]") {
  TempDir dir;
  const std::string another = std::to_string(kAnotherRankFailedExitCode);
  // The real case: rank 1 fails on its own and declares it; rank 0 finds rank 1 gone, declares
  // that, and saves OnExceptionCheckpoint's checkpoint (rank 0 alone writes), here 1 s from when
  // the launcher has reaped rank 1: more than the wait before SIGTERM, which would end it
  // before its cleanup is done.
  const std::string wait_for =
      "i=0; while [ ! -e \"$W\" ] && [ $i -lt 1000 ]; do sleep 0.01; "
      "i=$((i+1)); done; ";
  const auto waiting_for = [&](const std::string& file) {
    return "W=\"" + file + "\"; " + wait_for;
  };
  const std::string script =
      "status=\"$TRAINBUS_LAUNCHER_STATUS_DIR\"; "
      "if [ \"$LOCAL_RANK\" = 1 ]; then "
      "  printf 'own\\nrank 1 of 2: the data file is missing\\n' > \"$status/tmp1\"; "
      "  mv \"$status/tmp1\" \"$status/rank-$RANK\"; " +
      waiting_for("$status/rank-0") +
      "  echo $$ > \"$1/pid.tmp\"; mv \"$1/pid.tmp\" \"$1/pid\"; exit 3; "
      "fi; " +
      waiting_for("$status/rank-1") +
      "printf 'another-rank\\nrank 0 of 2: all-reduce failed\\n' > \"$status/tmp0\"; "
      "mv \"$status/tmp0\" \"$status/rank-$RANK\"; " +
      waiting_for("$1/pid") +
      "pid=$(cat \"$1/pid\"); "
      "i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
      "done; "
      "sleep 1.5; : > \"$1/cleaned-up\"; exit " +
      another;
  const Launched launched = launch_script(script, dir.path().string(), two_ranks());
  INFO(launched.log);
  CHECK(launched.result.exit_code == 3);
  REQUIRE(launched.result.first_failure == std::optional<std::size_t>(1));
  const RankExit& failed = launched.result.ranks[1];
  CHECK(failed.how == RankExit::How::kExited);
  CHECK(failed.declared.own_failure);
  CHECK(failed.declared.reason == "rank 1 of 2: the data file is missing");
  const RankExit& saving = launched.result.ranks[0];
  CHECK_FALSE(saving.stopped);
  CHECK(saving.how == RankExit::How::kExited);
  CHECK(saving.code == kAnotherRankFailedExitCode);
  CHECK(std::ifstream(dir.file("cleaned-up")).good());
  CHECK_FALSE(saving.declared.own_failure);
  CHECK(saving.declared.reason == "rank 0 of 2: all-reduce failed");
  CHECK_THAT(launched.log,
             Catch::Contains("launcher: the job failed: rank 1 (pid " + std::to_string(failed.pid) +
                             ") exited with code 3 (the first failure: rank 1 of "
                             "2: the data file is missing)"));
  CHECK(no_children_left());
}

TEST_CASE("A declared failure that is still running is named, its exit with 0 still fails the job",
          "[distributed][launcher]") {
  TempDir dir;
  const std::string another = std::to_string(kAnotherRankFailedExitCode);
  // Rank 1 declares its failure; rank 0 then exits with 75 and the launcher names rank 1, which
  // still runs; rank 1 recovers after all and exits with 0 once rank 0 is reaped.
  const std::string script =
      "status=\"$TRAINBUS_LAUNCHER_STATUS_DIR\"; "
      "if [ \"$LOCAL_RANK\" = 1 ]; then "
      "  printf 'own\\nrank 1 of 2: the data file is missing\\n' > \"$status/tmp1\"; "
      "  mv \"$status/tmp1\" \"$status/rank-$RANK\"; "
      "  i=0; while [ ! -e \"$1/pid\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; "
      "  pid=$(cat \"$1/pid\"); "
      "  i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 1000 ]; do sleep 0.01; "
      "i=$((i+1)); done; "
      "  exit 0; "
      "fi; "
      "i=0; while [ ! -e \"$status/rank-1\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
      "done; "
      "echo $$ > \"$1/pid.tmp\"; mv \"$1/pid.tmp\" \"$1/pid\"; exit " +
      another;
  const Launched launched = launch_script(script, dir.path().string(),
                                          two_ranks().culprit_wait(std::chrono::milliseconds(200)));
  INFO(launched.log);
  REQUIRE(launched.result.first_failure == std::optional<std::size_t>(1));
  CHECK(launched.result.ranks[1].succeeded());
  CHECK_THAT(launched.log, Catch::Contains("launcher: rank 1 (pid " +
                                           std::to_string(launched.result.ranks[1].pid) +
                                           ") declared that it failed: rank 1 of 2: the data file "
                                           "is missing"));
  CHECK(launched.result.exit_code == 1);
  // The report says what happened, not only "exited with code 0".
  CHECK_THAT(launched.log,
             Catch::Contains("launcher: the job failed: rank 1 (pid " +
                             std::to_string(launched.result.ranks[1].pid) +
                             ") declared that it failed (rank 1 of 2: the data file is missing), "
                             "then exited with code 0 (the first failure; the launcher exits "
                             "with 1)"));
  CHECK(no_children_left());
}

TEST_CASE("A rank that ended without declaring comes before a later declaration",
          "[distributed][launcher]") {
  TempDir dir;
  // Rank 0 declares that it failed on its own, its declaration dated `when` (touch -d); rank 1
  // then dies by SIGKILL, which declares nothing. Rank 0 exits with 3 once rank 1 is reaped.
  const auto script = [](const std::string& when) {
    return "status=\"$TRAINBUS_LAUNCHER_STATUS_DIR\"; "
           "if [ \"$LOCAL_RANK\" = 0 ]; then "
           "  printf 'own\\nrank 0 of 2: a bad batch\\n' > \"$status/tmp0\"; "
           "  touch -d \"@$(( $(date +%s) " +
           when +
           " ))\" \"$status/tmp0\"; "
           "  mv \"$status/tmp0\" \"$status/rank-$RANK\"; "
           "  i=0; while [ ! -e \"$1/pid\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
           "done; "
           "  pid=$(cat \"$1/pid\"); "
           "  i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 1000 ]; do sleep 0.01; "
           "i=$((i+1)); done; "
           "  exit 3; "
           "fi; "
           "i=0; while [ ! -e \"$status/rank-0\" ] && [ $i -lt 1000 ]; do sleep 0.01; "
           "i=$((i+1)); done; "
           "echo $$ > \"$1/pid.tmp\"; mv \"$1/pid.tmp\" \"$1/pid\"; kill -KILL $$";
  };
  SECTION("a declaration dated after the crash (as one written after it): the crash is first") {
    const Launched launched = launch_script(script("+ 3600"), dir.path().string(), two_ranks());
    INFO(launched.log);
    REQUIRE(launched.result.first_failure == std::optional<std::size_t>(1));
    CHECK(launched.result.exit_code == 128 + SIGKILL);
    CHECK(launched.result.ranks[0].how == RankExit::How::kExited);  // not told to stop
  }
  SECTION("a declaration older than the last time the crashed rank was seen running is first") {
    const Launched launched = launch_script(script("- 3600"), dir.path().string(), two_ranks());
    INFO(launched.log);
    REQUIRE(launched.result.first_failure == std::optional<std::size_t>(0));
    CHECK(launched.result.exit_code == 3);
  }
  CHECK(no_children_left());
}

TEST_CASE("A rank declares its failure in the launcher's directory, once, elsewhere, nothing",
          "[distributed][launcher]") {
  TempDir dir;
  ScopedEnvironment environment;
  environment.set("RANK", "3");
  SECTION("launched: the first declaration is kept, its reason on one line") {
    environment.set(kStatusDirVariable, dir.path().string());
    declare_rank_failure(std::runtime_error("rank 3 of 4: bad batch\nmore detail"));
    declare_rank_failure(PeerLostError("rank 3 of 4: all-reduce failed"));
    CHECK(read_file(dir.file("rank-3")) == "own\nrank 3 of 4: bad batch\n");
    CHECK(testing::names_in(dir.path().string()) ==
          std::set<std::string>{"rank-3"});  // no temporary
  }
  SECTION("launched: a rank that stops because another rank failed says so") {
    environment.set(kStatusDirVariable, dir.path().string());
    declare_rank_failure(PeerLostError("rank 3 of 4: all-reduce failed"));
    CHECK(read_file(dir.file("rank-3")) == "another-rank\nrank 3 of 4: all-reduce failed\n");
  }
  SECTION("started by another launcher (torchrun): no variable, no file, no error") {
    environment.unset(kStatusDirVariable);
    declare_rank_failure(std::runtime_error("rank 3 of 4: bad batch"));
    CHECK(testing::names_in(dir.path().string()).empty());
  }
  SECTION("a directory that is gone: no error") {
    environment.set(kStatusDirVariable, dir.file("gone"));
    declare_rank_failure(std::runtime_error("rank 3 of 4: bad batch"));
    CHECK(testing::names_in(dir.path().string()).empty());
  }
}

TEST_CASE("Each rank gets a status directory of the launch's own, removed after it",
          "[distributed][launcher]") {
  TempDir dir;
  const Launched launched = launch_script(
      "echo \"$TRAINBUS_LAUNCHER_STATUS_DIR\" > \"$1/status$LOCAL_RANK\"; "
      "[ -d \"$TRAINBUS_LAUNCHER_STATUS_DIR\" ] && : > "
      "\"$TRAINBUS_LAUNCHER_STATUS_DIR/rank-$RANK\"",
      dir.path().string(), two_ranks());
  CHECK(launched.result.exit_code == 0);
  const std::string status = read_file(dir.file("status0"));
  CHECK_THAT(status, Catch::Contains("/trainbus-launch-"));
  CHECK(read_file(dir.file("status1")) == status);
  CHECK_FALSE(std::filesystem::exists(status.substr(0, status.size() - 1)));
}

TEST_CASE("A loopback --master-addr with several nodes is warned about",
          "[distributed][launcher]") {
  TempDir dir;
  const auto log_with = [&](const LaunchOptions& options) {
    return launch_script("exit 0", dir.path().string(), options).log;
  };
  const std::string warning = "is a loopback address, but the job has 2 nodes";
  CHECK_THAT(log_with(two_ranks().nnodes(2).node_rank(1).master_addr("127.0.0.1")),
             Catch::Contains("launcher: warning: --master-addr 127.0.0.1 " + warning) &&
                 Catch::Contains("not 127.0.0.1, localhost or a host name"));
  CHECK_THAT(log_with(two_ranks().nnodes(2).node_rank(0).master_addr("localhost")),
             Catch::Contains("--master-addr localhost " + warning));
  CHECK_THAT(log_with(two_ranks().nnodes(2).node_rank(1).master_addr("127.0.1.1")),
             Catch::Contains(warning));
  // Another machine's address, or one node on loopback: nothing to say.
  CHECK_THAT(log_with(two_ranks().nnodes(2).node_rank(1).master_addr("10.231.7.1")),
             !Catch::Contains("warning"));
  CHECK_THAT(log_with(two_ranks().master_addr("127.0.0.1")), !Catch::Contains("warning"));
  CHECK(no_children_left());
}

TEST_CASE("A rank's exit code says whether it failed only because another rank did",
          "[distributed][launcher]") {
  // By type: a collective that lost a peer, or a save another rank's failure ended.
  CHECK(
      rank_exit_code(PeerLostError("rank 0 of 2: all-reduce failed: Connection closed by peer")) ==
      kAnotherRankFailedExitCode);
  CHECK(rank_exit_code(AnotherRankFailedError(
            "rank 1 of 2: rank 0 failed to save checkpoint c.ckpt, so this rank stops too")) ==
        kAnotherRankFailedExitCode);
  // Its own failures, whatever their text says: an error inside a collective that was not the
  // transport's (a user's autograd function in backward), a rendezvous, anything else.
  CHECK(rank_exit_code(DistributedError(
            "rank 1 of 2: backward (averaging gradients across ranks) failed on this rank: Another "
            "rank stopped, says a user's autograd function")) == 1);
  CHECK(rank_exit_code(DistributedError("rank 1 of 2: the rendezvous at 10.0.0.1:29500 failed")) ==
        1);
  CHECK(rank_exit_code(CheckpointError("Another rank stopped, says a checkpoint error")) == 1);
  CHECK(rank_exit_code(std::runtime_error("Another rank stopped, says a user's error")) == 1);
}

namespace {

// An unbuffered stream buffer that writes to a file descriptor.
class DescriptorBuffer : public std::streambuf {
 public:
  explicit DescriptorBuffer(int fd) : fd_(fd) {}

 protected:
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char byte = traits_type::to_char_type(c);
    return ::write(fd_, &byte, 1) == 1 ? c : traits_type::eof();
  }
  std::streamsize xsputn(const char* text, std::streamsize size) override {
    const ssize_t wrote = ::write(fd_, text, static_cast<std::size_t>(size));
    return wrote < 0 ? 0 : wrote;
  }

 private:
  int fd_;
};

// The status of `child` once it ends; at `deadline` it is killed (SIGKILL) and the test fails.
// Stopped (SIGSTOP) for `continue_after` seconds, it is sent SIGCONT: whoever was to do that
// did not.
int wait_bounded(pid_t child, std::chrono::seconds deadline, int continue_after = 0) {
  const auto start = Clock::now();
  auto stopped_since = start;
  bool stopped = false;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(child, &status, WNOHANG | WUNTRACED | WCONTINUED);
    if (done == child && (WIFEXITED(status) || WIFSIGNALED(status))) return status;
    if (done == child && WIFSTOPPED(status)) {
      stopped = true;
      stopped_since = Clock::now();
    } else if (done == child && WIFCONTINUED(status)) {
      stopped = false;
    }
    if (stopped && continue_after > 0 &&
        Clock::now() - stopped_since > std::chrono::seconds(continue_after)) {
      ::kill(child, SIGCONT);
      stopped = false;
    }
    if (Clock::now() - start > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      FAIL("the launch did not end within " << deadline.count() << " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

TEST_CASE("A launcher whose log nobody reads any more still stops its ranks and cleans up",
          "[distributed][launcher]") {
  // `trainbus fit --nproc-per-node 2 2>&1 | tee log`, and tee gone (a Ctrl-C): the launcher's log
  // is a pipe without a reader. A forked child runs the launch, since a SIGPIPE would end it.
  TempDir dir;
  ScopedEnvironment environment;
  environment.set("TMPDIR", dir.path().string());  // where the launch makes its status directory
  int fds[2] = {-1, -1};
  REQUIRE(::pipe(fds) == 0);
  ::close(fds[0]);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::signal(SIGPIPE, SIG_DFL);  // as a user's shell leaves it, whatever the test runner's is
    int code = 100;
    try {
      DescriptorBuffer buffer(fds[1]);
      std::ostream log(&buffer);
      code =
          launch_ranks("/bin/sh",
                       {"sh", "-c", "if [ \"$LOCAL_RANK\" = 1 ]; then exit 3; fi; exec sleep 60"},
                       two_ranks(), log)
              .exit_code;
    } catch (...) {
      code = 101;
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  const int status = wait_bounded(child, std::chrono::seconds(60));
  INFO("killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
  CHECK_FALSE(WIFSIGNALED(status));
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 3));  // rank 1's failure, reported
  CHECK(testing::names_in(dir.path().string()).empty());   // the status directory went
  CHECK(no_children_left());
}

TEST_CASE("A crash that ended beside a later declaration comes first, whatever the reap order",
          "[distributed][launcher]") {
  TempDir dir;
  // Both ranks end while the launcher is stopped (SIGSTOP), so that one look finds both: rank 0,
  // which declared its failure (dated an hour ahead, as one written after the crash), exits with
  // 3; rank 1 dies by SIGKILL without declaring. Rank 1 stops the launcher, waits for rank 0 to
  // end, and leaves a helper that lets the launcher go on once rank 1 is dead too. Every wait
  // gives up after 10 s, so that a broken launcher cannot stay stopped.
  const std::string script =
      "status=\"$TRAINBUS_LAUNCHER_STATUS_DIR\"; "
      "state() { sed -n 's/^.*) \\(.\\).*$/\\1/p' \"/proc/$1/stat\" 2>/dev/null; }; "
      "if [ \"$LOCAL_RANK\" = 0 ]; then "
      "  echo $$ > \"$1/pid.tmp\"; mv \"$1/pid.tmp\" \"$1/pid0\"; "
      "  printf 'own\\nrank 0 of 2: a bad batch\\n' > \"$status/tmp0\"; "
      "  touch -d \"@$(( $(date +%s) + 3600 ))\" \"$status/tmp0\"; "
      "  mv \"$status/tmp0\" \"$status/rank-$RANK\"; "
      "  i=0; while [ ! -e \"$1/stopped\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; "
      "  exit 3; "
      "fi; "
      "i=0; while [ ! -e \"$status/rank-0\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
      "done; "
      "pid0=$(cat \"$1/pid0\"); launcher=$PPID; me=$$; "
      "kill -STOP $launcher; "
      "i=0; while [ \"$(state $launcher)\" != T ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
      "done; "
      ": > \"$1/stopped\"; "
      "i=0; while [ \"$(state $pid0)\" != Z ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
      "done; "
      "( i=0; while [ \"$(state $me)\" != Z ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
      "done; kill -CONT $launcher ) & "
      "kill -KILL $$";
  // The launch runs in a forked child, which rank 1 stops: should the helper that lets it go on
  // die, this process (not stopped) does, and ends it at a deadline.
  const std::string result_file = dir.file("result");
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int code = 100;
    try {
      const Launched launched = launch_script(script, dir.path().string(), two_ranks());
      std::ofstream(result_file) << (launched.result.first_failure
                                         ? static_cast<int>(*launched.result.first_failure)
                                         : -1)
                                 << " " << launched.result.exit_code << " "
                                 << static_cast<int>(launched.result.ranks[0].how) << " "
                                 << launched.result.ranks[0].code << "\n"
                                 << launched.log;
      code = 0;
    } catch (...) {
      code = 101;
    }
    ::_exit(code);
  }
  const int status = wait_bounded(child, std::chrono::seconds(60), /*continue_after=*/15);
  REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  std::ifstream result(result_file);
  int first_failure = -2, exit_code = 0, how0 = 0, code0 = 0;
  result >> first_failure >> exit_code >> how0 >> code0;
  INFO(read_file(result_file));
  REQUIRE(first_failure == 1);
  CHECK(exit_code == 128 + SIGKILL);
  CHECK(how0 == static_cast<int>(RankExit::How::kExited));
  CHECK(code0 == 3);
  CHECK(no_children_left());
}

TEST_CASE("A rank that declares during the wait before SIGTERM is not sent one",
          "[distributed][launcher]") {
  TempDir dir;
  // Rank 1 fails at once without declaring; rank 0 declares only once the launcher has reaped
  // rank 1 (after the launcher's first read of the declarations), then cleans up for 1.5 s: longer
  // than the 1 s wait before SIGTERM, which must find its declaration.
  const std::string script =
      "status=\"$TRAINBUS_LAUNCHER_STATUS_DIR\"; "
      "if [ \"$LOCAL_RANK\" = 1 ]; then echo $$ > \"$1/pid.tmp\"; mv \"$1/pid.tmp\" \"$1/pid\"; "
      "exit 3; fi; "
      "i=0; while [ ! -e \"$1/pid\" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done; "
      "pid=$(cat \"$1/pid\"); "
      "i=0; while kill -0 \"$pid\" 2>/dev/null && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); "
      "done; "
      "printf 'another-rank\\nrank 0 of 2: all-reduce failed\\n' > \"$status/tmp0\"; "
      "mv \"$status/tmp0\" \"$status/rank-$RANK\"; "
      "sleep 1.5; exit " +
      std::to_string(kAnotherRankFailedExitCode);
  const Launched launched = launch_script(script, dir.path().string(), two_ranks());
  INFO(launched.log);
  REQUIRE(launched.result.first_failure == std::optional<std::size_t>(1));
  const RankExit& cleaning_up = launched.result.ranks[0];
  CHECK_FALSE(cleaning_up.stopped);
  CHECK(cleaning_up.how == RankExit::How::kExited);
  CHECK(cleaning_up.code == kAnotherRankFailedExitCode);
  CHECK(no_children_left());
}
