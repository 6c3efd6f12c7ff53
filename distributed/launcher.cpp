#include "distributed/launcher.h"

#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ostream>
#include <thread>

#include "base/errors.h"
#include "distributed/environment.h"

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere

namespace trainbus::distributed {
namespace {

using Clock = std::chrono::steady_clock;

// How long the launcher waits for ranks it SIGKILLed before it gives up on them (a process stuck
// in the kernel): the wait after a failure is bounded too.
constexpr std::chrono::seconds kKillWait{10};
// The longest sleep between two looks at the ranks. SIGCHLD wakes the launcher at once; this is
// for a SIGCHLD another thread took.
constexpr std::chrono::milliseconds kPollInterval{250};

// "SIGKILL (9)".
std::string signal_name(int signal) {
  const char* abbreviation = ::sigabbrev_np(signal);
  return (abbreviation != nullptr ? "SIG" + std::string(abbreviation) : std::string("signal")) +
         " (" + std::to_string(signal) + ")";
}

std::string seconds_text(std::chrono::milliseconds duration) {
  const auto count = duration.count();
  return count % 1000 == 0 ? std::to_string(count / 1000) + " s" : std::to_string(count) + " ms";
}

// SIGINT, SIGTERM and SIGCHLD blocked on this thread for the launch, so that the supervision
// loop takes them one at a time with sigtimedwait instead of in handlers. A SIGINT or SIGTERM
// this process ignores (as a shell's background job ignores SIGINT) is left alone. SIGCHLD must
// not be ignored while the ranks are waited for (the kernel would reap them), so SIG_IGN becomes
// SIG_DFL for the launch. Restores the mask and SIGCHLD's action at scope exit.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigemptyset(&blocked_);
    for (int signal : {SIGINT, SIGTERM}) {
      struct sigaction action {};
      if (::sigaction(signal, nullptr, &action) == 0 && action.sa_handler != SIG_IGN) {
        sigaddset(&blocked_, signal);
      }
    }
    sigaddset(&blocked_, SIGCHLD);
    if (::sigaction(SIGCHLD, nullptr, &saved_child_action_) == 0 &&
        saved_child_action_.sa_handler == SIG_IGN) {
      struct sigaction by_default {};
      by_default.sa_handler = SIG_DFL;
      sigemptyset(&by_default.sa_mask);
      restore_child_action_ = ::sigaction(SIGCHLD, &by_default, nullptr) == 0;
    }
    ::pthread_sigmask(SIG_BLOCK, &blocked_, &previous_);
  }
  ~BlockedSignals() {
    ::pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
    if (restore_child_action_) ::sigaction(SIGCHLD, &saved_child_action_, nullptr);
  }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;

  const sigset_t& blocked() const noexcept { return blocked_; }
  /// The mask before the launch: the ranks start with it.
  const sigset_t& previous() const noexcept { return previous_; }

 private:
  sigset_t blocked_{};
  sigset_t previous_{};
  struct sigaction saved_child_action_ {};
  bool restore_child_action_ = false;
};

// "rank 5 (local rank 1, pid 4242)"; the local rank only where it differs.
std::string label(const RankExit& rank) {
  std::string text = "rank " + std::to_string(rank.rank) + " (";
  if (rank.local_rank != rank.rank) text += "local rank " + std::to_string(rank.local_rank) + ", ";
  return text + "pid " + std::to_string(rank.pid) + ")";
}

// The names the launcher sets in each rank's environment: an inherited value is replaced.
bool set_by_launcher(const std::string& name) {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all{kLaunchedVariable};
    for (const auto& [variable, value] : environment_variables(DistributedEnvironment())) {
      all.push_back(variable);
    }
    return all;
  }();
  return std::find(names.begin(), names.end(), name) != names.end();
}

// "NAME=value" strings of this process's environment, less the variables the launcher sets.
std::vector<std::string> inherited_environment() {
  std::vector<std::string> entries;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string text = *entry;
    if (!set_by_launcher(text.substr(0, text.find('=')))) entries.push_back(text);
  }
  return entries;
}

// null-terminated pointers into `strings`, for posix_spawn's argv and envp.
std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (std::string& text : strings) result.push_back(text.data());
  result.push_back(nullptr);
  return result;
}

