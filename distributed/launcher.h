#pragma once
/// The launcher behind `trainbus fit --nproc-per-node N`, as torchrun's: starts this machine's
/// ranks of a data-parallel job with torchrun's environment, waits for them all, and when one
/// fails stops the others (SIGTERM, then SIGKILL after a grace period) and names the one that
/// failed first.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <exception>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "base/arg.h"

namespace trainbus::distributed {

/// Set to "1" in every rank's environment by the launcher. A process that finds it knows it is one
/// of the ranks and must not launch again; a RANK set by hand (or by torchrun) does not set it.
constexpr const char* kLaunchedVariable = "TRAINBUS_LAUNCHED";

/// The launcher's pid, in every rank's environment: a rank stops when that process is gone.
constexpr const char* kLauncherPidVariable = "TRAINBUS_LAUNCHER_PID";

/// A directory the launcher makes for one launch (and removes after it), in every rank's
/// environment: a rank that fails writes its class and reason there at once (declare_rank_failure),
/// so that the launcher knows which rank failed first even while that rank still cleans up.
constexpr const char* kStatusDirVariable = "TRAINBUS_LAUNCHER_STATUS_DIR";

/// The exit code of a rank whose run failed only because another rank stopped first (a
/// collective found it gone, or waited for it past the timeout): sysexits' EX_TEMPFAIL, "try
/// again" (resume). The launcher does not name such a rank as the job's failure: on a node whose
/// ranks all end this way, the failure is on another node.
constexpr int kAnotherRankFailedExitCode = 75;

/// The exit code for a rank whose run ended with `error`: kAnotherRankFailedExitCode for an
/// AnotherRankFailedError (strategy.h: a PeerLostError of a collective that found another rank
/// gone or late, or a save another rank's failure ended), 1 for anything else.
int rank_exit_code(const std::exception& error);

/// In a rank launch_ranks started: tells the launcher now, before this rank's cleanup (the
/// callbacks' on_exception, OnExceptionCheckpoint's save, draining checkpoint writes), that it is
/// failing with `error`. Writes the file "rank-RANK" in kStatusDirVariable's directory, atomically
/// (a temporary file, then link): its first line "own" or "another-rank" (as rank_exit_code
/// classifies `error`), its second the first line of `error.what()`. The first declaration of a
/// rank is kept. A no-op where the variable is unset (torchrun, no launcher, one process); never
/// throws (a declaration that cannot be written leaves the launcher its fallback wait).
/// NOTE: call it for the failure that ends the process only (`trainbus fit`: its Trainer's
/// on_exception, and main's catch), not for an error that is caught and recovered from.
void declare_rank_failure(const std::exception& error) noexcept;

/// What a rank declared with declare_rank_failure, as the launcher reads it.
struct RankDeclaration {
  bool made = false;         ///< it declared (either kind): it is failing and cleans up
  bool own_failure = false;  ///< "own": it failed on its own; else only because another rank did
  std::string reason;        ///< the first line of its error
};

/// True when kLaunchedVariable is "1": this process was started by launch_ranks.
bool launched_by_trainbus();

/// In a rank launch_ranks started: the kernel sends this process SIGTERM when the launcher dies,
/// even by SIGKILL (PR_SET_PDEATHSIG), so that no rank trains on alone holding the job's port; if
/// the launcher is already gone, SIGTERM comes now. A no-op in any other process.
void stop_with_launcher();

/// The launcher's options, named after torchrun's flags; validate() names a bad one by its
/// `trainbus fit` flag.
struct LaunchOptions {
  /// Processes to start on this machine (--nproc-per-node).
  TRAINBUS_ARG(int, nproc_per_node) = 1;
  /// Machines in the job (--nnodes); each runs the launcher with the same options but its own
  /// node_rank.
  TRAINBUS_ARG(int, nnodes) = 1;
  /// This machine's index in [0, nnodes) (--node-rank); node 0 runs rank 0.
  TRAINBUS_ARG(int, node_rank) = 0;
  /// Where rank 0 serves the rendezvous (--master-addr, --master-port). With nnodes > 1, an
  /// address of node 0 that every machine reaches; a loopback one (127.0.0.1, localhost, a host
  /// name that resolves to 127.0.1.1) is warned about, as it works only when every node runs on
  /// one machine.
  TRAINBUS_ARG(std::string, master_addr) = "127.0.0.1";
  TRAINBUS_ARG(int, master_port) = 29500;
  /// How long the ranks asked to stop (SIGTERM after a rank failed, or the SIGINT/SIGTERM the
  /// launcher received) get to exit before SIGKILL. torchrun's 30 s.
  TRAINBUS_ARG(std::chrono::milliseconds, grace_period) = std::chrono::seconds(30);
  /// After a rank exited with kAnotherRankFailedExitCode while no rank has declared that it
  /// failed on its own (declare_rank_failure; a rank killed by a signal cannot, nor can a rank
  /// of another node), how long the launcher waits for a rank of this machine to fail on its own
  /// before it names that one (bounded by grace_period too).
  TRAINBUS_ARG(std::chrono::milliseconds, culprit_wait) = std::chrono::seconds(5);
  /// Each rank on CPUs of its own (--no-cpu-binding turns it off): with N ranks, rank 0 on the
  /// first threads_per_rank of the CPUs this process may use (a core's hardware threads
  /// together), rank 1 on the next, and so on (cpu_binding.h). Off, the kernel moves them, which
  /// costs lockstep collectives time; off is right when another job shares this machine's CPUs
  /// (or bind each launcher with `taskset -c`, which narrows what its ranks share out).
  TRAINBUS_ARG(bool, bind_cpus) = true;

