#include "distributed/ddp_settings.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <thread>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "base/errors.h"
#include "distributed/strategy.h"

namespace trainbus::distributed {
namespace {

// No c10d key begins so (Gloo's are numbers, TCPStore's "init/", Python's "default_pg/"). Each
// connect makes a store of its own: one handshake per store.
constexpr const char* kRankZeroKey = "trainbus/ddp_settings/rank0";  // rank 0's encoded settings
constexpr const char* kVerdictKey = "trainbus/ddp_settings/verdict";
// A verdict's first line: every rank agrees; ranks that differ from rank 0 (their numbers
// follow); rank 0 differs from every other rank; ranks that did not answer (their numbers follow).
constexpr const char* kAgreed = "ok";
constexpr const char* kRanksDiffer = "differ";
constexpr const char* kRankZeroDiffers = "rank0";
constexpr const char* kRanksMissing = "missing";
// Rank 0 waits at most this long for the other ranks to read its verdict (its store, which
// answers them, goes when rank 0 throws); they read it as soon as it is there.
constexpr std::chrono::milliseconds kVerdictReadBound{5000};

std::vector<uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }
std::string text_of(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

// Rank `rank`'s answer: "<its mismatch with rank 0, empty if none>\n<its encoded settings>".
std::string answer_key(int rank) {
  return detail::concat("trainbus/ddp_settings/answer/rank", rank);
}
// Set by rank `rank` once it has read the verdict.
std::string verdict_read_key(int rank) {
  return detail::concat("trainbus/ddp_settings/verdict_read/rank", rank);
}

// "name=value" lines, in order.
std::vector<std::pair<std::string, std::string>> decode(const std::string& encoded) {
  std::vector<std::pair<std::string, std::string>> settings;
  std::istringstream lines(encoded);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t equals = line.find('=');
    if (equals != std::string::npos)
      settings.emplace_back(line.substr(0, equals), line.substr(equals + 1));
  }
  return settings;
}

std::string value_of(const std::string& encoded, const std::string& name) {
  for (const auto& [key, value] : decode(encoded))
    if (key == name) return value;
  return {};
}

constexpr const char* kSameBuild = "run the same trainbus build on every rank";

// What differs between `settings` (this rank's, `rank`) and `reference` (encoded): one sentence
// per setting, naming the reference as `reference_name` ("rank 0", "every other rank").
std::string mismatch_with(const std::vector<SharedDDPSetting>& settings, int rank,
                          const std::string& reference, const std::string& reference_name) {
  const auto theirs = decode(reference);
  std::string mismatch;
  const auto add = [&](const std::string& sentence) {
    mismatch += (mismatch.empty() ? "" : "; ") + sentence;
  };
  // A setting's value by its name, on rank 0's side or this rank's; null where unknown.
  const auto theirs_of = [&](const std::string& name) -> const std::string* {
    for (const auto& [their_name, value] : theirs)
      if (their_name == name) return &value;
    return nullptr;
  };
  const auto mine_of = [&](const std::string& name) -> const std::string* {
    for (const SharedDDPSetting& setting : settings)
      if (setting.name == name) return &setting.value;
    return nullptr;
  };
  const auto differs = [&](const std::string& name) {
    const std::string *mine = mine_of(name), *other = theirs_of(name);
    return mine == nullptr || other == nullptr || *mine != *other;
  };
  for (const SharedDDPSetting& setting : settings) {
    if (std::any_of(setting.follows_from.begin(), setting.follows_from.end(), differs)) continue;
    const std::string* other = theirs_of(setting.name);
    if (other == nullptr) {
      add(detail::concat("`", setting.name, "` is ", setting.value, " on rank ", rank, ", and ",
                         reference_name, " does not know it: ", kSameBuild));
    } else if (*other != setting.value) {
      add(detail::concat("`", setting.name, "` is ", setting.value, " on rank ", rank, " but ",
                         *other, " on ", reference_name, ": ",
                         setting.fix == kSameBuild
                             ? std::string(kSameBuild)
                             : "set " + setting.fix + " alike on every rank"));
    }
  }
  for (const auto& [name, value] : theirs) {
    if (mine_of(name) == nullptr) {
      add(detail::concat("`", name, "` is ", value, " on ", reference_name, ", and rank ", rank,
                         " does not know it: ", kSameBuild));
    }
  }
  return mismatch;
}

constexpr const char* kWhy =
    ". The ranks must share these, or their collectives do not match and the job waits until the "
    "timeout";

std::string rank_list(const std::vector<int>& ranks) {
  std::string list;
  for (int rank : ranks) list += (list.empty() ? "" : ", ") + std::to_string(rank);
  return list;
}

// Whether every one of `keys` is in `store` by `deadline` (false once it passes), looked for
// every few milliseconds.
// NOTE: not with Store::wait: a TCPStore's wait past its timeout (LibTorch 1.13) leaves the
// server's later answer to it in the socket, where the next call reads it as its own (a check then
// finds a key that is not there, a get fails), and keeps its timeout on the socket.
bool wait_for_keys(c10d::Store& store, const std::vector<std::string>& keys,
                   std::chrono::steady_clock::time_point deadline) {
  constexpr std::chrono::milliseconds kPollInterval{10};
  while (true) {
    if (store.check(keys)) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(kPollInterval, deadline - now));
  }
}

