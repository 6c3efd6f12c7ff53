// The DDP settings the ranks compare before they build the process group: the comparison's text,
// and the handshake itself between threads on one in-memory c10d store (or on TCPStores).
#include "distributed/ddp_settings.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

// glog's CHECK (through c10's logging) before Catch's, which must win: the unity build may put
// this file's includes first.
#include <c10/util/Logging.h>
#include <catch2/catch.hpp>
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "base/errors.h"
#include "distributed/strategy.h"

using namespace trainbus;
using namespace trainbus::distributed;

namespace {

DistributedEnvironment rank_of_two(int rank) {
  DistributedEnvironment environment;
  environment.rank = rank;
  environment.world_size = 2;
  environment.local_rank = rank;
  environment.local_world_size = 2;
  return environment;
}

// What agree_on_ddp_settings raised on one rank: its message and whether it was a
// MisconfigurationError, an AnotherRankFailedError or another DistributedError ("" and "none"
// when it returned).
struct Outcome {
  std::string kind = "none";
  std::string message;
};

Outcome agree(c10d::Store& store, const std::vector<SharedDDPSetting>& settings, int rank,
              int world_size = 2) {
  DistributedEnvironment environment = rank_of_two(rank);
  environment.world_size = world_size;
  environment.local_world_size = world_size;
  Outcome outcome;
  try {
    agree_on_ddp_settings(store, settings, environment);
  } catch (const MisconfigurationError& error) {
    outcome = {"misconfiguration", error.what()};
  } catch (const AnotherRankFailedError& error) {
    outcome = {"another rank failed", error.what()};
  } catch (const DistributedError& error) {  // this rank's own
    outcome = {"distributed error", error.what()};
  } catch (const std::exception& error) {
    outcome = {"other", error.what()};
  }
  return outcome;
}

// Rank 1 starts first, so that it may look for rank 0's settings before they are there.
std::pair<Outcome, Outcome> handshake(c10d::Store& store,
                                      const std::vector<SharedDDPSetting>& rank0,
                                      const std::vector<SharedDDPSetting>& rank1) {
  Outcome second;
  std::thread other([&] { second = agree(store, rank1, 1); });
  const Outcome first = agree(store, rank0, 0);
  other.join();
  return {first, second};
}

c10::intrusive_ptr<c10d::HashStore> store_with_short_timeout() {
  auto store = c10::make_intrusive<c10d::HashStore>();
  store->setTimeout(std::chrono::seconds(20));  // a broken handshake fails the test, not hangs it
  return store;
}

}  // namespace

TEST_CASE(
    "DDP settings: a backend that differs from rank 0's is named with both values and the flag",
    "[ddp][ddp_settings]") {
  const DDPOptions options;
  const std::string rank_zero = encode_ddp_settings(shared_ddp_settings(options, "nccl", 2));
  CHECK(ddp_settings_mismatch(shared_ddp_settings(options, "nccl", 2), 1, rank_zero).empty());
  CHECK(ddp_settings_mismatch(shared_ddp_settings(options, "gloo", 2), 1, rank_zero) ==
        "`backend` is gloo on rank 1 but nccl on rank 0: set --ddp-backend (DDPOptions::backend; "
        "auto picks nccl only with --device cuda and a LibTorch built with NCCL) alike on every "
        "rank");
}