 public:
  /// Ranks in the whole job: nnodes * nproc_per_node (after validate()).
  int world_size() const noexcept { return nnodes_ * nproc_per_node_; }
  /// More than one process in the job: launching is needed.
  bool distributed() const noexcept { return nproc_per_node_ > 1 || nnodes_ > 1; }
  /// Throws MisconfigurationError naming the flag: --nproc-per-node and --nnodes below 1,
  /// --node-rank outside [0, --nnodes), --master-port outside [1, 65535], an empty --master-addr,
  /// a negative grace period or culprit wait, a world too large for an int.
  void validate() const;
};

/// How one rank of this machine ended.
struct RankExit {
  /// What became of it.
  enum class How {
    kNotStarted,  ///< never ran: it could not be started (`error` says why), or an earlier one
                  ///< could not and the launch stopped
    kExited,      ///< exited with `code`
    kKilled,      ///< was killed by the signal `code`
    kLost,        ///< its end was not seen (`error` says why); counted as a failure
  };
  int rank = 0;        ///< RANK
  int local_rank = 0;  ///< LOCAL_RANK
  pid_t pid = -1;      ///< -1 when not started
  How how = How::kNotStarted;
  int code = 0;          ///< the exit code (kExited) or the signal (kKilled)
  std::string error;     ///< why it could not be started (kNotStarted) or was lost (kLost)
  bool stopped = false;  ///< the launcher told it to stop (or killed it) before it ended
  /// What it declared when it failed (declare_rank_failure), as the launcher last read it; empty
  /// reason when it declared nothing.
  RankDeclaration declared;

