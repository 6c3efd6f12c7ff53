#include "apps/fit_launch.h"

#include <csignal>
#include <iostream>

#include <CLI/CLI.hpp>

namespace trainbus::apps {
namespace {

// The launcher's flags, named as torchrun's.
const char* const kLaunchFlags[] = {"--nproc-per-node", "--nnodes", "--node-rank", "--master-addr",
                                    "--master-port"};

}  // namespace

void add_launch_flags(CLI::App& fit, distributed::LaunchOptions& options) {
  fit.add_option("--nproc-per-node", options.nproc_per_node(),
                 "Train with N processes on this machine: `trainbus fit` starts itself N times, "
                 "each rank with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT and its "
                 "share of the cores as OMP_NUM_THREADS, waits for them all, and stops them all "
                 "when one fails")
      ->group(kDataParallelGroup)
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  fit.add_option("--nnodes", options.nnodes(),
                 "Machines in the job: run the same command on each, with its own --node-rank "
                 "and the same --master-addr and --master-port")
      ->group(kDataParallelGroup)
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  fit.add_option("--node-rank", options.node_rank(),
                 "This machine's index, 0 to --nnodes - 1; node 0 runs rank 0")
      ->group(kDataParallelGroup)
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  fit.add_option("--master-addr", options.master_addr(),
                 "Address of node 0, where rank 0 serves the rendezvous; every machine must reach "
                 "it")
      ->group(kDataParallelGroup)
      ->capture_default_str();
  fit.add_option("--master-port", options.master_port(),
                 "A free TCP port on --master-addr for the rendezvous, the same on every machine")
      ->group(kDataParallelGroup)
      ->check(CLI::Range(1, 65535))
      ->capture_default_str();
  // CLI11's "!" flag: --no-cpu-binding sets bind_cpus to false.
  fit.add_flag("!--no-cpu-binding", options.bind_cpus(),
               "Let the kernel move the ranks between CPUs (by default each rank runs on CPUs of "
               "its own, as many as its OMP_NUM_THREADS: faster lockstep collectives); for "
               "another job sharing this machine's CPUs, or bind each launcher with taskset -c")
      ->group(kDataParallelGroup);
}

bool fit_launches_ranks(const distributed::LaunchOptions& options) {
  return options.distributed() && !distributed::launched_by_trainbus();
}

std::vector<std::string> without_launch_flags(const std::vector<std::string>& args) {
  std::vector<std::string> kept;
  for (std::size_t i = 0; i < args.size(); ++i) {
    bool launcher_flag = false;
    for (const std::string flag : kLaunchFlags) {
      if (args[i] == flag) {
        launcher_flag = true;
        ++i;  // and its value
        break;
      }
      if (args[i].rfind(flag + "=", 0) == 0) {
        launcher_flag = true;
        break;
      }
    }
    if (!launcher_flag) kept.push_back(args[i]);
  }
  return kept;
}

int run_fit_launcher(const distributed::LaunchOptions& options,
                     const std::vector<std::string>& argv, std::ostream& log) {
  std::vector<std::string> rank_argv = {argv.empty() ? std::string("trainbus") : argv.front()};
  if (!argv.empty()) {
    const std::vector<std::string> kept =
        without_launch_flags(std::vector<std::string>(argv.begin() + 1, argv.end()));
    rank_argv.insert(rank_argv.end(), kept.begin(), kept.end());
  }
  std::cout.flush();
  const distributed::LaunchResult result =
      distributed::launch_ranks("/proc/self/exe", rank_argv, options, log);
  if (result.interrupted_by != 0) {
    log.flush();
    std::signal(result.interrupted_by, SIG_DFL);
    std::raise(result.interrupted_by);
  }
  return result.exit_code;
}

}  // namespace trainbus::apps