TEST_CASE("DDP settings: every setting that differs is named, and so is a build that differs",
          "[ddp][ddp_settings]") {
  const std::string rank_zero = encode_ddp_settings(shared_ddp_settings(DDPOptions(), "gloo", 2));
  const auto mismatch_of = [&](const DDPOptions& options, int world_size = 2) {
    return ddp_settings_mismatch(shared_ddp_settings(options, "gloo", world_size), 3, rank_zero);
  };
  CHECK(mismatch_of(DDPOptions().find_unused_parameters(true)) ==
        "`find_unused_parameters` is true on rank 3 but false on rank 0: set "
        "--ddp-find-unused-parameters (DDPOptions::find_unused_parameters) alike on every rank");
  // The key is the hook gradient_hook_for picks, by its name.
  CHECK(mismatch_of(DDPOptions().gradient_compression(DDPOptions::GradientCompression::kFp16)) ==
        "`gradient_hook` is fp16_all_gather on rank 3 but float32_all_reduce on rank 0: set "
        "--ddp-fp16-gradients (DDPOptions::gradient_compression) alike on every rank");
  // kFp16 and LibTorch's float16 all-reduce: other collectives on Gloo with 2 ranks; the same
  // hook, so they agree, on Gloo from 3 ranks on and on NCCL.
  const auto fp16 = DDPOptions().gradient_compression(DDPOptions::GradientCompression::kFp16);
  const auto all_reduce =
      DDPOptions().gradient_compression(DDPOptions::GradientCompression::kFp16AllReduce);
  const auto fp16_against_all_reduce = [&](const char* backend, int world_size) {
    return ddp_settings_mismatch(
        shared_ddp_settings(all_reduce, backend, world_size), 1,
        encode_ddp_settings(shared_ddp_settings(fp16, backend, world_size)));
  };
  CHECK(fp16_against_all_reduce("gloo", 2) ==
        "`gradient_hook` is fp16_all_reduce on rank 1 but fp16_all_gather on rank 0: set "
        "--ddp-fp16-gradients (DDPOptions::gradient_compression) alike on every rank");
  CHECK(fp16_against_all_reduce("gloo", 3).empty());
  CHECK(fp16_against_all_reduce("nccl", 2).empty());
  // The same flag where the backend or WORLD_SIZE differs picks other hooks: only the setting to
  // fix is said, not --ddp-fp16-gradients, which is set alike.
  const auto fp16_of = [&](const char* backend, int world_size) {
    return shared_ddp_settings(fp16, backend, world_size);
  };
  CHECK(ddp_settings_mismatch(fp16_of("gloo", 2), 1, encode_ddp_settings(fp16_of("nccl", 2))) ==
        "`backend` is gloo on rank 1 but nccl on rank 0: set --ddp-backend (DDPOptions::backend; "
        "auto picks nccl only with --device cuda and a LibTorch built with NCCL) alike on every "
        "rank");
  CHECK(ddp_settings_mismatch(fp16_of("gloo", 3), 1, encode_ddp_settings(fp16_of("gloo", 2))) ==
        "`world_size` is 3 on rank 1 but 2 on rank 0: set WORLD_SIZE (the launcher's "
        "--nproc-per-node times --nnodes) alike on every rank");
  // A hook of one's own runs other collectives than the Reducer's (or fails to run any).
  CHECK(mismatch_of(DDPOptions().comm_hook(distributed::allreduce_average)) ==
        "`comm_hook` is set on rank 3 but none on rank 0: set DDPOptions::comm_hook alike on "
        "every rank");
  CHECK_THAT(mismatch_of(DDPOptions().bucket_cap_mb(0.05)),
             Catch::StartsWith("`bucket_cap_mb` is 0.05 MiB (52428 bytes) on rank 3 but 25 MiB "
                               "(26214400 bytes) on rank 0: set DDPOptions::bucket_cap_mb"));
  CHECK_THAT(mismatch_of(DDPOptions().broadcast_buffers(false)),
             Catch::StartsWith("`broadcast_buffers` is false on rank 3 but true on rank 0"));
  CHECK_THAT(mismatch_of(DDPOptions().stop_agreement_every_batch(false)),
             Catch::StartsWith("`stop_agreement_every_batch` is false on rank 3 but true"));
  CHECK_THAT(mismatch_of(DDPOptions(), 4),
             Catch::StartsWith("`world_size` is 4 on rank 3 but 2 on rank 0: set WORLD_SIZE"));
  // Two at once: both named.
  CHECK_THAT(mismatch_of(DDPOptions().find_unused_parameters(true).broadcast_buffers(false)),
             Catch::Contains("`find_unused_parameters` is true") &&
                 Catch::Contains("; `broadcast_buffers` is false"));
  // Not shared: each rank's own wait, and its machine's interface.
  CHECK(mismatch_of(DDPOptions().timeout(std::chrono::seconds(7)).socket_ifname("eth1")).empty());
  // A setting one side does not know: a build that differs.
  CHECK(ddp_settings_mismatch(shared_ddp_settings(DDPOptions(), "gloo", 2), 1,
                              rank_zero + "future_setting=3\n") ==
        "`future_setting` is 3 on rank 0, and rank 1 does not know it: run the same trainbus "
        "build on every rank");
  CHECK_THAT(ddp_settings_mismatch(shared_ddp_settings(DDPOptions(), "gloo", 2), 1,
                                   "handshake_version=1\n"),
             Catch::Contains("`world_size` is 2 on rank 1, and rank 0 does not know it: run the "
                             "same trainbus build on every rank"));
}

