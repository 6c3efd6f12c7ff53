#include "distributed/launcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <ostream>
#include <system_error>
#include <thread>
#include <utility>

#include "base/errors.h"
#include "distributed/cpu_binding.h"
#include "distributed/environment.h"
#include "distributed/strategy.h"

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX declares it nowhere

namespace trainbus::distributed {
namespace {

using Clock = std::chrono::steady_clock;

// How long the launcher waits for ranks it SIGKILLed before it gives up on them (a process stuck
// in the kernel): the wait after a failure is bounded too.
constexpr std::chrono::seconds kKillWait{10};
// The longest sleep between two looks at the ranks. SIGCHLD wakes the launcher at once; this is
// a second line, should one be missed (another handler installed meanwhile).
constexpr std::chrono::milliseconds kPollInterval{250};
// After a failure, how long the other ranks get to declare (declare_rank_failure) before the
// ones that have not are sent SIGTERM (at most half the grace period). A rank that declared is
// failing already and cleans up (OnExceptionCheckpoint's save runs on rank 0, whichever rank
// failed): it is not signalled. Ranks notice a peer gone within milliseconds; one that waits in a
// collective for the timeout is the one a SIGTERM is for.
constexpr std::chrono::milliseconds kDeclarationWait{1000};
// The file a rank's declaration goes to, in the launch's status directory.
std::string declaration_path(const std::string& directory, const std::string& rank) {
  return directory + "/rank-" + rank;
}
// The longest reason a declaration keeps: one line of the launcher's report.
constexpr std::size_t kReasonLimit = 500;
constexpr const char* kOwnFailure = "own";
constexpr const char* kAnotherRankFailed = "another-rank";

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

// What the signal handlers of a launch hand to its supervision loop. Only atomics and a write
// to a pipe: all a handler may touch.
struct Received {
  std::atomic<int> count{0};      // deliveries not yet taken by the loop
  std::atomic<int> last_code{0};  // si_code of the latest: SI_KERNEL for the terminal's Ctrl-C
};
Received received_interrupt;   // SIGINT
Received received_terminate;   // SIGTERM
Received received_hangup;      // SIGHUP: passed on as SIGTERM
std::atomic<int> wake_fd{-1};  // the write end of the wake-up pipe, once made
std::atomic<bool> launching{false};

Received* received_for(int signal) {
  return signal == SIGINT    ? &received_interrupt
         : signal == SIGTERM ? &received_terminate
         : signal == SIGHUP  ? &received_hangup
                             : nullptr;
}

extern "C" void on_launcher_signal(int signal, siginfo_t* info, void*) {
  const int saved_errno = errno;
  if (Received* received = received_for(signal)) {
    received->last_code.store(info != nullptr ? info->si_code : 0);
    received->count.fetch_add(1);
  }
  const int fd = wake_fd.load();
  if (fd >= 0) {
    const char byte = 0;
    [[maybe_unused]] const ssize_t ignored = ::write(fd, &byte, 1);  // full: a wake is pending
  }
  errno = saved_errno;
}

// SIGINT, SIGTERM, SIGHUP (a closed terminal or ssh session: taken as SIGTERM, so that the
// ranks stop and the status directory goes) and SIGCHLD caught for one launch, for the whole
// process: the handler counts a SIGINT or SIGTERM and wakes the supervision loop through a pipe,
// whichever thread it runs on. NOTE: handlers, not a blocked mask: a library's thread (OpenBLAS
// starts its pool when it is loaded) does not block these signals, and a SIGTERM the kernel gave it
// would kill the launcher. A SIGINT or SIGTERM this process ignores (as a shell's background job
// ignores SIGINT) stays ignored. SIGCHLD is caught even where it was ignored: an ignored SIGCHLD
// has the kernel reap the ranks before they can be waited for. Everything is put back at scope
// exit.
class CaughtSignals {
 public:
  CaughtSignals() {
    TRAINBUS_CHECK(!launching.exchange(true),
                   "launch_ranks: another launch is running in this process; run one at a time");
    // NOTE: the pipe is made once and kept for the life of the process: a handler still running
    // on another thread when this launch ends must not write into a closed (or reused) descriptor.
    static int read_fd = -1;
    if (read_fd < 0) {
      int fds[2] = {-1, -1};
      if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        launching.store(false);
        throw std::system_error(errno, std::generic_category(), "launch_ranks: pipe2");
      }
      read_fd = fds[0];
      wake_fd.store(fds[1]);
    }
    read_fd_ = read_fd;
    drain();
    received_interrupt.count.store(0);
    received_terminate.count.store(0);
    received_hangup.count.store(0);
    struct sigaction action {};
    action.sa_sigaction = on_launcher_signal;
    action.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&action.sa_mask);
    for (int signal : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) {
      struct sigaction previous {};
      ::sigaction(signal, nullptr, &previous);
      if (signal != SIGCHLD && previous.sa_handler == SIG_IGN) continue;
      if (::sigaction(signal, &action, &previous) == 0) saved_.push_back({signal, previous});
    }
  }
  ~CaughtSignals() {
    for (const auto& [signal, previous] : saved_) ::sigaction(signal, &previous, nullptr);
    launching.store(false);
  }
  CaughtSignals(const CaughtSignals&) = delete;
  CaughtSignals& operator=(const CaughtSignals&) = delete;