struct Answer {
  int rank = 0;
  std::string mismatch;  // with rank 0's settings, as that rank wrote it; empty if none
  std::string settings;  // that rank's, encoded
};

Answer read_answer(c10d::Store& store, int rank) {
  const std::string answer = text_of(store.get(answer_key(rank)));
  const std::size_t newline = answer.find('\n');
  return {rank, answer.substr(0, newline),
          newline == std::string::npos ? "" : answer.substr(newline + 1)};
}

// Rank 0: publishes its settings, reads every other rank's answer (up to the store's timeout
// in all), publishes the verdict and acts on it; a verdict that stops them, it waits (briefly)
// until they have read: its store, which answers them, goes when it throws.
void agree_as_rank_zero(c10d::Store& store, const std::vector<SharedDDPSetting>& settings,
                        const DistributedEnvironment& environment) {
  store.set(kRankZeroKey, bytes_of(encode_ddp_settings(settings)));
  const auto timeout = store.getTimeout();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<Answer> answers;
  std::vector<int> missing;
  // The world rank 1 counts, when it counts a smaller one: the ranks past it never come (and
  // those this rank does not count may still answer). Not a larger one: ranks past this rank's
  // own world are not waited for (one that exists finds its own world_size differs, below).
  // Rank 1 is in every world of two or more.
  int world_size = environment.world_size;
  for (int rank = 1; rank < world_size; ++rank) {
    if (!wait_for_keys(store, {answer_key(rank)}, deadline)) {
      missing.push_back(rank);
      continue;
    }
    answers.push_back(read_answer(store, rank));
    if (rank == 1) {
      const std::string counted = value_of(answers.back().settings, "world_size");
      if (!counted.empty() && counted.find_first_not_of("0123456789") == std::string::npos &&
          counted.size() < 6)
        world_size = std::clamp(std::stoi(counted), 2, environment.world_size);
    }
  }
  std::vector<int> differing;
  std::string differences;  // the answers that differ, joined
  for (const Answer& answer : answers) {
    if (answer.mismatch.empty()) continue;
    differing.push_back(answer.rank);
    differences += (differences.empty() ? "" : "; ") + answer.mismatch;
  }
  // With two ranks, rank 1 is the one that differs from rank 0, the reference. With more, rank
  // 0 is when every other rank answered alike and differs from it.
  bool rank_zero_differs =
      missing.empty() && answers.size() >= 2 && differing.size() == answers.size();
  for (const Answer& answer : answers)
    rank_zero_differs = rank_zero_differs && answer.settings == answers.front().settings;

  std::string verdict;
  std::string failure;  // what this rank throws, empty if none
  if (!missing.empty()) {
    // NOTE: the verdict carries this text to the other ranks: "rank 0", not "this rank".
    const std::string waited_for =
        world_size == 2 ? "rank 1" : detail::concat("ranks 1 to ", world_size - 1);
    failure = detail::concat(
        missing.size() == 1 ? "rank " : "ranks ", rank_list(missing),
        " did not answer rank 0's DDP settings within the timeout (", timeout.count() / 1000.0,
        " s): ", missing.size() == 1 ? "it" : "they",
        " did not start, started more than that after rank 0, looked for the rendezvous "
        "elsewhere than rank 0's MASTER_ADDR:MASTER_PORT (",
        environment.master_addr, ":", environment.master_port,
        "), or failed before joining. Rank 0 waited for ", waited_for,
        world_size == environment.world_size
            ? detail::concat(", as its WORLD_SIZE ", world_size, " says")
            : detail::concat(" only, as rank 1 counts WORLD_SIZE ", world_size, " (rank 0's is ",
                             environment.world_size, ")"),
        differences.empty() ? "" : "; ", differences);
    verdict = detail::concat(kRanksMissing, " ", rank_list(missing), "\n", failure);
  } else if (rank_zero_differs) {
    failure = mismatch_with(settings, 0, answers.front().settings, "every other rank");
    verdict = detail::concat(kRankZeroDiffers, "\n", failure);
  } else if (!differing.empty()) {
    failure = differences;
    verdict = detail::concat(kRanksDiffer, " ", rank_list(differing), "\n", differences);
  } else {
    verdict = kAgreed;
  }
  store.set(kVerdictKey, bytes_of(verdict));
  if (verdict == kAgreed) return;  // the store stays, for the process group
  // The ranks past the world this rank counted (rank 1's count, or its own) that answered all
  // the same: unread, they wait for the verdict too, on this rank's store.
  std::vector<Answer> readers = answers;
  const auto read_if_answered = [&](int rank) {
    if (!store.check({answer_key(rank)})) return false;
    readers.push_back(read_answer(store, rank));
    return true;
  };
  // A rank named missing that answered since (before the verdict was set) waits for it too:
  // told it came late, it fails with its own error, not as one whose peer went.
  for (int rank : missing) (void)read_if_answered(rank);
  // A rank past the world counts a larger one; none counts more than the largest world a
  // Trainer accepts, so a check that wrongly says yes cannot make this scan endless.
  constexpr int kLargestWorld = 65534;
  for (int rank = world_size; rank < kLargestWorld; ++rank) {
    // past its own world, the first rank that did not answer ends them
    if (!read_if_answered(rank) && rank >= environment.world_size) break;
  }
  // A rank of another handshake version reads no verdict: it stopped once it had answered.
  std::vector<std::string> read_keys;
  for (const Answer& answer : readers) {
    if (value_of(answer.settings, settings.front().name) == settings.front().value)
      read_keys.push_back(verdict_read_key(answer.rank));
  }
  // A rank gone after its answer never reads it: its own error says why.
  if (!read_keys.empty()) {
    (void)wait_for_keys(store, read_keys,
                        std::chrono::steady_clock::now() + std::min(timeout, kVerdictReadBound));
  }
  if (!missing.empty()) {
    throw AnotherRankFailedError(
        environment.rank_message(detail::concat(failure, "; this rank stops too")));
  }
  if (rank_zero_differs) {
    throw MisconfigurationError(environment.rank_message(detail::concat(
        "this rank's DDP settings differ from every other rank's: ", failure, kWhy)));
  }
  if (!differing.empty()) {
    throw AnotherRankFailedError(environment.rank_message(
        detail::concat("the DDP settings of another rank differ from this rank's: ", failure, kWhy,
                       "; this rank stops too")));
  }
}