TEST_CASE(
    "DDP settings: fp16 gradients of a build from before the fp16 hook choice differ as a build",
    "[ddp][ddp_settings]") {
  // A build from before: `gradient_compression=fp16` was LibTorch's float16 all-reduce on every
  // backend, where this build's kFp16 all-gathers on Gloo with 2 ranks. Told to set the flag
  // alike, the user would find it set alike: the key is another, so the builds differ.
  const auto fp16 = DDPOptions().gradient_compression(DDPOptions::GradientCompression::kFp16);
  std::istringstream now(encode_ddp_settings(shared_ddp_settings(fp16, "gloo", 2)));
  std::string before;
  for (std::string line; std::getline(now, line);) {
    const bool compression =
        line.rfind("gradient_hook=", 0) == 0 || line.rfind("gradient_compression=", 0) == 0;
    before += (compression ? std::string("gradient_compression=fp16") : line) + "\n";
  }
  const std::string mismatch =
      ddp_settings_mismatch(shared_ddp_settings(fp16, "gloo", 2), 1, before);
  CHECK_THAT(mismatch,
             Catch::Contains("`gradient_hook` is fp16_all_gather on rank 1, and rank 0 does not "
                             "know it: run the same trainbus build on every rank"));
  CHECK_THAT(mismatch, Catch::Contains("`gradient_compression` is fp16 on rank 0, and rank 1 does "
                                       "not know it: run the same trainbus build on every rank"));
  CHECK_THAT(mismatch, !Catch::Contains("--ddp-fp16-gradients"));
}

TEST_CASE(
    "DDP settings handshake: ranks that agree go on, one that differs fails, and so do "
    "the others, naming it",
    "[ddp][ddp_settings]") {
  const auto store = store_with_short_timeout();
  const auto same = shared_ddp_settings(DDPOptions(), "gloo", 2);
  SECTION("agreeing ranks both return") {
    const auto [rank0, rank1] = handshake(*store, same, same);
    CHECK(rank0.kind == "none");
    CHECK(rank1.kind == "none");
  }
  SECTION("rank 1 differs: its MisconfigurationError; rank 0 stops because of it") {
    const auto [rank0, rank1] = handshake(
        *store, same, shared_ddp_settings(DDPOptions().find_unused_parameters(true), "gloo", 2));
    CHECK(rank1.kind == "misconfiguration");
    CHECK_THAT(rank1.message,
               Catch::StartsWith("rank 1 of 2: this rank's DDP settings differ from rank 0's: "
                                 "`find_unused_parameters` is true on rank 1 but false on rank "
                                 "0: set --ddp-find-unused-parameters"));
    CHECK(rank0.kind == "another rank failed");
    CHECK_THAT(rank0.message,
               Catch::StartsWith("rank 0 of 2: the DDP settings of another rank differ from this "
                                 "rank's: `find_unused_parameters` is true on rank 1 but false on "
                                 "rank 0") &&
                   Catch::EndsWith("this rank stops too"));
  }
}

TEST_CASE("DDP settings handshake: a value from rank 0 that is not settings names the build",
          "[ddp][ddp_settings]") {
  // A rank 0 of another build, which published something else under the same key.
  const auto store = store_with_short_timeout();
  store->set("trainbus/ddp_settings/rank0", {'7', '\n'});
  const Outcome rank1 = agree(*store, shared_ddp_settings(DDPOptions(), "gloo", 2), 1);
  CHECK(rank1.kind == "misconfiguration");
  CHECK(rank1.message ==
        "rank 1 of 2: rank 0's DDP settings could not be read (no `handshake_version` in the 2 "
        "bytes it published): run the same trainbus build on every rank");
}

