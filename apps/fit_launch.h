#pragma once
/// `trainbus fit --nproc-per-node N` (with --nnodes, --node-rank, --master-addr, --master-port):
/// the flags, and `trainbus fit` turned into the launcher of its own ranks, as torchrun.

#include <ostream>
#include <string>
#include <vector>

#include "distributed/launcher.h"

namespace CLI {
class App;
}

namespace trainbus::apps {

/// The heading of the launcher's and DDP's flags in `trainbus fit --help`.
constexpr const char* kDataParallelGroup = "Data-parallel training (like torchrun)";

/// Adds the launcher's flags to the `fit` command, bound to `options`.
void add_launch_flags(CLI::App& fit, distributed::LaunchOptions& options);

/// True when this `trainbus fit` must start its ranks instead of training: `options` ask for more
/// than one process, and this process is not one of the ranks already (TRAINBUS_LAUNCHED unset; a
/// RANK set by hand or by torchrun does not count).
bool fit_launches_ranks(const distributed::LaunchOptions& options);

/// `args` (a command line without the program name) without the launcher's flags and their values
/// (`--nnodes 2` and `--nnodes=2` alike), for the ranks to run: they learn their place from the
/// environment. A --config file's launcher keys stay; a rank ignores them.
std::vector<std::string> without_launch_flags(const std::vector<std::string>& args);

/// Runs `trainbus fit` as the launcher: this program (/proc/self/exe) nproc_per_node times, with
/// `argv` (argv[0] first) less the launcher's flags, supervised by distributed::launch_ranks, which
/// writes what happened to `log`. Returns the exit status for main(): 0 when every rank exited
/// with 0, else the first failed rank's (distributed::LaunchResult::exit_code).
/// NOTE: when a SIGINT or SIGTERM stopped the job, this process then ends by that signal itself,
/// after its ranks, so that a shell script running it stops too (a shell treats a child that
/// exited with 130 as one that handled the Ctrl-C).
int run_fit_launcher(const distributed::LaunchOptions& options,
                     const std::vector<std::string>& argv, std::ostream& log);

}  // namespace trainbus::apps