  // Sleeps until a signal is caught or `timeout` passes; empties the pipe.
  void wait(std::chrono::milliseconds timeout) const {
    pollfd readable{read_fd_, POLLIN, 0};
    ::poll(&readable, 1, static_cast<int>(timeout.count()));  // EINTR too: the caller looks again
    drain();
  }

  // A SIGINT or SIGTERM caught and not yet taken.
  static bool pending() {
    return received_interrupt.count.load() > 0 || received_terminate.count.load() > 0 ||
           received_hangup.count.load() > 0;
  }

  // The SIGINTs and SIGTERMs caught since the last call, in a fixed order (SIGINT first), each
  // with whether it came from the terminal.
  static std::vector<std::pair<int, bool>> take() {
    std::vector<std::pair<int, bool>> taken;
    for (int signal : {SIGINT, SIGTERM, SIGHUP}) {
      Received& received = *received_for(signal);
      const bool from_terminal = received.last_code.load() == SI_KERNEL;
      for (int n = received.count.exchange(0); n > 0; --n)
        taken.emplace_back(signal, from_terminal);
    }
    return taken;
  }

 private:
  void drain() const {
    char bytes[64];
    while (::read(read_fd_, bytes, sizeof bytes) > 0) {
    }
  }

  int read_fd_ = -1;
  std::vector<std::pair<int, struct sigaction>> saved_;
};

extern "C" void on_broken_pipe(int) {}

// SIGPIPE caught, and nothing done, for one launch: a write to a log nobody reads any more
// (`trainbus fit ... 2>&1 | tee log`, and tee gone with a Ctrl-C) fails instead of killing the
// launcher, which then goes on to stop the ranks and remove its status directory. NOTE: a handler,
// not SIG_IGN, which the ranks would inherit through exec. One this process ignores or handles
// already is left as it is. Put back at scope exit.
class BrokenPipeAsError {
 public:
  BrokenPipeAsError() {
    struct sigaction action {};
    action.sa_handler = on_broken_pipe;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (::sigaction(SIGPIPE, nullptr, &previous_) == 0 && previous_.sa_handler == SIG_DFL &&
        (previous_.sa_flags & SA_SIGINFO) == 0) {
      caught_ = ::sigaction(SIGPIPE, &action, nullptr) == 0;
    }
  }
  ~BrokenPipeAsError() {
    if (caught_) ::sigaction(SIGPIPE, &previous_, nullptr);
  }
  BrokenPipeAsError(const BrokenPipeAsError&) = delete;
  BrokenPipeAsError& operator=(const BrokenPipeAsError&) = delete;

 private:
  struct sigaction previous_ {};
  bool caught_ = false;
};

// The launch's kStatusDirVariable: a directory of its own under $TMPDIR (or /tmp), removed with
// the declarations the ranks wrote in it. Empty where it could not be made (error() says why).
class StatusDirectory {
 public:
  StatusDirectory() {
    const char* temporary = std::getenv("TMPDIR");
    std::string pattern =
        std::string(temporary != nullptr && *temporary != '\0' ? temporary : "/tmp") +
        "/trainbus-launch-XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) {
      path_ = pattern;
    } else {
      error_ = std::string("mkdtemp ") + pattern + ": " + std::strerror(errno);
    }
  }
  ~StatusDirectory() {
    if (path_.empty()) return;
    if (DIR* directory = ::opendir(path_.c_str())) {
      while (const dirent* entry = ::readdir(directory)) {
        const std::string name = entry->d_name;
        if (name != "." && name != "..") ::unlink((path_ + "/" + name).c_str());
      }
      ::closedir(directory);
    }
    ::rmdir(path_.c_str());
  }
  StatusDirectory(const StatusDirectory&) = delete;
  StatusDirectory& operator=(const StatusDirectory&) = delete;

  const std::string& path() const noexcept { return path_; }
  const std::string& error() const noexcept { return error_; }

  // What rank `rank` declared, and when (the file's modification time), if it did.
  std::optional<std::pair<RankDeclaration, timespec>> read(int rank) const {
    if (path_.empty()) return std::nullopt;
    const std::string path = declaration_path(path_, std::to_string(rank));
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string text;
    char buffer[1024];
    for (ssize_t got; (got = ::read(fd, buffer, sizeof buffer)) > 0;) text.append(buffer, got);
    struct stat status {};
    const bool stated = ::fstat(fd, &status) == 0;
    ::close(fd);
    const std::size_t newline = text.find('\n');
    if (!stated || newline == std::string::npos) return std::nullopt;
    RankDeclaration declaration;
    declaration.made = true;
    declaration.own_failure = text.compare(0, newline, kOwnFailure) == 0;
    declaration.reason = text.substr(newline + 1);
    declaration.reason = declaration.reason.substr(0, declaration.reason.find('\n'));
    return std::make_pair(declaration, status.st_mtim);
  }

 private:
  std::string path_;
  std::string error_;
};