TEST_CASE("DDP settings handshake: a rank past rank 0's world, counting a larger one, is at fault",
          "[ddp][ddp_settings]") {
  // Rank 0 and rank 1 count 2 ranks; rank 2 counts 3. Rank 0 never reads rank 2's answer and
  // agrees with rank 1: rank 2 must not go on (nor only stop because of another rank).
  const auto store = store_with_short_timeout();
  const auto of_two = shared_ddp_settings(DDPOptions(), "gloo", 2);
  Outcome third;
  std::thread past(
      [&] { third = agree(*store, shared_ddp_settings(DDPOptions(), "gloo", 3), 2, 3); });
  const auto [rank0, rank1] = handshake(*store, of_two, of_two);
  past.join();
  CHECK(rank0.kind == "none");
  CHECK(rank1.kind == "none");
  CHECK(third.kind == "misconfiguration");
  CHECK_THAT(third.message, Catch::StartsWith("rank 2 of 3: this rank's DDP settings differ from "
                                              "rank 0's: `world_size` is 3 on rank 2 but 2 on "
                                              "rank 0"));
}

namespace {

// A TCPStore server and a client of it, on a free port, each with `timeout`.
c10::intrusive_ptr<c10d::TCPStore> tcp_store(std::chrono::milliseconds timeout, int port = 0) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(port);
  options.isServer = port == 0;
  options.waitWorkers = false;
  options.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>("127.0.0.1", options);
}

// Rank 0's TCPStore, through which rank 2's answer arrives just after rank 0 stopped waiting for
// it: when a wait for it passed its timeout, or when rank 0 publishes its verdict. `late` writes
// it, on a connection of its own, and has the server take it (a check) before rank 0 goes on.
class LateAnswerStore : public c10d::Store {
 public:
  LateAnswerStore(c10d::TCPStore& rank_zero, c10d::TCPStore& late, std::string key,
                  std::string answer)
      : c10d::Store(rank_zero.getTimeout()),
        inner_(rank_zero),
        late_(late),
        key_(std::move(key)),
        answer_(std::move(answer)) {}

  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    inner_.set(key, value);
    if (key == "trainbus/ddp_settings/verdict") answer_late();
  }
  std::vector<uint8_t> get(const std::string& key) override { return inner_.get(key); }
  int64_t add(const std::string& key, int64_t value) override { return inner_.add(key, value); }
  bool deleteKey(const std::string& key) override { return inner_.deleteKey(key); }
  bool check(const std::vector<std::string>& keys) override { return inner_.check(keys); }
  int64_t getNumKeys() override { return inner_.getNumKeys(); }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    try {
      inner_.wait(keys, timeout);
    } catch (const c10::Error&) {
      if (std::find(keys.begin(), keys.end(), key_) != keys.end()) answer_late();
      throw;
    }
  }

  bool answered() const { return answered_; }

 private:
  void answer_late() {
    if (answered_) return;
    answered_ = true;
    late_.set(key_, std::vector<uint8_t>(answer_.begin(), answer_.end()));
    (void)late_.check({key_});  // now the server has it, and has told a wait for it
  }

  c10d::TCPStore& inner_;
  c10d::TCPStore& late_;
  std::string key_;
  std::string answer_;
  bool answered_ = false;
};

}  // namespace

TEST_CASE("DDP settings handshake: an answer that comes just after rank 0's deadline is missing",
          "[ddp][ddp_settings]") {
  // Three ranks; rank 2's answer (alike) comes right after rank 0 stopped waiting for it. Rank 0's
  // TCPStore connection must still answer its own calls: rank 2 is named as missing.
  const std::chrono::seconds timeout(2);  // rank 1 answers well within it
  const auto server = tcp_store(timeout);
  const auto rank_one = tcp_store(timeout, server->getPort());
  const auto late = tcp_store(timeout, server->getPort());
  const auto of_three = shared_ddp_settings(DDPOptions(), "gloo", 3);
  LateAnswerStore rank_zero(*server, *late, "trainbus/ddp_settings/answer/rank2",
                            "\n" + encode_ddp_settings(of_three));
  Outcome second;
  std::thread other([&] { second = agree(*rank_one, of_three, 1, 3); });
  const Outcome first = agree(rank_zero, of_three, 0, 3);
  other.join();
  CHECK(rank_zero.answered());
  CHECK(first.kind == "another rank failed");
  CHECK_THAT(first.message, Catch::StartsWith("rank 0 of 3: rank 2 did not answer rank 0's DDP "
                                              "settings within the timeout (2 s"));
  CHECK(second.kind == "another rank failed");
  CHECK_THAT(second.message, Catch::Contains("rank 2 did not answer"));
}