// One launch: its ranks, and the state of the stop once one began.
class Launch {
 public:
  Launch(const std::string& program, const std::vector<std::string>& argv,
         const LaunchOptions& options, std::ostream& log)
      : program_(program), argv_(argv), options_(options), log_(log) {
    for (int local_rank = 0; local_rank < options.nproc_per_node(); ++local_rank) {
      RankExit rank;
      rank.local_rank = local_rank;
      rank.rank = options.node_rank() * options.nproc_per_node() + local_rank;
      ranks_.push_back(rank);
    }
  }

  // Starts the ranks in order; when one cannot be started, the ones before it are stopped and
  // the ones after it are not started.
  void start(const sigset_t& rank_signal_mask) {
    const char* user_threads = std::getenv("OMP_NUM_THREADS");
    const bool set_threads = user_threads == nullptr || *user_threads == '\0';
    const int threads = threads_per_rank(options_.nproc_per_node());
    log_ << "launcher: starting " << ranks_.size() << " rank" << (ranks_.size() == 1 ? "" : "s")
         << " (RANK " << ranks_.front().rank << "-" << ranks_.back().rank << " of WORLD_SIZE "
         << options_.world_size() << ", node " << options_.node_rank() << " of "
         << options_.nnodes() << "), MASTER_ADDR=" << options_.master_addr()
         << " MASTER_PORT=" << options_.master_port() << ", OMP_NUM_THREADS="
         << (set_threads ? std::to_string(threads) : std::string(user_threads))
         << (set_threads ? " each" : " (set by you)") << std::endl;

    posix_spawnattr_t attributes;
    ::posix_spawnattr_init(&attributes);
    ::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
    ::posix_spawnattr_setsigmask(&attributes, &rank_signal_mask);
    std::vector<std::string> arguments = argv_;
    const std::vector<char*> argument_pointers = pointers(arguments);
    std::vector<std::string> inherited = inherited_environment();
    if (set_threads) {  // an empty OMP_NUM_THREADS= is replaced, not doubled
      inherited.erase(std::remove_if(inherited.begin(), inherited.end(),
                                     [](const std::string& entry) {
                                       return entry.rfind("OMP_NUM_THREADS=", 0) == 0;
                                     }),
                      inherited.end());
    }
    for (RankExit& rank : ranks_) {
      DistributedEnvironment environment;
      environment.rank = rank.rank;
      environment.world_size = options_.world_size();
      environment.local_rank = rank.local_rank;
      environment.local_world_size = options_.nproc_per_node();
      environment.node_rank = options_.node_rank();
      environment.master_addr = options_.master_addr();
      environment.master_port = static_cast<uint16_t>(options_.master_port());
      std::vector<std::string> variables = inherited;
      for (const auto& [name, value] : environment_variables(environment)) {
        variables.push_back(name + "=" + value);
      }
      variables.push_back(std::string(kLaunchedVariable) + "=1");
      if (set_threads) variables.push_back("OMP_NUM_THREADS=" + std::to_string(threads));
      const std::vector<char*> variable_pointers = pointers(variables);
      pid_t pid = -1;
      // posix_spawn returns the exec's error too (glibc waits for the exec to succeed or fail).
      const int error = ::posix_spawn(&pid, program_.c_str(), nullptr, &attributes,
                                      argument_pointers.data(), variable_pointers.data());
      if (error != 0) {
        rank.error = std::strerror(error);
        fail(rank);
        break;
      }
      rank.pid = pid;  // its `how` is set when it is reaped
      running_.push_back(&rank);
    }
    ::posix_spawnattr_destroy(&attributes);
  }

  // Waits until every started rank has ended, stopping them all after the first failure or a
  // signal to the launcher.
  void supervise(const sigset_t& signals) {
    while (true) {
      reap();
      if (running_.empty()) return;
      const Clock::time_point now = Clock::now();
      if (stopping_ && !killed_ && now >= stop_deadline_) {
        for (RankExit* rank : running_) {
          log_ << "launcher: " << label(*rank) << " still runs "
               << seconds_text(options_.grace_period()) << " after being told to stop; sending "
               << "SIGKILL" << std::endl;
        }
        kill_all();
        continue;
      }
      if (killed_ && now >= kill_deadline_) {
        for (RankExit* rank : running_) {
          rank->how = RankExit::How::kLost;
          rank->error = "did not exit " + seconds_text(kKillWait) + " after SIGKILL; left running";
          log_ << "launcher: " << rank->describe() << std::endl;
        }
        running_.clear();
        return;
      }
      Clock::time_point wake = now + kPollInterval;
      if (stopping_ && !killed_) wake = std::min(wake, stop_deadline_);
      if (killed_) wake = std::min(wake, kill_deadline_);
      const auto wait = std::chrono::duration_cast<std::chrono::nanoseconds>(wake - now);
      timespec timeout{};
      timeout.tv_sec = static_cast<time_t>(wait.count() / 1000000000);
      timeout.tv_nsec = static_cast<long>(wait.count() % 1000000000);
      siginfo_t info{};
      const int signal = ::sigtimedwait(&signals, &info, &timeout);
      // -1 with EAGAIN (the time is up) or EINTR (another signal's handler ran): look again.
      if (signal == SIGINT || signal == SIGTERM) interrupt(signal, info);
    }
  }