// Every other rank: compares its settings with rank 0's, answers, and acts on rank 0's verdict.
void agree_as_other_rank(c10d::Store& store, const std::vector<SharedDDPSetting>& settings,
                         const DistributedEnvironment& environment) {
  const std::string published = text_of(store.get(kRankZeroKey));
  // settings.front() is handshake_version (shared_ddp_settings).
  const std::string version = value_of(published, settings.front().name);
  TRAINBUS_CHECK(!version.empty(),
                 environment.rank_message(detail::concat(
                     "rank 0's DDP settings could not be read (no `", settings.front().name,
                     "` in the ", published.size(), " bytes it published): ", kSameBuild)));
  const std::string mismatch = ddp_settings_mismatch(settings, environment.rank, published);
  const auto differs = [&] {
    return MisconfigurationError(environment.rank_message(
        detail::concat("this rank's DDP settings differ from rank 0's: ", mismatch, kWhy)));
  };
  const bool same_version = version == settings.front().value;
  std::string verdict;
  try {
    store.set(answer_key(environment.rank),
              bytes_of(detail::concat(mismatch, "\n", encode_ddp_settings(settings))));
    // A rank 0 of another handshake version gives no verdict this rank could read: stop now, and
    // say so (as if read) to a rank 0 that waits for every rank to read its verdict.
    if (!same_version) {
      store.set(verdict_read_key(environment.rank), bytes_of(kAgreed));
    } else {
      // Rank 0 waits up to its timeout for the last answer, and publishes the verdict then.
      store.wait({kVerdictKey}, store.getTimeout() + kVerdictReadBound);
      verdict = text_of(store.get(kVerdictKey));
      store.set(verdict_read_key(environment.rank), bytes_of(kAgreed));
    }
  } catch (const std::exception&) {
    // Rank 0's store gone (it stopped, as for another rank, without reading this one's answer):
    // a rank that differs from rank 0 is at fault all the same.
    if (!mismatch.empty()) throw differs();
    throw;
  }
  if (!same_version) throw differs();
  const std::size_t newline = verdict.find('\n');
  const std::string kind = verdict.substr(0, verdict.find_first_of(" \n"));
  const std::string text = newline == std::string::npos ? "" : verdict.substr(newline + 1);
  // A rank whose settings differ from rank 0's is at fault whatever the verdict says: rank 0 may
  // not have read its answer (it counts the world from rank 1's), or may stop for a rank missing.
  if (!mismatch.empty() && kind != kRankZeroDiffers) throw differs();
  if (kind == kAgreed) return;
  // The ranks a verdict names after its kind: "differ 1, 3", "missing 2".
  const auto named = [&] {
    std::istringstream ranks(verdict.substr(kind.size(), newline - kind.size()));
    bool this_rank = false;
    for (std::string rank; std::getline(ranks, rank, ',');) {
      if (rank.find_first_of("0123456789") != std::string::npos)
        this_rank = this_rank || std::stoi(rank) == environment.rank;
    }
    return this_rank;
  };
  if (kind == kRanksDiffer) {
    if (named()) throw differs();
    throw AnotherRankFailedError(environment.rank_message(
        detail::concat("the DDP settings of another rank differ from rank 0's: ", text, kWhy,
                       "; this rank stops too")));
  }
  if (kind == kRankZeroDiffers) {
    throw AnotherRankFailedError(environment.rank_message(
        detail::concat("rank 0's DDP settings differ from every other rank's: ", text, kWhy,
                       "; this rank stops too")));
  }
  // Named as missing after it answered: rank 0 had stopped waiting. Its own failure, not rank 0's.
  if (kind == kRanksMissing && named()) {
    throw DistributedError(environment.rank_message(detail::concat(
        "this rank answered rank 0's DDP settings after rank 0 had stopped waiting for it (rank "
        "0's timeout): it reached the join later than that after rank 0 (it started late, or was "
        "slow to get there): start every rank at once, or give rank 0 a longer --ddp-timeout; "
        "rank 0 says: ",
        text)));
  }
  throw AnotherRankFailedError(environment.rank_message(
      detail::concat("rank 0 stopped the join: ", text, "; this rank stops too")));
}

}  // namespace

