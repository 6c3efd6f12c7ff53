#include "distributed/ddp_settings.h"

#include <cstdint>
#include <sstream>

#include <torch/csrc/distributed/c10d/Store.hpp>

#include "base/errors.h"
#include "distributed/strategy.h"

namespace trainbus::distributed {
namespace {

// No c10d key begins so (Gloo's are numbers, TCPStore's "init/", Python's "default_pg/").
constexpr const char* kKeyPrefix = "trainbus/ddp_settings/";
// Counts the handshakes on one store: each one's answers and verdict carry its number.
constexpr const char* kHandshakesKey = "trainbus/ddp_settings/handshakes";
// Rank 0's "<handshake number>\n<encoded settings>"; deleted once every rank has answered, so
// that a later handshake on the same store waits for rank 0's new one.
constexpr const char* kRankZeroKey = "trainbus/ddp_settings/rank0";
constexpr const char* kAgreed = "ok";

std::vector<uint8_t> bytes_of(const std::string& text) { return {text.begin(), text.end()}; }
std::string text_of(const std::vector<uint8_t>& bytes) { return {bytes.begin(), bytes.end()}; }

std::string answer_key(int64_t handshake, int rank) {
  return detail::concat(kKeyPrefix, handshake, "/rank", rank);
}
std::string verdict_key(int64_t handshake) {
  return detail::concat(kKeyPrefix, handshake, "/verdict");
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

constexpr const char* kSameBuild = "run the same trainbus build on every rank";

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
      {"handshake_version", "1", kSameBuild},
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
      // float16 buckets against float32 ones: half the bytes.
      {"gradient_compression",
       options.gradient_compression() == DDPOptions::GradientCompression::kFp16 ? "fp16" : "none",
       "--ddp-fp16-gradients (DDPOptions::gradient_compression)"},
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
  const auto theirs = decode(rank_zero);
  std::string mismatch;
  const auto add = [&](const std::string& sentence) {
    mismatch += (mismatch.empty() ? "" : "; ") + sentence;
  };
  for (const SharedDDPSetting& setting : settings) {
    auto found = theirs.begin();
    while (found != theirs.end() && found->first != setting.name) ++found;
    if (found == theirs.end()) {
      add(detail::concat("`", setting.name, "` is ", setting.value, " on rank ", rank,
                         ", and rank 0 does not know it: ", kSameBuild));
    } else if (found->second != setting.value) {
      add(detail::concat("`", setting.name, "` is ", setting.value, " on rank ", rank, " but ",
                         found->second, " on rank 0: set ", setting.fix, " alike on every rank"));
    }
  }
  for (const auto& [name, value] : theirs) {
    bool known = false;
    for (const SharedDDPSetting& setting : settings) known = known || setting.name == name;
    if (!known) {
      add(detail::concat("`", name, "` is ", value, " on rank 0, and rank ", rank,
                         " does not know it: ", kSameBuild));
    }
  }
  return mismatch;
}

void agree_on_ddp_settings(c10d::Store& store, const std::vector<SharedDDPSetting>& settings,
                           const DistributedEnvironment& environment) {
  constexpr const char* kWhy =
      ". The ranks must share these, or their collectives do not match and the job waits until "
      "the timeout";
  if (environment.rank == 0) {
    const int64_t handshake = store.add(kHandshakesKey, 1);
    store.set(kRankZeroKey,
              bytes_of(detail::concat(handshake, "\n", encode_ddp_settings(settings))));
    std::string differing;  // every rank's answer that is not kAgreed
    for (int rank = 1; rank < environment.world_size; ++rank) {
      const std::string answer = text_of(store.get(answer_key(handshake, rank)));
      if (answer != kAgreed) differing += (differing.empty() ? "" : "; ") + answer;
    }
    store.deleteKey(kRankZeroKey);
    store.set(verdict_key(handshake), bytes_of(differing.empty() ? kAgreed : differing));
    if (!differing.empty()) {
      throw AnotherRankFailedError(environment.rank_message(
          detail::concat("the DDP settings of another rank differ from this rank's: ", differing,
                         kWhy, "; this rank stops too")));
    }
    return;
  }
  const std::string published = text_of(store.get(kRankZeroKey));
  const std::size_t newline = published.find('\n');
  const int64_t handshake = std::stoll(published.substr(0, newline));
  const std::string mismatch = ddp_settings_mismatch(
      settings, environment.rank,
      newline == std::string::npos ? std::string() : published.substr(newline + 1));
  store.set(answer_key(handshake, environment.rank),
            bytes_of(mismatch.empty() ? kAgreed : mismatch));
  TRAINBUS_CHECK(mismatch.empty(),
                 environment.rank_message(detail::concat(
                     "this rank's DDP settings differ from rank 0's: ", mismatch, kWhy)));
  const std::string verdict = text_of(store.get(verdict_key(handshake)));
  if (verdict != kAgreed) {
    throw AnotherRankFailedError(environment.rank_message(
        detail::concat("the DDP settings of another rank differ from rank 0's: ", verdict, kWhy,
                       "; this rank stops too")));
  }
}

}  // namespace trainbus::distributed