TEST_CASE("DDP settings handshake: a rank of another handshake version ends the join at once",
          "[ddp][ddp_settings]") {
  const auto store = store_with_short_timeout();
  const auto same = shared_ddp_settings(DDPOptions(), "gloo", 2);
  auto other_version = same;
  other_version.front().value = "3";
  const auto bytes = [](const std::string& text) {
    return std::vector<uint8_t>(text.begin(), text.end());
  };
  SECTION("rank 0 does not wait for a rank of another version to read its verdict") {
    // Such a rank stops once it has answered: it reads no verdict of another version.
    store->set("trainbus/ddp_settings/answer/rank1",
               bytes(ddp_settings_mismatch(other_version, 1, encode_ddp_settings(same)) + "\n" +
                     encode_ddp_settings(other_version)));
    const auto start = std::chrono::steady_clock::now();
    const Outcome rank0 = agree(*store, same, 0);
    // Not the 5 s rank 0 gives the ranks that read its verdict.
    CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 3.0);
    CHECK(rank0.kind == "another rank failed");
    CHECK_THAT(rank0.message,
               Catch::Contains("`handshake_version` is 3 on rank 1 but 2 on rank 0: run the same "
                               "trainbus build on every rank"));
  }
  SECTION("a rank of another version says at once that it reads no verdict") {
    // For a rank 0 of another build, which may wait for every rank to read its verdict.
    store->set("trainbus/ddp_settings/rank0", bytes(encode_ddp_settings(other_version)));
    const Outcome rank1 = agree(*store, same, 1);
    CHECK(rank1.kind == "misconfiguration");
    CHECK_THAT(rank1.message,
               Catch::Contains("`handshake_version` is 2 on rank 1 but 3 on rank 0"));
    CHECK(store->check({"trainbus/ddp_settings/verdict_read/rank1"}));
  }
}

TEST_CASE("DDP settings handshake: rank 0 names the missing ranks and the world it waited for",
          "[ddp][ddp_settings]") {
  // Rank 0 counts 4 ranks, rank 1 counts 3 (the one that is wrong), rank 2 never comes: rank 0
  // waits for ranks 1 and 2 only, as rank 1 counts, and says so.
  auto store = c10::make_intrusive<c10d::HashStore>();
  store->setTimeout(std::chrono::seconds(2));
  Outcome rank1;
  std::thread other(
      [&] { rank1 = agree(*store, shared_ddp_settings(DDPOptions(), "gloo", 3), 1, 3); });
  const Outcome rank0 = agree(*store, shared_ddp_settings(DDPOptions(), "gloo", 4), 0, 4);
  other.join();
  CHECK(rank0.kind == "another rank failed");
  CHECK_THAT(rank0.message,
             Catch::StartsWith("rank 0 of 4: rank 2 did not answer rank 0's DDP settings within "
                               "the timeout (2 s): it did not start, started more than that after "
                               "rank 0, looked for the rendezvous elsewhere than rank 0's "
                               "MASTER_ADDR:MASTER_PORT (127.0.0.1:29500), or failed before "
                               "joining. Rank 0 waited for ranks 1 to 2 "
                               "only, as rank 1 counts WORLD_SIZE 3 (rank 0's is 4); `world_size` "
                               "is 3 on rank 1 but 4 on rank 0: set WORLD_SIZE"));
  CHECK(rank1.kind == "misconfiguration");
  CHECK_THAT(rank1.message, Catch::StartsWith("rank 1 of 3: this rank's DDP settings differ from "
                                              "rank 0's: `world_size` is 3 on rank 1 but 4"));
}