  LaunchResult result() const {
    LaunchResult result;
    result.ranks = ranks_;
    result.first_failure = first_failure_;
    result.interrupted_by = interrupted_by_;
    if (first_failure_) {
      const RankExit& failed = ranks_[*first_failure_];
      switch (failed.how) {
        case RankExit::How::kExited:
          result.exit_code = failed.code;
          break;
        case RankExit::How::kKilled:
          result.exit_code = 128 + failed.code;
          break;
        case RankExit::How::kNotStarted:
          result.exit_code = 127;
          break;
        case RankExit::How::kLost:
          result.exit_code = 1;
          break;
      }
    } else if (interrupted_by_ != 0) {
      result.exit_code = 128 + interrupted_by_;
    }
    return result;
  }

  // The summary on `log_` once every rank has ended: the cause first, then every other rank.
  void report() const {
    if (first_failure_) {
      const RankExit& failed = ranks_[*first_failure_];
      log_ << "launcher: the job failed: " << failed.describe() << " (the first failure"
           << (failed.pid >= 0 ? "; its output above should say why)\n" : ")\n");
    } else if (interrupted_by_ != 0) {
      log_ << "launcher: the job was interrupted by " << signal_name(interrupted_by_) << '\n';
    } else {
      return;
    }
    for (std::size_t i = 0; i < ranks_.size(); ++i) {
      if (first_failure_ && i == *first_failure_) continue;
      const RankExit& rank = ranks_[i];
      log_ << "launcher:   " << rank.describe();
      if (rank.stopped && rank.how != RankExit::How::kLost) log_ << ", stopped by the launcher";
      log_ << '\n';
    }
    log_.flush();
  }

 private:
  // Collects every rank that has ended, without blocking.
  void reap() {
    for (auto it = running_.begin(); it != running_.end();) {
      RankExit& rank = **it;
      int status = 0;
      pid_t done = -1;
      do {
        done = ::waitpid(rank.pid, &status, WNOHANG);
      } while (done < 0 && errno == EINTR);
      if (done == 0) {
        ++it;
        continue;
      }
      if (done < 0) {  // ECHILD: someone else waited for it (SIGCHLD ignored in another thread)
        rank.how = RankExit::How::kLost;
        rank.error =
            std::string("its exit status was lost (waitpid: ") + std::strerror(errno) + ")";
      } else if (WIFSIGNALED(status)) {
        rank.how = RankExit::How::kKilled;
        rank.code = WTERMSIG(status);
      } else {
        rank.how = RankExit::How::kExited;
        rank.code = WEXITSTATUS(status);
      }
      it = running_.erase(it);
      if (!rank.succeeded() && !stopping_) fail(rank);
    }
  }

  // `rank` is the first failure: it is reported, and the others are told to stop.
  void fail(RankExit& rank) {
    first_failure_ = static_cast<std::size_t>(&rank - ranks_.data());
    log_ << "launcher: " << rank.describe();
    if (!running_.empty()) {
      log_ << "; stopping the other ranks (SIGTERM, and SIGKILL after "
           << seconds_text(options_.grace_period()) << ")";
    }
    log_ << std::endl;
    stop(SIGTERM, /*send=*/true);
  }

  // A SIGINT or SIGTERM to the launcher: the first is passed on to the ranks; another one, or one
  // during the stop after a failure, kills them at once.
  void interrupt(int signal, const siginfo_t& info) {
    if (stopping_) {
      if (killed_) return;
      log_ << "launcher: received " << signal_name(signal) << " while stopping; sending SIGKILL"
           << std::endl;
      kill_all();
      return;
    }
    interrupted_by_ = signal;
    // NOTE: a Ctrl-C (si_code SI_KERNEL: from the terminal) went to the whole foreground process
    // group, the ranks included: sent again, it would reach them twice.
    const bool from_terminal = info.si_code == SI_KERNEL;
    log_ << "launcher: received " << signal_name(signal)
         << (from_terminal ? " from the terminal, which sent it to the ranks too"
                           : "; passing it on to the ranks")
         << " (SIGKILL after " << seconds_text(options_.grace_period())
         << "; send another SIGINT or SIGTERM to kill them now)" << std::endl;
    stop(signal, /*send=*/!from_terminal);
  }