// Each one changes which collectives a rank runs, or their sizes: ranks that differ call
// collectives the others do not, and wait for each other until the timeout (or Gloo pairs two of
// different sizes and fails, or averages garbage). Not shared: `timeout`, each rank's own bound
// on a wait (ranks with different ones still run the same collectives; a hang ends at the
// shortest), and `socket_ifname`, which names an interface of the rank's own machine.

std::vector<SharedDDPSetting> shared_ddp_settings(const DDPOptions& options,
                                                  std::string_view backend, int world_size) {
  const auto yes_no = [](bool value) { return std::string(value ? "true" : "false"); };
  return {
      // The handshake's own format: a build that compares other settings differs.
      {"handshake_version", "2", kSameBuild},
      // Ranks that count the world differently wait for ranks that never come.
      {"world_size", std::to_string(world_size),
       "WORLD_SIZE (the launcher's --nproc-per-node times --nnodes)"},
      // A Gloo rank and an NCCL rank cannot join one process group. Resolved: `auto` differs
      // where the ranks' devices, or their LibTorch's NCCL, differ.
      {"backend", std::string(backend),
       "--ddp-backend (DDPOptions::backend; auto picks nccl only with --device cuda and a "
       "LibTorch built with NCCL)"},
      // The Reducer all-reduces a map of the parameters used, before the gradients: one
      // collective more per backward.
      {"find_unused_parameters", yes_no(options.find_unused_parameters()),
       "--ddp-find-unused-parameters (DDPOptions::find_unused_parameters)"},
      // float16 buckets against float32 ones, all-gathered against all-reduced: other
      // collectives, of other sizes. The hook gradient_hook_for picks, by its name: kFp16 and
      // kFp16AllReduce, which pick the same hook on NCCL and on Gloo from 3 ranks on, agree
      // there. The key was `gradient_compression` (none or fp16, then LibTorch's float16
      // all-reduce on every backend); another key, so that a build from before and this one
      // differ as builds ("does not know it: run the same trainbus build"), not as a flag set
      // differently. Rename it again when the collectives a hook's name stands for change.
      // With DDPOptions::comm_hook (only without compression) float32_all_reduce: `comm_hook`
      // below says that a hook of one's own replaces it.
      {"gradient_hook",
       std::string(gradient_hook_name(
           gradient_hook_for(options.gradient_compression(), backend, world_size))),
       "--ddp-fp16-gradients (DDPOptions::gradient_compression)",
       {"backend", "world_size"}},
      // A hook of one's own against the Reducer's all-reduce: other collectives, or none. Only
      // whether it is set: what a hook does cannot be compared.
      {"comm_hook", options.comm_hook() ? "set" : "none", "DDPOptions::comm_hook"},
      // The buckets are the all-reduces of a backward: their number and sizes.
      {"bucket_cap_mb",
       detail::concat(options.bucket_cap_mb(), " MiB (",
                      static_cast<int64_t>(options.bucket_cap_mb() * (1 << 20)), " bytes)"),
       "DDPOptions::bucket_cap_mb"},
      // A broadcast before a training step that the other ranks do not make.
      {"broadcast_buffers", yes_no(options.broadcast_buffers()), "DDPOptions::broadcast_buffers"},
      // An all-reduce after every training batch that the other ranks do not make.
      {"stop_agreement_every_batch", yes_no(options.stop_agreement_every_batch()),
       "DDPOptions::stop_agreement_every_batch"},
  };
}

std::string encode_ddp_settings(const std::vector<SharedDDPSetting>& settings) {
  std::string encoded;
  for (const SharedDDPSetting& setting : settings)
    encoded += setting.name + "=" + setting.value + "\n";
  return encoded;
}

std::string ddp_settings_mismatch(const std::vector<SharedDDPSetting>& settings, int rank,
                                  const std::string& rank_zero) {
  return mismatch_with(settings, rank, rank_zero, "rank 0");
}

void agree_on_ddp_settings(c10d::Store& store, const std::vector<SharedDDPSetting>& settings,
                           const DistributedEnvironment& environment) {
  if (environment.rank == 0) {
    agree_as_rank_zero(store, settings, environment);
  } else {
    agree_as_other_rank(store, settings, environment);
  }
}

}  // namespace trainbus::distributed