TEST_CASE("DDP settings handshake: a rank that answers after rank 0's deadline is told it was late",
          "[ddp][ddp_settings]") {
  // Rank 2 starts once rank 0 has given its verdict (without it): it is the rank that failed.
  auto store = c10::make_intrusive<c10d::HashStore>();
  store->setTimeout(std::chrono::seconds(2));
  const auto of_three = shared_ddp_settings(DDPOptions(), "gloo", 3);
  Outcome rank1;
  std::thread other([&] { rank1 = agree(*store, of_three, 1, 3); });
  const Outcome rank0 = agree(*store, of_three, 0, 3);
  other.join();
  REQUIRE(store->check({"trainbus/ddp_settings/verdict"}));
  const Outcome rank2 = agree(*store, of_three, 2, 3);
  CHECK_THAT(rank0.message, Catch::StartsWith("rank 0 of 3: rank 2 did not answer"));
  CHECK(rank0.kind == "another rank failed");
  CHECK(rank1.kind == "another rank failed");
  CHECK(rank2.kind == "distributed error");
  CHECK_THAT(rank2.message,
             Catch::StartsWith("rank 2 of 3: this rank answered rank 0's DDP settings after rank 0 "
                               "had stopped waiting for it (rank 0's timeout): it reached the join "
                               "later than that after rank 0") &&
                 Catch::Contains("rank 0 says: rank 2 did not answer rank 0's DDP settings within "
                                 "the timeout (2 s)"));
}

namespace {

// The store rank 0 serves, as each rank sees it: once rank 0 has stopped (stop()), every other
// rank's call fails as a TCPStore client's does when the server has closed (ECONNRESET). A rank
// slow to read the verdict reads it only once rank 0 looks for that rank's ack, or has stopped; a
// rank slow to answer answers only once rank 0 has stopped.
class ServedStore {
 public:
  ServedStore() { inner->setTimeout(std::chrono::seconds(20)); }

  void stop() {
    const std::lock_guard<std::mutex> lock(mutex);
    stopped = true;
    changed.notify_all();
  }

  const c10::intrusive_ptr<c10d::HashStore> inner = c10::make_intrusive<c10d::HashStore>();
  std::mutex mutex;
  std::condition_variable changed;
  bool stopped = false;
  bool answer_held = false;  // a slow answerer has read rank 0's settings
  std::set<std::string> rank_zero_looked_for;
};

enum class Slow { kNot, kReader, kAnswerer };

class RankHandle : public c10d::Store {
 public:
  RankHandle(ServedStore& served, int rank, Slow slow)
      : c10d::Store(served.inner->getTimeout()), served_(served), rank_(rank), slow_(slow) {}

  void set(const std::string& key, const std::vector<uint8_t>& value) override {
    if (slow_ == Slow::kAnswerer &&
        key == "trainbus/ddp_settings/answer/rank" + std::to_string(rank_)) {
      std::unique_lock<std::mutex> lock(served_.mutex);
      served_.answer_held = true;
      served_.changed.notify_all();
      served_.changed.wait(lock, [&] { return served_.stopped; });
    }
    use({key});
    served_.inner->set(key, value);
  }
  std::vector<uint8_t> get(const std::string& key) override {
    use({key});
    return served_.inner->get(key);
  }
  int64_t add(const std::string& key, int64_t value) override {
    use({key});
    return served_.inner->add(key, value);
  }
  bool deleteKey(const std::string& key) override {
    use({key});
    return served_.inner->deleteKey(key);
  }
  bool check(const std::vector<std::string>& keys) override {
    use(keys);
    return served_.inner->check(keys);
  }
  int64_t getNumKeys() override {
    use({});
    return served_.inner->getNumKeys();
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    if (slow_ == Slow::kReader &&
        std::find(keys.begin(), keys.end(), "trainbus/ddp_settings/verdict") != keys.end()) {
      const std::string ack = "trainbus/ddp_settings/verdict_read/rank" + std::to_string(rank_);
      std::unique_lock<std::mutex> lock(served_.mutex);
      served_.changed.wait(
          lock, [&] { return served_.stopped || served_.rank_zero_looked_for.count(ack) > 0; });
    }
    use(keys);
    served_.inner->wait(keys, timeout);
  }

 private:
  void use(const std::vector<std::string>& keys) {
    const std::lock_guard<std::mutex> lock(served_.mutex);
    if (rank_ == 0) {
      served_.rank_zero_looked_for.insert(keys.begin(), keys.end());
      served_.changed.notify_all();
    } else if (served_.stopped) {
      throw std::system_error(ECONNRESET, std::generic_category(), "recv");
    }
  }