  void stop(int signal, bool send) {
    stopping_ = true;
    stop_deadline_ = Clock::now() + options_.grace_period();
    for (RankExit* rank : running_) {
      rank->stopped = true;
      if (send) ::kill(rank->pid, signal);
    }
  }

  void kill_all() {
    killed_ = true;
    kill_deadline_ = Clock::now() + kKillWait;
    for (RankExit* rank : running_) {
      rank->stopped = true;
      ::kill(rank->pid, SIGKILL);
    }
  }

  const std::string& program_;
  const std::vector<std::string>& argv_;
  const LaunchOptions& options_;
  std::ostream& log_;
  std::vector<RankExit> ranks_;
  std::vector<RankExit*> running_;  // started and not yet reaped
  std::optional<std::size_t> first_failure_;
  int interrupted_by_ = 0;
  bool stopping_ = false;
  bool killed_ = false;
  Clock::time_point stop_deadline_;
  Clock::time_point kill_deadline_;
};

}  // namespace

bool launched_by_trainbus() {
  const char* value = std::getenv(kLaunchedVariable);
  return value != nullptr && std::string(value) == "1";
}

void LaunchOptions::validate() const {
  TRAINBUS_CHECK(nproc_per_node_ >= 1, "--nproc-per-node must be >= 1, got ", nproc_per_node_,
                 ": the number of processes to start on this machine");
  TRAINBUS_CHECK(nnodes_ >= 1, "--nnodes must be >= 1, got ", nnodes_,
                 ": the number of machines in the job");
  TRAINBUS_CHECK(node_rank_ >= 0 && node_rank_ < nnodes_,
                 "--node-rank must be in [0, --nnodes=", nnodes_, "), got ", node_rank_,
                 ": number the machines 0 to ", nnodes_ - 1,
                 " (node 0 runs rank 0), and give each its own");
  TRAINBUS_CHECK(static_cast<int64_t>(nnodes_) * nproc_per_node_ <= INT_MAX, "--nnodes ", nnodes_,
                 " times --nproc-per-node ", nproc_per_node_, " is more ranks than an int counts");
  TRAINBUS_CHECK(master_port_ >= 1 && master_port_ <= 65535,
                 "--master-port must be in [1, 65535], got ", master_port_,
                 ": a free TCP port on --master-addr, the same on every machine");
  TRAINBUS_CHECK(!master_addr_.empty(),
                 "--master-addr is empty: give the address of node 0 (127.0.0.1 on one machine)");
  TRAINBUS_CHECK(grace_period_.count() >= 0, "the launcher's grace period must be >= 0, got ",
                 grace_period_.count(), " ms");
}

std::string RankExit::describe() const {
  switch (how) {
    case How::kNotStarted:
      if (!error.empty()) return "could not start rank " + std::to_string(rank) + ": " + error;
      return "rank " + std::to_string(rank) + " was not started";
    case How::kExited:
      return label(*this) + " exited with code " + std::to_string(code);
    case How::kKilled:
      return label(*this) + " was killed by signal " + signal_name(code);
    case How::kLost:
      return label(*this) + " " + error;
  }
  return label(*this);
}

int threads_per_rank(int nproc_per_node) {
  int cpus = 0;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof(allowed), &allowed) == 0) cpus = CPU_COUNT(&allowed);
  if (cpus <= 0) cpus = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cpus / std::max(1, nproc_per_node));
}

LaunchResult launch_ranks(const std::string& program, const std::vector<std::string>& argv,
                          const LaunchOptions& options, std::ostream& log) {
  options.validate();
  TRAINBUS_CHECK(!program.empty() && !argv.empty(),
                 "launch_ranks: no command to start (program and argv[0] are needed)");
  const BlockedSignals signals;
  Launch launch(program, argv, options, log);
  launch.start(signals.previous());
  launch.supervise(signals.blocked());
  launch.report();
  return launch.result();
}

}  // namespace trainbus::distributed