bool earlier(const timespec& a, const timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec < b.tv_nsec;
}

// The wall clock, as a declaration's modification time has it.
timespec wall_clock_now() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return now;
}

// True when `host` names only loopback addresses (127.0.0.0/8, ::1): "127.0.0.1", "localhost",
// or a host name /etc/hosts maps to 127.0.1.1, as Debian's does. False when it does not resolve:
// the ranks' rendezvous reports that.
bool is_loopback(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) return false;
  bool loopback = true;
  for (const addrinfo* entry = found; entry != nullptr; entry = entry->ai_next) {
    if (entry->ai_family == AF_INET) {
      const auto* address = reinterpret_cast<const sockaddr_in*>(entry->ai_addr);
      loopback = loopback && (ntohl(address->sin_addr.s_addr) >> 24) == 127;
    } else if (entry->ai_family == AF_INET6) {
      const auto* address = reinterpret_cast<const sockaddr_in6*>(entry->ai_addr);
      loopback = loopback && IN6_IS_ADDR_LOOPBACK(&address->sin6_addr);
    }
  }
  ::freeaddrinfo(found);
  return loopback;
}

// A rank that ended only because another one had: see kAnotherRankFailedExitCode.
bool ended_for_another_rank(const RankExit& rank) {
  return rank.how == RankExit::How::kExited && rank.code == kAnotherRankFailedExitCode;
}

// "rank 5 (local rank 1, pid 4242)"; the local rank only where it differs.
std::string label(const RankExit& rank) {
  std::string text = "rank " + std::to_string(rank.rank) + " (";
  if (rank.local_rank != rank.rank) text += "local rank " + std::to_string(rank.local_rank) + ", ";
  return text + "pid " + std::to_string(rank.pid) + ")";
}

// The names the launcher sets in each rank's environment: an inherited value is replaced.
bool set_by_launcher(const std::string& name) {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all{kLaunchedVariable, kLauncherPidVariable, kStatusDirVariable};
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

// The CPUs to share out to the ranks; where even this thread's cannot be read (not expected),
// the machine's.
CpusToShare launcher_cpus() {
  try {
    return cpus_to_share();
  } catch (const std::system_error&) {
    CpusToShare all;
    for (unsigned cpu = 0; cpu < std::max(1u, std::thread::hardware_concurrency()); ++cpu)
      all.cpus.push_back(static_cast<int>(cpu));
    return all;
  }
}

// "1 each", or "2, 2, 1 (each rank's CPUs)" where the ranks' counts differ.
std::string threads_text(const std::vector<int>& threads) {
  if (std::adjacent_find(threads.begin(), threads.end(), std::not_equal_to<>()) == threads.end())
    return std::to_string(threads.front()) + " each";
  std::string text;
  for (int count : threads) text += (text.empty() ? "" : ", ") + std::to_string(count);
  return text + " (as many as each rank's CPUs)";
}

// null-terminated pointers into `strings`, for posix_spawn's argv and envp.
std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (std::string& text : strings) result.push_back(text.data());
  result.push_back(nullptr);
  return result;
}

// The calling thread on a rank's CPUs while it spawns that rank, which inherits them; its own
// CPUs again after. Where the system refuses, the rank runs unbound and `log` says so.
class BoundForSpawn {
 public:
  BoundForSpawn(const std::vector<int>& cpus, const RankExit& rank, std::ostream& log) : log_(log) {
    if (cpus.empty()) return;
    try {
      own_cpus_ = calling_thread_cpus();
      bind_calling_thread_to(cpus);
    } catch (const std::system_error& error) {
      log << "launcher: warning: rank " << rank.rank
          << " runs on the launcher's CPUs, not its own: " << error.what() << std::endl;
    }
  }
  ~BoundForSpawn() {
    if (own_cpus_.empty()) return;
    try {
      bind_calling_thread_to(own_cpus_);
    } catch (const std::system_error& error) {  // it had them a moment ago: not expected
      log_ << "launcher: warning: the launcher could not take its CPUs back: " << error.what()
           << "; the ranks it starts next run on the last one's" << std::endl;
    }
  }
  BoundForSpawn(const BoundForSpawn&) = delete;
  BoundForSpawn& operator=(const BoundForSpawn&) = delete;

 private:
  std::ostream& log_;
  std::vector<int> own_cpus_;
};

// One launch: its ranks, and the state of the stop once one began.
class Launch {
 public:
  Launch(const std::string& program, const std::vector<std::string>& argv,
         const LaunchOptions& options, const StatusDirectory& status, std::ostream& log)
      : program_(program), argv_(argv), options_(options), status_(status), log_(log) {
    for (int local_rank = 0; local_rank < options.nproc_per_node(); ++local_rank) {
      RankExit rank;
      rank.local_rank = local_rank;
      rank.rank = options.node_rank() * options.nproc_per_node() + local_rank;
      ranks_.push_back(rank);
    }
    last_seen_running_.resize(ranks_.size());
  }