  ServedStore& served_;
  int rank_;
  Slow slow_;
};

}  // namespace

TEST_CASE("DDP settings handshake: a rank that rank 0 did not read gets a clear error as it stops",
          "[ddp][ddp_settings]") {
  // Rank 0 stops the job, and its store goes; a rank past the world it counted, which is slow to
  // read the verdict, or to answer, must still learn why (not "Connection reset by peer").
  ServedStore served;
  const auto start = [&](Outcome& outcome, int rank, int world_size, const DDPOptions& options,
                         Slow slow = Slow::kNot) {
    return std::thread([&served, &outcome, rank, world_size, options, slow] {
      RankHandle handle(served, rank, slow);
      outcome = agree(handle, shared_ddp_settings(options, "gloo", world_size), rank, world_size);
      if (rank == 0) served.stop();
    });
  };
  // Rank 1 comes last: rank 0 reads its answer (which gives the world) after every other one.
  const auto answered = [&](int rank) {
    served.inner->wait({"trainbus/ddp_settings/answer/rank" + std::to_string(rank)});
  };
  SECTION("a rank past rank 0's world, counting a larger one: its own MisconfigurationError") {
    // Ranks 0 and 1 count 2 ranks, and rank 1 differs: rank 0 stops. Rank 2 counts 3.
    Outcome rank0, rank1, rank2;
    std::thread zero = start(rank0, 0, 2, DDPOptions());
    std::thread two = start(rank2, 2, 3, DDPOptions(), Slow::kReader);
    answered(2);
    std::thread one = start(rank1, 1, 2, DDPOptions().find_unused_parameters(true));
    for (std::thread* thread : {&zero, &one, &two}) thread->join();
    CHECK(rank0.kind == "another rank failed");
    CHECK(rank1.kind == "misconfiguration");
    CHECK(rank2.kind == "misconfiguration");
    CHECK_THAT(rank2.message, Catch::StartsWith("rank 2 of 3: this rank's DDP settings differ from "
                                                "rank 0's: `world_size` is 3 on rank 2 but 2 on "
                                                "rank 0"));
  }
  SECTION("a rank past rank 0's world that answers after rank 0 stopped: its own error") {
    Outcome rank0, rank1, rank2;
    std::thread zero = start(rank0, 0, 2, DDPOptions());
    std::thread two = start(rank2, 2, 3, DDPOptions(), Slow::kAnswerer);
    {
      std::unique_lock<std::mutex> lock(served.mutex);
      served.changed.wait(lock, [&] { return served.answer_held; });
    }
    std::thread one = start(rank1, 1, 2, DDPOptions().find_unused_parameters(true));
    for (std::thread* thread : {&zero, &one, &two}) thread->join();
    CHECK(rank2.kind == "misconfiguration");
    CHECK_THAT(rank2.message, Catch::StartsWith("rank 2 of 3: this rank's DDP settings differ from "
                                                "rank 0's: `world_size` is 3 on rank 2 but 2 on "
                                                "rank 0"));
  }
  SECTION("a rank past rank 1's count, in rank 0's world: the verdict, naming rank 1") {
    // Rank 0 counts 4 ranks, rank 1 counts 3: rank 0 reads ranks 1 and 2, and stops for rank 1's
    // WORLD_SIZE. Rank 3 counts 4, as rank 0.
    Outcome rank0, rank1, rank2, rank3;
    std::thread zero = start(rank0, 0, 4, DDPOptions());
    std::thread two = start(rank2, 2, 4, DDPOptions());
    std::thread three = start(rank3, 3, 4, DDPOptions(), Slow::kReader);
    answered(2);
    answered(3);
    std::thread one = start(rank1, 1, 3, DDPOptions());
    for (std::thread* thread : {&zero, &one, &two, &three}) thread->join();
    CHECK(rank0.kind == "another rank failed");
    CHECK(rank1.kind == "misconfiguration");
    CHECK(rank2.kind == "another rank failed");
    CHECK(rank3.kind == "another rank failed");
    CHECK_THAT(rank3.message, Catch::StartsWith("rank 3 of 4: the DDP settings of another rank "
                                                "differ from rank 0's: `world_size` is 3 on rank "
                                                "1 but 4 on rank 0"));
  }
}
