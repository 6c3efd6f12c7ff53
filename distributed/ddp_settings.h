#pragma once
/// The DDP settings every rank of a job must share, and the handshake in which the ranks compare
/// them through the rendezvous store before they build the process group (DDPStrategy::connect).
/// Without it, ranks that differ fail at the timeout with an error that does not say why.

#include <string>
#include <string_view>
#include <vector>

#include "distributed/ddp_strategy.h"
#include "distributed/environment.h"

namespace c10d {
class Store;
}

namespace trainbus::distributed {

/// One setting that must be equal on every rank, as text.
struct SharedDDPSetting {
  std::string name;   ///< "backend", "find_unused_parameters", ...
  std::string value;  ///< "gloo", "true", ...
  std::string fix;    ///< the flag or option that sets it: "--ddp-backend (DDPOptions::backend)"
  /// Settings its value follows from too: where one of them differs, that one is the fix, and
  /// this one is not said ("gradient_hook" follows from "backend" and "world_size").
  std::vector<std::string> follows_from = {};
};

/// The settings this rank must share with every other: WORLD_SIZE, the backend `backend` it
/// chose ("gloo" or "nccl", DDPOptions::backend resolved for its device), and the DDPOptions
/// that change which collectives a step runs (see the comments in ddp_settings.cpp).
std::vector<SharedDDPSetting> shared_ddp_settings(const DDPOptions& options,
                                                  std::string_view backend, int world_size);

/// `settings` as the store carries them: "name=value" lines.
std::string encode_ddp_settings(const std::vector<SharedDDPSetting>& settings);

/// What differs between rank `rank`'s `settings` and rank 0's (`rank_zero`, encoded), one
/// sentence per setting: "`backend` is gloo on rank 1 but nccl on rank 0: set --ddp-backend ...
/// alike on every rank". A setting only one side knows is a build that differs. Empty when every
/// setting agrees.
std::string ddp_settings_mismatch(const std::vector<SharedDDPSetting>& settings, int rank,
                                  const std::string& rank_zero);

/// The handshake, on `store` (which every rank of the job reaches), before the process group; it
/// is also the rendezvous (the TCPStore does not wait for its workers). Rank 0 publishes its
/// settings; every other rank compares its own with them (a get that waits up to the store's
/// timeout), answers with what differs and its own settings, and waits for rank 0's verdict;
/// rank 0 waits for the answers (up to the store's timeout in all: rank 1's tells the world
/// size the others count), publishes the verdict, and when it stops the job waits briefly for
/// every rank that answered to read it, also those past the world it counted (not for a rank of
/// another handshake version, which reads none: it says so, and stops, once it has answered).
/// Rank 0 looks for keys with non-blocking checks (a TCPStore wait that times out leaves its
/// connection out of step in LibTorch 1.13). The keys begin with "trainbus/ddp_settings/", which no
/// c10d key does; one handshake per store (DDPStrategy::connect makes a store for each).
///
/// Throws, on a rank whose settings differ from rank 0's, MisconfigurationError naming this
/// rank, each setting, its value here and on rank 0, and what sets it; on rank 0 and on the
/// ranks that agree with it, AnotherRankFailedError naming the ranks that differ and how (they
/// stop only because of another rank's misconfiguration: exit code 75). Rank 0 is the reference:
/// with two ranks rank 1 is the one that differs; with three or more, when every other rank
/// answered alike and differs from rank 0, rank 0 throws the MisconfigurationError ("differ
/// from every other rank's") and the others AnotherRankFailedError. Ranks that did not answer
/// within the timeout are named by rank 0, with the ranks it waited for and whose WORLD_SIZE
/// said so (AnotherRankFailedError on every rank; a DistributedError, its own failure, on a rank
/// so named that answered after all and reads the verdict: it came late); a value from rank 0
/// that is not settings, or of another handshake version, is a MisconfigurationError saying to
/// run one build. The store's own errors (a rank gone, a wait past the timeout) come out as c10d
/// raised them, except on a rank whose settings differ from rank 0's: its MisconfigurationError.
void agree_on_ddp_settings(c10d::Store& store, const std::vector<SharedDDPSetting>& settings,
                           const DistributedEnvironment& environment);

}  // namespace trainbus::distributed