  bool succeeded() const noexcept { return how == How::kExited && code == 0; }
  /// "rank 1 (pid 4242) exited with code 3", "rank 5 (local rank 1, pid 4242) was killed by
  /// signal SIGKILL (9)", "could not start rank 1: No such file or directory".
  std::string describe() const;
};

/// What launch_ranks saw.
struct LaunchResult {
  /// The launcher's exit status: 0 when every rank exited with 0; else, for the first failure,
  /// its exit code, 128 + its signal, 127 when it could not be started, 1 when it was lost; when
  /// the launcher was interrupted before any rank failed, 128 + that signal.
  int exit_code = 0;
  /// This machine's ranks, by local rank.
  std::vector<RankExit> ranks;
  /// The rank whose failure stopped the job (an index into `ranks`), when one did.
  std::optional<std::size_t> first_failure;
  /// The SIGINT, SIGTERM or SIGHUP that stopped the job, when one reached the launcher before any
  /// rank failed; 0 otherwise.
  int interrupted_by = 0;
};

/// OMP_NUM_THREADS for each of `nproc_per_node` ranks: the CPUs this process may share out
/// (cpus_to_share), divided among them, and at least 1. A rank bound to CPUs of its own
/// (LaunchOptions::bind_cpus) gets as many as it has CPUs instead.
int threads_per_rank(int nproc_per_node);
/// The same for `cpus` CPUs.
int threads_per_rank(int cpus, int nproc_per_node);

/// Starts nproc_per_node copies of `program` (executed as execv does: a path, not looked up in
/// PATH) with `argv` (argv[0] included) and this process's environment plus, for each, RANK =
/// node_rank * nproc_per_node + LOCAL_RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
/// MASTER_ADDR, MASTER_PORT, kLaunchedVariable=1 and OMP_NUM_THREADS (threads_per_rank, unless
/// OMP_NUM_THREADS is set here), each bound to its CPUs (LaunchOptions::bind_cpus; where the
/// system refuses, the rank runs unbound and the log says so). Their output is theirs, unprefixed.
///
/// Waits for all of them. The first rank that exits non-zero, is killed by a signal, or cannot be
/// started is the failure: the others get SIGTERM, and SIGKILL when they outlive grace_period;
/// but a rank that has declared a failure of either kind (declare_rank_failure) is ending already
/// and may be cleaning up (OnExceptionCheckpoint saves on rank 0, whichever rank failed): it gets
/// no SIGTERM, only the SIGKILL. The others get 1 s (at most half of grace_period) to declare,
/// and the declarations are read again just before the SIGTERM. A SIGINT or SIGTERM sent to this
/// process is passed on to the ranks at once (a Ctrl-C, which the terminal already sends to the
/// ranks too, is not sent again), a SIGHUP as SIGTERM; a second one SIGKILLs them at once. What
/// happens is written to `log` (stderr, for the command line): the failure first, then how each
/// other rank ended.
///
/// Each rank gets kStatusDirVariable, a directory made for this launch. When a rank ends other
/// than with 0, the launcher reads what the ranks declared there: the rank that declared first
/// that it failed on its own (declare_rank_failure) is the failure, with its reason, also while
/// it still runs: it is not told to stop, so that its cleanup completes, and is SIGKILLed only if
/// it outlives grace_period, with the others. A rank that ended without declaring (a crash, an
/// OOM kill) comes before it unless the declaration is older than the last time the launcher saw
/// that rank running, also when the launcher finds both ended at once. A failure that exits with 0
/// after all (it declared, then recovered) still makes the launcher's exit code 1. Where no rank
/// declared that, a rank that exits with kAnotherRankFailedExitCode is named as the failure only
/// when no rank of this machine failed otherwise: after it, the launcher waits up to culprit_wait
/// (at most grace_period) for a rank that fails or declares it failed on its own before it stops
/// the others; if none does, the job stopped because of a rank elsewhere (another node's launcher
/// names it), and the report says so.
///
/// Returns when every rank has ended (or outlived SIGKILL by 10 s); no child is left to reap.
/// Throws MisconfigurationError for bad options, an empty command, or a launch already running
/// in this process, before starting anything.
/// NOTE: while it runs, SIGINT, SIGTERM, SIGHUP and SIGCHLD are caught by its handlers, for the
/// whole process (any thread may take them); the previous handlers are put back before it returns.
/// SIGPIPE too, unless ignored or handled already, until it has written its report: a write to a
/// `log` nobody reads any more (a pipe whose reader is gone) fails, and the launch goes on.
LaunchResult launch_ranks(const std::string& program, const std::vector<std::string>& argv,
                          const LaunchOptions& options, std::ostream& log);

}  // namespace trainbus::distributed