  // Starts the ranks in order; when one cannot be started, or a SIGINT or SIGTERM comes, the
  // ones before it are stopped (by supervise) and the ones after it are not started.
  void start() {
    const char* user_threads = std::getenv("OMP_NUM_THREADS");
    const bool set_threads = user_threads == nullptr || *user_threads == '\0';
    const CpusToShare share = launcher_cpus();
    const std::vector<std::vector<int>> bindings = cpu_bindings(share);
    // Each rank's threads: as many as its CPUs where bound, else an equal share of them all.
    std::vector<int> threads;
    for (std::size_t local_rank = 0; local_rank < ranks_.size(); ++local_rank) {
      threads.push_back(bindings.empty() ? threads_per_rank(static_cast<int>(share.cpus.size()),
                                                            options_.nproc_per_node())
                                         : static_cast<int>(bindings[local_rank].size()));
    }
    log_ << "launcher: starting " << ranks_.size() << " rank" << (ranks_.size() == 1 ? "" : "s")
         << " (RANK " << ranks_.front().rank << "-" << ranks_.back().rank << " of WORLD_SIZE "
         << options_.world_size() << ", node " << options_.node_rank() << " of "
         << options_.nnodes() << "), MASTER_ADDR=" << options_.master_addr()
         << " MASTER_PORT=" << options_.master_port() << ", OMP_NUM_THREADS="
         << (set_threads ? threads_text(threads) : std::string(user_threads) + " (set by you)")
         << std::endl;
    log_cpus(share, bindings, set_threads ? std::optional<std::string>() : user_threads);
    // NOTE: a warning, not an error: several nodes on one machine (the tests, a try-out) rightly
    // meet on loopback.
    if (options_.nnodes() > 1 && is_loopback(options_.master_addr())) {
      log_ << "launcher: warning: --master-addr " << options_.master_addr()
           << " is a loopback address, but the job has " << options_.nnodes()
           << " nodes: they meet there only if all of them run on this machine. On several "
              "machines give every node the same address of node 0 that the others reach "
              "(e.g. `hostname -I` on node 0), not 127.0.0.1, localhost or a host name that "
              "/etc/hosts maps to 127.0.1.1"
           << std::endl;
    }
    if (status_.path().empty()) {
      log_ << "launcher: warning: no directory for the ranks to declare their failures in ("
           << status_.error() << "): a failed rank is told from the others by its exit only"
           << std::endl;
    }

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
      if (CaughtSignals::pending()) break;
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
      variables.push_back(std::string(kLauncherPidVariable) + "=" + std::to_string(::getpid()));
      if (!status_.path().empty())
        variables.push_back(std::string(kStatusDirVariable) + "=" + status_.path());
      if (set_threads) {
        variables.push_back("OMP_NUM_THREADS=" +
                            std::to_string(threads[static_cast<std::size_t>(rank.local_rank)]));
      }
      // As torchrun: under NCCL a hung collective ends at DDPOptions' timeout only with this set
      // (NCCL's watchdog then aborts the rank); unless the user chose otherwise. Gloo ignores it.
      for (const char* name : {"NCCL_ASYNC_ERROR_HANDLING", "TORCH_NCCL_ASYNC_ERROR_HANDLING"}) {
        if (std::getenv(name) == nullptr) variables.push_back(std::string(name) + "=1");
      }
      const std::vector<char*> variable_pointers = pointers(variables);
      pid_t pid = -1;
      // The rank inherits the CPUs of the thread that spawns it: this one's, for the spawn.
      // Unbound, a rank still gets every CPU to share where OpenMP pinned this process to one.
      const BoundForSpawn bound(!bindings.empty()                ? bindings[rank.local_rank]
                                : !share.openmp_variable.empty() ? share.cpus
                                                                 : std::vector<int>{},
                                rank, log_);
      // posix_spawn returns the exec's error too (glibc waits for the exec to succeed or fail).
      const int error = ::posix_spawn(&pid, program_.c_str(), nullptr, nullptr,
                                      argument_pointers.data(), variable_pointers.data());
      if (error != 0) {
        rank.error = std::strerror(error);
        fail(rank);
        break;
      }
      rank.pid = pid;  // its `how` is set when it is reaped
      last_seen_running_[&rank - ranks_.data()] = wall_clock_now();
      running_.push_back(&rank);
    }
  }

  // Waits until every started rank has ended, stopping them all after the first failure or a
  // signal to the launcher.
  void supervise(const CaughtSignals& signals) {
    while (true) {
      std::vector<RankExit*> ended = reap();
      // The signals first: a Ctrl-C's SIGINT is the launcher's before a rank it killed can be
      // reaped, and that rank is then stopped, not the failure.
      // NOTE: only where the handler ran before the reap: on this thread it always does; on
      // another one (the kernel's choice) it could run late.
      for (const auto& [signal, from_terminal] : CaughtSignals::take()) {
        interrupt(signal, from_terminal);
      }
      // Seen ending at once, a rank that failed on its own is the failure, not one that ended
      // because another rank had; and of those, one that ended without declaring (a crash, which
      // comes before a later declaration, below) is judged first, whatever the reap order.
      if (!ended.empty()) (void)declared_culprit();  // every rank's declaration, as of now
      std::stable_sort(ended.begin(), ended.end(), [](const RankExit* a, const RankExit* b) {
        const auto order = [](const RankExit& rank) {
          // a rank whose end was lost (kLost) may not have crashed: after those that declared
          if (ended_for_another_rank(rank)) return 3;
          if (rank.how == RankExit::How::kLost) return 2;
          return rank.declared.made ? 1 : 0;
        };
        return order(*a) < order(*b);
      });
      for (RankExit* rank : ended) {
        if (rank->succeeded() || stopping_) continue;
        // The rank that declared first that it failed on its own is the failure, whichever rank
        // ended first (it may still be saving its checkpoint of the moment); but not before a
        // rank that ended without declaring (a crash, an OOM kill) unless it declared before
        // that rank was last seen running: the crash may have come any time after.
        timespec declared_at{};
        RankExit* culprit = declared_culprit(&declared_at);
        if (culprit != nullptr && culprit != rank && !rank->declared.made &&
            !ended_for_another_rank(*rank) && !earlier(declared_at, last_seen_running(*rank))) {
          culprit = nullptr;
        }
        if (culprit != nullptr) {
          if (culprit != rank) {
            log_ << "launcher: " << rank->describe()
                 << (ended_for_another_rank(*rank) ? " (another rank failed)" : "") << std::endl;
          }
          fail(*culprit);
        } else if (!ended_for_another_rank(*rank)) {
          fail(*rank);
        } else if (provisional_ == nullptr) {
          wait_for_culprit(*rank);
        }
      }
      // While the launcher waits for the culprit, a rank may declare that it is the one.
      if (provisional_ != nullptr && !stopping_) {
        if (RankExit* culprit = declared_culprit()) fail(*culprit);
      }
      Clock::time_point now = Clock::now();
      // Only ranks that ended for another one's failure, and the wait for the culprit is over.
      if (provisional_ != nullptr && !stopping_ &&
          (running_.empty() || now >= provisional_deadline_)) {
        // Ranks that went on past the timeout that ended the others did not fail on their own:
        // one of them likely hangs (or is slower than the others' timeout).
        if (!running_.empty()) {
          log_ << "launcher: no rank failed on its own; still running after the others ended:";
          for (const RankExit* rank : running_) log_ << " " << label(*rank);
          log_ << " (one that hangs, or is slower than --ddp-timeout, leaves the others waiting)"
               << std::endl;
        }
        fail(*provisional_);
        now = Clock::now();
      }
      if (running_.empty()) return;
      if (terminate_pending_ && now >= terminate_deadline_) terminate_undeclared();
      if (stopping_ && !killed_ && now >= stop_deadline_) {
        for (RankExit* rank : running_) {
          log_ << "launcher: " << label(*rank) << " still runs "
               << seconds_text(options_.grace_period())
               << (rank->stopped ? " after being told to stop" : " after it declared its failure")
               << "; sending SIGKILL" << std::endl;
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
      if (provisional_ != nullptr && !stopping_) wake = std::min(wake, provisional_deadline_);
      if (stopping_ && !killed_) wake = std::min(wake, stop_deadline_);
      if (terminate_pending_) wake = std::min(wake, terminate_deadline_);
      if (killed_) wake = std::min(wake, kill_deadline_);
      // Rounded up: a wait of 0 ms before a deadline would spin.
      signals.wait(std::chrono::ceil<std::chrono::milliseconds>(wake - now));
    }
  }

  // A SIGINT or SIGTERM that reached the launcher after the ranks had ended, before its handlers
  // were put back: the job counts as interrupted by it (unless a rank failed first).
  void interrupted_late(int signal) {
    if (!first_failure_ && interrupted_by_ == 0) interrupted_by_ = signal;
  }

  // Every rank's declaration, read once more for the report and the result.
  void read_declarations() { (void)declared_culprit(); }

  LaunchResult result() const {
    LaunchResult result;
    result.ranks = ranks_;
    result.first_failure = first_failure_;
    result.interrupted_by = interrupted_by_;
    if (first_failure_) {
      const RankExit& failed = ranks_[*first_failure_];
      switch (failed.how) {
        case RankExit::How::kExited:
          // A rank that declared its failure and then exited with 0 (it recovered) still
          // stopped the job.
          result.exit_code = failed.code != 0 ? failed.code : 1;
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
    if (first_failure_ && ended_for_another_rank(ranks_[*first_failure_])) {
      // As torchrun's report, which names a root cause: here it is not on this machine.
      const RankExit& failed = ranks_[*first_failure_];
      log_ << "launcher: the job stopped: " << label(failed)
           << " ended because another rank failed (exit code " << kAnotherRankFailedExitCode
           << ": a collective found it gone, or waited for it past the timeout), and no rank of "
              "this machine failed before it; "
           << (options_.nnodes() > 1
                   ? "the first failure is on another node: its launcher's report names it\n"
                   : "its output above names the operation\n");
    } else if (first_failure_ && ranks_[*first_failure_].succeeded()) {
      // It declared a failure, and recovered after all: the job stopped for it all the same.
      const RankExit& failed = ranks_[*first_failure_];
      log_ << "launcher: the job failed: " << label(failed) << " declared that it failed"
           << (failed.declared.reason.empty() ? "" : " (" + failed.declared.reason + ")")
           << ", then exited with code 0 (the first failure; the launcher exits with 1)\n";
    } else if (first_failure_) {
      const RankExit& failed = ranks_[*first_failure_];
      log_ << "launcher: the job failed: " << failed.describe() << " (the first failure"
           << (!failed.declared.reason.empty() ? ": " + failed.declared.reason + ")\n"
               : failed.pid >= 0               ? "; its output above should say why)\n"
                                               : ")\n");
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
  // Each local rank's CPUs (LaunchOptions::bind_cpus) out of `share`; empty: none bound. Binds
  // this thread to the first share and back once, so that a system that refuses is said once.
  std::vector<std::vector<int>> cpu_bindings(const CpusToShare& share) {
    if (!options_.bind_cpus() || options_.nproc_per_node() < 2) return {};
    std::vector<std::vector<int>> bindings =
        cpus_for_local_ranks(cpus_by_core(share.cpus), options_.nproc_per_node());
    if (bindings.empty()) return {};
    try {
      const std::vector<int> own = calling_thread_cpus();
      bind_calling_thread_to(bindings.front());
      bind_calling_thread_to(own);
    } catch (const std::system_error& error) {
      log_ << "launcher: warning: the ranks are not bound to CPUs of their own (" << error.what()
           << "): they run on the launcher's CPUs " << cpu_list_text(share.cpus)
           << "; --no-cpu-binding says not to try" << std::endl;
      return {};
    }
    return bindings;
  }

  // Says which CPUs the ranks run on, where that is not simply the launcher's.
  void log_cpus(const CpusToShare& share, const std::vector<std::vector<int>>& bindings,
                const std::optional<std::string>& user_threads) {
    if (!share.openmp_variable.empty()) {
      log_ << "launcher: " << share.openmp_variable
           << " is set, for which OpenMP bound this process to one CPU as it started: the ranks "
              "share out CPUs "
           << cpu_list_text(share.cpus) << " (its cgroup's cpuset, or the online CPUs) instead"
           << std::endl;
    }
    if (bindings.empty()) {
      if (options_.bind_cpus() && options_.nproc_per_node() > 1 &&
          share.cpus.size() < ranks_.size()) {
        log_ << "launcher: the ranks are not bound to CPUs of their own: " << ranks_.size()
             << " ranks share " << share.cpus.size() << " CPU"
             << (share.cpus.size() == 1 ? "" : "s") << " (" << cpu_list_text(share.cpus)
             << "), fewer than one each" << std::endl;
      }
      return;
    }
    log_ << "launcher: each rank on CPUs of its own (--no-cpu-binding lets them move):";
    std::size_t fewest = bindings.front().size();
    for (std::size_t local_rank = 0; local_rank < bindings.size(); ++local_rank) {
      const std::vector<int>& cpus = bindings[local_rank];
      fewest = std::min(fewest, cpus.size());
      log_ << (local_rank == 0 ? " " : ", ") << "rank " << ranks_[local_rank].rank << " on CPU"
           << (cpus.size() == 1 ? " " : "s ") << cpu_list_text(cpus);
    }
    log_ << std::endl;
    if (user_threads && std::atol(user_threads->c_str()) > static_cast<long>(fewest)) {
      log_ << "launcher: warning: OMP_NUM_THREADS=" << *user_threads << " (set by you) is more "
           << "threads than the " << fewest << " CPU" << (fewest == 1 ? "" : "s")
           << " a rank is bound to: they take turns there. Unset it to get one thread per CPU, "
              "or --no-cpu-binding"
           << std::endl;
    }
  }

  // Collects every rank that has ended, without blocking, and returns them.
  std::vector<RankExit*> reap() {
    const timespec now = wall_clock_now();  // before the waitpids: each rank still ran then
    std::vector<RankExit*> ended;
    for (auto it = running_.begin(); it != running_.end();) {
      RankExit& rank = **it;
      int status = 0;
      pid_t done = -1;
      do {
        done = ::waitpid(rank.pid, &status, WNOHANG);
      } while (done < 0 && errno == EINTR);
      if (done == 0) {
        last_seen_running_[&rank - ranks_.data()] = now;
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
      ended.push_back(&rank);
    }
    return ended;
  }

  // Reads every started rank's declaration into its RankExit; returns the rank that declared first
  // that it failed on its own, if one did (and has not exited with 0 since), and sets `when` to
  // the time of its declaration. NOTE: that time is the file's, which the kernel keeps to a tick
  // (about 4 ms): equal ones go to the lower rank.
  RankExit* declared_culprit(timespec* when = nullptr) {
    RankExit* culprit = nullptr;
    timespec first{};
    for (RankExit& rank : ranks_) {
      if (rank.pid < 0) continue;
      const auto declared = status_.read(rank.rank);
      if (!declared) continue;
      rank.declared = declared->first;
      if (!rank.declared.own_failure || rank.succeeded()) continue;
      if (culprit == nullptr || earlier(declared->second, first)) {
        culprit = &rank;
        first = declared->second;
      }
    }
    if (when != nullptr) *when = first;
    return culprit;
  }

  const timespec& last_seen_running(const RankExit& rank) const {
    return last_seen_running_[&rank - ranks_.data()];
  }

  // `rank` exited because another rank failed, and no rank has failed yet: it is the failure only
  // if no rank fails on its own within the wait (the others run on meanwhile).
  void wait_for_culprit(RankExit& rank) {
    const std::chrono::milliseconds wait =
        std::min<std::chrono::milliseconds>(options_.grace_period(), options_.culprit_wait());
    provisional_ = &rank;
    provisional_deadline_ = Clock::now() + wait;
    if (wait.count() == 0 || running_.empty()) return;
    log_ << "launcher: " << rank.describe() << " (another rank failed); waiting up to "
         << seconds_text(wait) << " for the rank that failed first" << std::endl;
  }

  // `rank` is the first failure: it is reported, and the others are told to stop. One that still
  // runs (it declared its failure) is not: it finishes its cleanup within the grace period.
  void fail(RankExit& rank) {
    first_failure_ = static_cast<std::size_t>(&rank - ranks_.data());
    if (std::find(running_.begin(), running_.end(), &rank) != running_.end()) {
      finishing_ = &rank;
      log_ << "launcher: " << label(rank) << " declared that it failed: " << rank.declared.reason;
    } else {
      log_ << "launcher: " << rank.describe();
      if (ended_for_another_rank(rank)) {
        log_ << " (another rank failed)";
      } else if (rank.declared.own_failure) {
        log_ << ": " << rank.declared.reason;
      }
    }
    const bool others_running = running_.size() > (finishing_ != nullptr ? 1U : 0U);
    if (others_running) {
      log_ << "; stopping the other ranks (SIGTERM after " << seconds_text(declaration_wait())
           << " to those that have not declared a failure, and SIGKILL after "
           << seconds_text(options_.grace_period()) << ")";
    }
    if (finishing_ != nullptr) {
      log_ << (others_running ? ", and waiting" : "; waiting") << " up to "
           << seconds_text(options_.grace_period()) << " for it to finish";
    }
    log_ << std::endl;
    stopping_ = true;
    stop_deadline_ = Clock::now() + options_.grace_period();
    terminate_pending_ = true;
    terminate_deadline_ = Clock::now() + declaration_wait();
  }

  std::chrono::milliseconds declaration_wait() const {
    return std::min(kDeclarationWait, options_.grace_period() / 2);
  }

  // The wait after a failure is over: SIGTERM to every rank still running that has not declared
  // a failure (read once more now). One that did is failing already: it is left to end within the
  // grace period.
  void terminate_undeclared() {
    terminate_pending_ = false;
    (void)declared_culprit();
    for (RankExit* rank : running_) {
      if (rank == finishing_ || rank->declared.made) continue;
      rank->stopped = true;
      ::kill(rank->pid, SIGTERM);
    }
  }

  // A SIGINT, SIGTERM or SIGHUP to the launcher: the first is passed on to the ranks; another one,
  // or one during the stop after a failure, kills them at once.
  void interrupt(int signal, bool from_terminal) {
    // A rank ended for another's failure before the signal: the failure, as without the wait,
    // and the stop it starts (SIGTERM, then SIGKILL after the grace period) takes the signal's
    // place rather than killing at once.
    if (provisional_ != nullptr && !stopping_) {
      RankExit* culprit = declared_culprit();
      fail(culprit != nullptr ? *culprit : *provisional_);
      return;
    }
    if (stopping_) {
      if (killed_) return;
      terminate_pending_ = false;
      log_ << "launcher: received " << signal_name(signal) << " while stopping; sending SIGKILL"
           << std::endl;
      kill_all();
      return;
    }
    interrupted_by_ = signal;
    // A hang-up's (a closed terminal or session) is passed on as SIGTERM, which a rank stops on.
    const int passed_on = signal == SIGHUP ? SIGTERM : signal;
    from_terminal = from_terminal && signal != SIGHUP;
    // NOTE: a Ctrl-C (si_code SI_KERNEL: from the terminal) went to the whole foreground process
    // group, the ranks included: sent again, it would reach them twice.
    log_ << "launcher: received " << signal_name(signal)
         << (from_terminal         ? " from the terminal, which sent it to the ranks too"
             : passed_on != signal ? "; passing SIGTERM on to the ranks"
                                   : "; passing it on to the ranks")
         << " (SIGKILL after " << seconds_text(options_.grace_period())
         << "; send another SIGINT or SIGTERM to kill them now)" << std::endl;
    stop(passed_on, /*send=*/!from_terminal);
  }

  void stop(int signal, bool send) {
    stopping_ = true;
    stop_deadline_ = Clock::now() + options_.grace_period();
    for (RankExit* rank : running_) {
      if (rank == finishing_) continue;
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
  const StatusDirectory& status_;
  std::ostream& log_;
  std::vector<RankExit> ranks_;
  std::vector<RankExit*> running_;  // started and not yet reaped
  std::optional<std::size_t> first_failure_;
  // The first rank that ended because another rank failed, while no rank had failed otherwise:
  // named as the failure at provisional_deadline_ if none does by then (wait_for_culprit).
  RankExit* provisional_ = nullptr;
  Clock::time_point provisional_deadline_;
  // The first failure, when it declared so and still ran: not told to stop (fail).
  RankExit* finishing_ = nullptr;
  // After a failure, until terminate_deadline_: the wait for the other ranks to declare.
  bool terminate_pending_ = false;
  Clock::time_point terminate_deadline_;
  // By index into ranks_: when each was last seen running (the wall clock, as a declaration's).
  std::vector<timespec> last_seen_running_;
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

void stop_with_launcher() {
  const char* launcher = std::getenv(kLauncherPidVariable);
  if (!launched_by_trainbus() || launcher == nullptr) return;
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  // The launcher may have died before the request: this process then has another parent.
  if (std::to_string(::getppid()) != launcher) ::raise(SIGTERM);
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
  TRAINBUS_CHECK(culprit_wait_.count() >= 0, "the launcher's culprit wait must be >= 0, got ",
                 culprit_wait_.count(), " ms");
}

int rank_exit_code(const std::exception& error) {
  // NOTE: by type: DDPStrategy raises a PeerLostError only where Gloo or c10d said that the
  // transport lost a peer (ddp_strategy.cpp's lost_a_peer), so an error of this rank's own inside
  // a collective (a custom autograd function in backward) is its failure. A rendezvous that fails
  // is not counted either: rank 0 may be missing for a reason of this machine.
  return dynamic_cast<const AnotherRankFailedError*>(&error) != nullptr ? kAnotherRankFailedExitCode
                                                                        : 1;
}

void declare_rank_failure(const std::exception& error) noexcept {
  try {
    const char* directory = std::getenv(kStatusDirVariable);
    const char* rank = std::getenv("RANK");
    if (directory == nullptr || *directory == '\0' || rank == nullptr || *rank == '\0') return;
    const std::string rank_text = rank;
    if (rank_text.find_first_not_of("0123456789") != std::string::npos) return;
    std::string reason = error.what();
    reason.resize(std::min(reason.find('\n'), reason.size()));
    if (reason.size() > kReasonLimit) reason = reason.substr(0, kReasonLimit) + "...";
    const std::string text =
        std::string(rank_exit_code(error) == kAnotherRankFailedExitCode ? kAnotherRankFailed
                                                                        : kOwnFailure) +
        "\n" + reason + "\n";
    const std::string path = declaration_path(directory, rank_text);
    const std::string temporary = path + ".tmp-" + std::to_string(::getpid());
    const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return;
    bool written = true;
    for (std::size_t done = 0; written && done < text.size();) {
      const ssize_t wrote = ::write(fd, text.data() + done, text.size() - done);
      if (wrote < 0 && errno == EINTR) continue;
      written = wrote > 0;
      if (written) done += static_cast<std::size_t>(wrote);
    }
    ::close(fd);
    // link, not rename: the launcher sees the whole file or none, and a rank's first
    // declaration stays (link fails where the name exists).
    if (written) {
      [[maybe_unused]] const int linked = ::link(temporary.c_str(), path.c_str());
    }
    ::unlink(temporary.c_str());
  } catch (...) {  // a declaration is a help to the launcher, never a new failure
  }
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

int threads_per_rank(int cpus, int nproc_per_node) {
  return std::max(1, cpus / std::max(1, nproc_per_node));
}

int threads_per_rank(int nproc_per_node) {
  return threads_per_rank(static_cast<int>(launcher_cpus().cpus.size()), nproc_per_node);
}

LaunchResult launch_ranks(const std::string& program, const std::vector<std::string>& argv,
                          const LaunchOptions& options, std::ostream& log) {
  options.validate();
  TRAINBUS_CHECK(!program.empty() && !argv.empty(),
                 "launch_ranks: no command to start (program and argv[0] are needed)");
  // Until the status directory is gone, after the report.
  const BrokenPipeAsError broken_pipe;
  const StatusDirectory status;
  Launch launch(program, argv, options, status, log);
  {
    const CaughtSignals signals;
    launch.start();
    launch.supervise(signals);
  }
  // Handlers are back as they were: a signal from now on takes its usual course.
  for (const auto& [signal, from_terminal] : CaughtSignals::take()) launch.interrupted_late(signal);
  launch.read_declarations();
  launch.report();
  return launch.result();
}

}  // namespace trainbus::distributed
