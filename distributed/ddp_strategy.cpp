#include "distributed/ddp_strategy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <gloo/common/error.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
// Empty unless this LibTorch has NCCL: a CUDA LibTorch's CMake target defines USE_C10D_NCCL.
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/logger.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "base/errors.h"
#include "distributed/ddp_settings.h"
#include "distributed/fp16_allgather_hook.h"
#include "distributed/gloo_event_loop.h"

namespace trainbus::distributed {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
// As DistributedDataParallel: the first bucket is small so that its all-reduce starts early in
// backward; module states are broadcast in buckets of 250 MiB.
constexpr size_t kFirstBucketBytes = kMiB;
constexpr size_t kBroadcastBucketBytes = 250 * kMiB;

// c10::Error's what() carries a C++ backtrace; users need the message.
std::string message_of(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error))
    return c10_error->what_without_backtrace();
  return error.what();
}

// Whether `error`, raised inside a collective, says that the transport lost a peer (it closed
// or reset its connection, or did not answer within the timeout) rather than that something
// failed on this rank. Seen with LibTorch 1.13 (ranks killed in tests/distributed/ddp_test.cpp;
// a hung rank, and ranks gone while joining, tried by hand): Gloo's transport raises
// gloo::IoException for a pair whose connection closed or failed to read or write, and for a
// receive or connect past the timeout; c10d's TCPStore, on which the ranks exchange addresses
// while joining the process group, raises std::system_error for a store whose other end closed.
// Not a lost peer: a bad interface (Gloo's EnforceNotMet), a model that differs (c10::Error), an
// error of the user's code in backward (its own type).
bool lost_a_peer(const std::exception& error) {
  if (dynamic_cast<const gloo::IoException*>(&error) != nullptr) return true;
  if (const auto* system = dynamic_cast<const std::system_error*>(&error)) {
    const std::error_condition condition = system->code().default_error_condition();
    return condition == std::errc::connection_reset || condition == std::errc::broken_pipe ||
           condition == std::errc::connection_refused ||
           condition == std::errc::connection_aborted || condition == std::errc::timed_out;
  }
  // NOTE: a text, as nothing else tells it: c10d's socket helpers (Utils.hpp's SYSCHECK) raise a
  // plain c10::Error "Socket Timeout" for a TCPStore wait past the timeout (a rank that did not
  // publish its address while joining), as for any other failed check.
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error))
    return c10_error->msg().rfind("Socket Timeout", 0) == 0;
  return false;
}

// Whether a collective that lost a peer (lost_a_peer) did so because the wait for it passed the
// timeout, rather than because a peer went away. Gloo says "Timed out" on the rank whose timer
// fires first; that rank then closes its connections, so the other ranks see a connection closed
// (no word of a timeout), about the timeout after they began to wait. A peer that dies closes its
// connections at once.
bool waited_for_a_peer(const std::exception& error, std::chrono::steady_clock::duration waited,
                       std::chrono::milliseconds timeout) {
  if (const auto* system = dynamic_cast<const std::system_error*>(&error);
      system != nullptr && system->code().default_error_condition() == std::errc::timed_out) {
    return true;
  }
  std::string text = message_of(error);
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text.find("timed out") != std::string::npos ||
         text.find("socket timeout") != std::string::npos ||  // a TCPStore's (lost_a_peer)
         waited >= timeout * 9 / 10;
}

// The local address this machine uses to reach `host`: the one Gloo must listen on so that the
// other ranks can connect (the hostname may resolve to 127.0.1.1 on Debian). No packet is sent.
std::string local_address_towards(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 ||
      found == nullptr) {
    throw DistributedError(detail::concat("cannot resolve MASTER_ADDR '", host,
                                          "': give an address or a host name this machine knows"));
  }
  std::string address;
  const int fd = ::socket(found->ai_family, SOCK_DGRAM, 0);
  if (fd >= 0 && ::connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    sockaddr_storage local{};
    socklen_t length = sizeof(local);
    char text[INET6_ADDRSTRLEN] = {};
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      const void* raw =
          local.ss_family == AF_INET
              ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
              : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr);
      if (::inet_ntop(local.ss_family, raw, text, sizeof(text)) != nullptr) address = text;
    }
  }
  if (fd >= 0) ::close(fd);
  ::freeaddrinfo(found);
  if (address.empty()) {
    throw DistributedError(detail::concat("no route from this machine to MASTER_ADDR '", host,
                                          "'; set GLOO_SOCKET_IFNAME to the interface to use"));
  }
  return address;
}

// What to do about a parameter left without a gradient, in the Reducer's errors.
constexpr const char* kUnusedParameterAdvice =
    " A parameter that requires grad got no gradient (it was not used to compute the loss): "
    "train with DDPOptions().find_unused_parameters(true) (`--ddp-find-unused-parameters`), or "
    "freeze it.";

c10d::ReduceOp to_c10d(ReduceOp op) {
  switch (op) {
    case ReduceOp::kMax:
      return c10d::ReduceOp::MAX;
    case ReduceOp::kMin:
      return c10d::ReduceOp::MIN;
    case ReduceOp::kSum:
    case ReduceOp::kMean:
      break;
  }
  return c10d::ReduceOp::SUM;
}

}  // namespace

struct DDPStrategy::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::string backend;                       // "gloo" or "nccl", once joined
  c10::Device device{c10::DeviceType::CPU};  // the device connect() was given
  // Where the Trainer's own collectives (decisions, metrics, texts) put their tensors: on the
  // device under NCCL, which takes CUDA tensors only, on the CPU under Gloo.
  c10::Device collective_device() const {
    return backend == "nccl" ? device : c10::Device(c10::DeviceType::CPU);
  }
  std::shared_ptr<c10d::Reducer> reducer;
  // The Reducer reports through a Logger, as DistributedDataParallel gives it one; without it,
  // a set of unused parameters that changes between backward passes (manual optimization with
  // find_unused_parameters) dereferences a null logger. It holds the Reducer: reset it first.
  std::shared_ptr<c10d::Logger> logger;
  // The Reducer's hook where it is trainbus's (GradientHook::kFp16AllGather), for its count.
  Fp16AllGatherHook* fp16_all_gather = nullptr;
  std::vector<at::Tensor> buffers;
  torch::nn::Module* module = nullptr;
  size_t trainable = 0;  // parameters that required grad when the Reducer was built
  // DDP's require_forward_param_sync: true after setup and after a step that averaged its
  // gradients, false after a no_sync step. Buffers are broadcast before a step only while true.
  bool sync_buffers = true;
  int backwards_in_step = 0;  // synchronized backward passes since before_training_step
};

namespace {
// The parameters that require grad, each once with its first name: as DDP's
// _build_params_for_reducer, a tensor two layers share (tied weights) is one variable of the
// Reducer (LibTorch's named_parameters() lists it under every name).
std::vector<std::pair<std::string, at::Tensor>> trainable_parameters(
    const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> found;
  std::unordered_set<const c10::TensorImpl*> seen;
  for (const auto& item : module.named_parameters()) {
    if (item.value().requires_grad() && seen.insert(item.value().unsafeGetTensorImpl()).second)
      found.emplace_back(item.key(), item.value());
  }
  return found;
}
// ~Reducer removes its autograd hooks from the parameters, and ~Logger reads the Reducer; both
// may throw (noexcept(false)), which a shared_ptr's plain delete would turn into std::terminate.
// The run is ending either way.
template <class T>
void delete_quietly(T* object) noexcept {
  try {
    delete object;
  } catch (...) {
  }
}
size_t count_trainable(const torch::nn::Module& module) {
  return trainable_parameters(module).size();
}

// DDPOptions::comm_hook as the Reducer takes it. c10d's own C++ hooks (AllReduceCommHook,
// CppCommHookInterface's parseHookResult) are not exported by LibTorch 1.13's libtorch_cpu.
// The Reducer calls runHook for buckets 0, 1, ... in order as each fills, then, at the end of
// backward (finalize_backward), parseHookResult for each bucket's result in the same order:
// both holding its mutex, so launched_ and parsed_ need no lock of their own.
class UserCommHook final : public c10d::CommHookInterface {
 public:
  // `hook` is the strategy's DDPOptions::comm_hook, which outlives the Reducer that owns this:
  // one function for every Reducer the strategy builds (a mutable lambda keeps its state).
  UserCommHook(const CommHook& hook, c10::intrusive_ptr<c10d::ProcessGroup> group)
      : hook_(hook), group_(std::move(group)) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    const size_t index = bucket.getIndex();
    if (index == 0) {  // a new backward (or the first one after a backward that failed)
      launched_.clear();
      parsed_ = 0;
    }
    const at::Tensor& buffer = bucket.getBufferRef();
    launched_.push_back({index, buffer.numel(), buffer.scalar_type(), buffer.device()});
    c10::intrusive_ptr<c10::ivalue::Future> future;
    try {
      future = hook_(*group_, bucket);
    } catch (const DistributedError&) {  // says what happened already
      throw;
    } catch (const MisconfigurationError&) {  // says what to fix already
      throw;
    } catch (const std::exception& error) {
      if (lost_a_peer(error)) throw;  // the transport's: the strategy names the peer
      throw std::runtime_error(detail::concat("DDPOptions::comm_hook failed for gradient bucket ",
                                              index, ": ", message_of(error)));
    }
    if (!future) {
      throw std::runtime_error(detail::concat(
          "DDPOptions::comm_hook returned no future for gradient bucket ", index,
          ": return the future of the bucket's averaging (as allreduce_average does)"));
    }
    return future;
  }

  // As c10d::detail::parseCppCommHookResult (the tensor, or the first of a list), checked
  // against the bucket it answers.
  at::Tensor parseHookResult(const c10::IValue& result) override {
    if (parsed_ >= launched_.size()) {  // not with LibTorch 1.13's Reducer
      throw std::runtime_error(
          detail::concat("DDPOptions::comm_hook: the Reducer read the result of gradient bucket ",
                         parsed_, " of a backward that launched ", launched_.size()));
    }
    const Launched& bucket = launched_[parsed_++];
    const std::string what = detail::concat("DDPOptions::comm_hook's future for gradient bucket ",
                                            bucket.index, " holds ");
    const char* const contract =
        "it must hold the bucket averaged across the ranks, in its buffer's size, type and "
        "device (GradBucket::getBufferRef, as allreduce_average returns it): a tensor, or a "
        "list whose first tensor is it";
    at::Tensor tensor;
    if (result.isTensor()) {
      tensor = result.toTensor();
    } else if (result.isTensorList()) {
      const c10::List<at::Tensor> list = result.toTensorList();
      if (list.empty())
        throw std::runtime_error(detail::concat(what, "an empty list of tensors: ", contract));
      tensor = list.get(0);
    } else {
      throw std::runtime_error(detail::concat(what, "a ", result.tagKind(), ": ", contract));
    }
    if (!tensor.defined())
      throw std::runtime_error(detail::concat(what, "an undefined tensor: ", contract));
    if (tensor.numel() != bucket.numel || tensor.scalar_type() != bucket.dtype ||
        tensor.device() != bucket.device) {
      throw std::runtime_error(detail::concat(
          what, "a tensor of ", tensor.numel(), " elements of type ", tensor.scalar_type(), " on ",
          tensor.device(), " where the bucket's buffer has ", bucket.numel, " elements of type ",
          bucket.dtype, " on ", bucket.device, ": ", contract));
    }
    return tensor;
  }

 private:
  // A bucket handed to the hook in this backward: what its result must be.
  struct Launched {
    size_t index;
    int64_t numel;
    c10::ScalarType dtype;
    c10::Device device;
  };
  const CommHook& hook_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  std::vector<Launched> launched_;
  size_t parsed_ = 0;
};
}  // namespace

c10::intrusive_ptr<c10::ivalue::Future> allreduce_average(c10d::ProcessGroup& group,
                                                          c10d::GradBucket& bucket) {
  std::vector<at::Tensor> tensors{bucket.getBufferRef()};
  tensors[0].div_(group.getSize());  // before the sum, as PyTorch's: float16 does not overflow
  return group.allreduce(tensors)->getFuture();
}

DDPStrategy::DDPStrategy(DistributedEnvironment environment, DDPOptions options)
    : environment_(std::move(environment)),
      options_(std::move(options)),
      impl_(std::make_unique<Impl>()) {
  environment_.validate();
  // A checkpoint save's agreement waits for rank 0's writer in rounds of 100 ms, each a
  // collective bound by this timeout: far below 1 s, one busy round would fail the job.
  TRAINBUS_CHECK(options_.timeout() >= std::chrono::seconds(1),
                 "DDPOptions: timeout (--ddp-timeout) must be at least 1 s, got ",
                 options_.timeout().count(), " ms");
  TRAINBUS_CHECK(options_.bucket_cap_mb() > 0.0, "DDPOptions: bucket_cap_mb must be > 0, got ",
                 options_.bucket_cap_mb());
  TRAINBUS_CHECK(options_.gloo_event_loop_nice() >= 0 && options_.gloo_event_loop_nice() <= 19,
                 "DDPOptions: gloo_event_loop_nice (--ddp-gloo-loop-nice) must be 0 (as PyTorch "
                 "leaves it) to 19 (the lowest priority), got ",
                 options_.gloo_event_loop_nice());
  TRAINBUS_CHECK(!options_.comm_hook() ||
                     options_.gradient_compression() == DDPOptions::GradientCompression::kNone,
                 "DDPOptions: comm_hook and a gradient_compression are both communication "
                 "hooks, and DDP takes one: compress the bucket in your hook, or leave one of "
                 "them out");
}

DDPStrategy::~DDPStrategy() { teardown_module(); }

namespace {

// What a guarded call waits for, for the hint of its PeerTimedOutError.
enum class Awaits {
  kCollective,    // one collective: a peer may be in another one (a call made on some ranks only)
  kJoining,       // the rendezvous: a peer did not start, or started late
  kProcessGroup,  // the process group, after a rendezvous every rank came to
  kBackward,      // this rank's backward with the gradients' all-reduces: its compute counts too
};

// Why the other ranks may not have come within the timeout, by what the call waits for.
std::string_view timed_out_hint(Awaits awaits) {
  switch (awaits) {
    case Awaits::kJoining:
      return "it did not start, started later, failed before it joined, or was given another "
             "address (--master-addr, --master-port)";
    case Awaits::kProcessGroup:
      return "every rank answered the DDP settings just before, so it failed or hangs between "
             "that and the process group (its own error says why), or the ranks cannot reach "
             "each other at the addresses they gave the process group (under Gloo, name an "
             "interface they share with GLOO_SOCKET_IFNAME or DDPOptions::socket_ifname)";
    case Awaits::kBackward:
      return "it hangs, is slower, or is in another collective; the time includes this rank's "
             "own backward compute, which overlaps the gradients' all-reduces";
    case Awaits::kCollective:
      break;
  }
  return "it hangs, is slower, or is in another collective (a call made on some ranks only)";
}

}  // namespace

// Runs one collective, turning c10d's errors into a DistributedError that says what to look at:
// a PeerLostError when the transport lost a peer (lost_a_peer), a PeerTimedOutError when it did
// so by a timeout (waited_for_a_peer; `awaits` picks its hint), else this rank's own failure.
template <class Collective>
static auto guarded(const DistributedEnvironment& environment, std::chrono::milliseconds timeout,
                    std::string_view operation, Collective&& collective,
                    Awaits awaits = Awaits::kCollective) {
  const auto started = std::chrono::steady_clock::now();
  try {
    return collective();
  } catch (const DistributedError&) {
    throw;
  } catch (const MisconfigurationError&) {  // said what to fix already; no transport's error
    throw;
  } catch (const std::exception& error) {
    if (!lost_a_peer(error)) {
      throw DistributedError(environment.rank_message(
          detail::concat(operation, " failed on this rank: ", message_of(error))));
    }
    const auto waited = std::chrono::steady_clock::now() - started;
    // Of two ranks, the peer is the other one. With more, Gloo's text names an address, not a
    // rank: the launcher's report (or each rank's own error) says which one failed.
    const std::string another =
        environment.world_size == 2
            ? detail::concat("Another rank (rank ", 1 - environment.rank, ", the only other one)")
            : std::string("Another rank");
    if (waited_for_a_peer(error, waited, timeout)) {
      throw PeerTimedOutError(environment.rank_message(detail::concat(
          operation, " failed after ", std::chrono::duration<double>(waited).count(), " s: ",
          message_of(error), ". ", another, " did not reach this point within the timeout (",
          timeout.count() / 1000.0, " s): ", timed_out_hint(awaits),
          "; the launcher's report names the rank that failed first")));
    }
    throw PeerLostError(environment.rank_message(detail::concat(
        operation, " failed: ", message_of(error), ". ", another,
        " stopped (it failed or was killed) or did not reach this point within the timeout (",
        timeout.count() / 1000.0, " s); the launcher's report names the rank that failed first")));
  }
}

bool DDPStrategy::nccl_available() noexcept {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

std::string_view DDPStrategy::backend_name() const noexcept { return impl_->backend; }

c10::Device DDPStrategy::root_device(const c10::Device& requested) const {
  if (!requested.is_cuda() || requested.has_index()) return requested;
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(environment_.local_rank));
}

namespace {
// The backend DDPOptions asks for, on `device`: "gloo" or "nccl", or a MisconfigurationError
// saying what to change.
std::string choose_backend(DDPOptions::Backend backend, const c10::Device& device,
                           const DistributedEnvironment& environment) {
  switch (backend) {
    case DDPOptions::Backend::kGloo:
      return "gloo";
    case DDPOptions::Backend::kAuto:
      return device.is_cuda() && DDPStrategy::nccl_available() ? "nccl" : "gloo";
    case DDPOptions::Backend::kNccl:
      break;
  }
  TRAINBUS_CHECK(device.is_cuda(),
                 environment.rank_message(detail::concat(
                     "DDPOptions::backend is nccl (--ddp-backend nccl), which moves CUDA tensors "
                     "only, but the Trainer's device is ",
                     device.str(), ": train on cuda (--device cuda), or use gloo or auto")));
  TRAINBUS_CHECK(DDPStrategy::nccl_available(),
                 environment.rank_message(
                     "DDPOptions::backend is nccl (--ddp-backend nccl), but this LibTorch was "
                     "built without NCCL (Debian's libtorch-dev is CPU-only): use gloo or auto, or "
                     "build against a LibTorch with CUDA and NCCL"));
  return "nccl";
}

// `loop_niced`: whether Gloo's event loop got DDPOptions::gloo_event_loop_nice.
c10::intrusive_ptr<c10d::ProcessGroup> join_gloo_group(const c10::intrusive_ptr<c10d::Store>& store,
                                                       const DistributedEnvironment& environment,
                                                       const DDPOptions& options,
                                                       bool& loop_niced) {
  auto group_options = c10d::ProcessGroupGloo::Options::create(options.timeout());
  std::string interface = options.socket_ifname();
  if (interface.empty() && std::getenv("GLOO_SOCKET_IFNAME") != nullptr)
    interface = std::getenv("GLOO_SOCKET_IFNAME");
  guarded(environment, options.timeout(), "creating the Gloo device", [&] {
    const auto create_device = [&] {
      group_options->devices.push_back(
          interface.empty() ? c10d::ProcessGroupGloo::createDeviceForHostname(local_address_towards(
                                  environment.master_addr, environment.master_port))
                            : c10d::ProcessGroupGloo::createDeviceForInterface(interface));
    };
    loop_niced = create_gloo_device_with_niced_loop(create_device, options.gloo_event_loop_nice());
    return 0;
  });
  return guarded(
      environment, options.timeout(), "joining the process group",
      [&] {
        return c10::intrusive_ptr<c10d::ProcessGroup>(c10::make_intrusive<c10d::ProcessGroupGloo>(
            store, environment.rank, environment.world_size, group_options));
      },
      Awaits::kProcessGroup);
}

// NCCL finds each collective's device from its tensors.
// NOTE: compiled only where LibTorch has NCCL, which Debian's has not; checked here against
// ProcessGroupNCCL.hpp's declarations only (README, "NCCL").
c10::intrusive_ptr<c10d::ProcessGroup> join_nccl_group(const c10::intrusive_ptr<c10d::Store>& store,
                                                       const DistributedEnvironment& environment,
                                                       const DDPOptions& options) {
#ifdef USE_C10D_NCCL
  // The timeout ends a hung collective only with NCCL_ASYNC_ERROR_HANDLING=1 (its watchdog then
  // aborts this process) or NCCL_BLOCKING_WAIT=1 (wait() throws). The launcher sets the first, as
  // torchrun does; here too for ranks another launcher started (ProcessGroupNCCL reads it when
  // built), unless the user chose.
  if (std::getenv("NCCL_BLOCKING_WAIT") == nullptr)
    ::setenv("NCCL_ASYNC_ERROR_HANDLING", "1", /*overwrite=*/0);
  auto group_options = c10d::ProcessGroupNCCL::Options::create();
  group_options->timeout = options.timeout();
  return guarded(
      environment, options.timeout(), "joining the NCCL process group",
      [&] {
        return c10::intrusive_ptr<c10d::ProcessGroup>(c10::make_intrusive<c10d::ProcessGroupNCCL>(
            store, environment.rank, environment.world_size, group_options));
      },
      Awaits::kProcessGroup);
#else
  (void)store;
  (void)environment;
  (void)options;
  throw DistributedError("unreachable: NCCL chosen although this LibTorch has none");
#endif
}

}  // namespace

void DDPStrategy::connect(const c10::Device& requested) {
  const c10::Device device = root_device(requested);  // also when called other than by a Trainer
  if (impl_->group) {
    TRAINBUS_CHECK(device.type() == impl_->device.type(),
                   environment_.rank_message(detail::concat(
                       "this DDPStrategy joined the job for device ", impl_->device.str(),
                       " (backend ", impl_->backend, "), and a later run asks for ", device.str(),
                       ": give every run of one strategy the same device type, or a Trainer "
                       "of its own (with its own MASTER_PORT)")));
    return;
  }
  const std::string backend = choose_backend(options_.backend(), device, environment_);
  c10d::TCPStoreOptions store_options;
  store_options.port = environment_.master_port;
  store_options.isServer = environment_.rank == 0;
  store_options.numWorkers = static_cast<size_t>(environment_.world_size);
  // The settings handshake is the rendezvous: rank 0 waits there for each rank's answer, and says
  // which did not come (TCPStore's own wait would wait for them, and end saying nothing).
  store_options.waitWorkers = false;
  store_options.timeout = options_.timeout();
  // A join that fails leaves nothing behind: a store kept would hold rank 0's port, and the next
  // connect (the next run, or a retry) would fail to listen there instead of joining again.
  struct ForgetStoreUnlessJoined {
    Impl& impl;
    ~ForgetStoreUnlessJoined() {
      if (!impl.group) impl.store.reset();
    }
  } forget_store_unless_joined{*impl_};
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(environment_.master_addr, store_options);
  } catch (const std::exception& error) {
    std::string cause = message_of(error);
    while (!cause.empty() && (cause.back() == '.' || cause.back() == '\n')) cause.pop_back();
    throw DistributedError(environment_.rank_message(detail::concat(
        "the rendezvous at ", environment_.master_addr, ":", environment_.master_port,
        " failed (waited up to ", options_.timeout().count() / 1000.0, " s): ", cause,
        ". Start every rank with the same MASTER_ADDR and MASTER_PORT (rank 0 listens there; the "
        "port must be free on its machine), e.g. with `trainbus fit --nproc-per-node N`",
        // A rank that comes after rank 0 stopped waiting for it finds no store.
        environment_.rank == 0 ? ""
                               : "; or rank 0 stopped already: it stops when the ranks' DDP "
                                 "settings differ or a rank has not answered within its "
                                 "timeout, and its error says which")));
  }
  // Before the process group, which ranks that differ would wait for until the timeout.
  guarded(
      environment_, options_.timeout(), "comparing the DDP settings with rank 0's",
      [&] {
        agree_on_ddp_settings(*impl_->store,
                              shared_ddp_settings(options_, backend, environment_.world_size),
                              environment_);
        return 0;
      },
      Awaits::kJoining);
  impl_->group = backend == "nccl" ? join_nccl_group(impl_->store, environment_, options_)
                                   : join_gloo_group(impl_->store, environment_, options_,
                                                     statistics_.gloo_event_loop_niced);
  impl_->backend = backend;
  impl_->device = device;
}

void DDPStrategy::setup_module(torch::nn::Module& module) {
  connect(impl_->device);
  teardown_module();
  std::vector<at::Tensor> parameters;
  std::unordered_map<size_t, std::string> names;
  for (auto& [name, parameter] : trainable_parameters(module)) {
    names.emplace(parameters.size(), std::move(name));
    parameters.push_back(std::move(parameter));
  }
  TRAINBUS_CHECK(!parameters.empty(),
                 "DDP: the module has no parameter that requires grad, so there is nothing to "
                 "average across ranks");
  if (options_.gradient_compression() != DDPOptions::GradientCompression::kNone) {
    for (size_t i = 0; i < parameters.size(); ++i) {
      TRAINBUS_CHECK(!parameters[i].is_complex(), "DDP: parameter `", names.at(i), "` is ",
                     parameters[i].scalar_type(),
                     ", whose gradients float16 cannot carry (it has no imaginary part): turn "
                     "off --ddp-fp16-gradients (DDPOptions::gradient_compression)");
    }
  }
  guarded(environment_, options_.timeout(), "checking that every rank has the same parameters",
          [&] {
            c10d::verify_params_across_processes(impl_->group, parameters, c10::nullopt);
            return 0;
          });

  // Every rank starts from rank 0's weights and buffers (DDP's _sync_module_states).
  std::vector<at::Tensor> states = module.parameters();
  impl_->buffers = module.buffers();
  states.insert(states.end(), impl_->buffers.begin(), impl_->buffers.end());
  guarded(environment_, options_.timeout(), "broadcasting rank 0's parameters and buffers", [&] {
    torch::NoGradGuard no_grad;
    c10d::broadcast_coalesced(impl_->group, states, kBroadcastBucketBytes, 0);
    return 0;
  });

  // As DistributedDataParallel.__init__: buckets by size, in reverse order of the parameters,
  // which is about the order backward produces their gradients.
  const auto bucket_bytes = static_cast<int64_t>(options_.bucket_cap_mb() * kMiB);
  const std::vector<bool> sparse(parameters.size(), false);
  auto [bucket_indices, bucket_limits] = c10d::compute_bucket_assignment_by_size(
      parameters, {kFirstBucketBytes, static_cast<size_t>(bucket_bytes)}, sparse, {});
  std::reverse(bucket_indices.begin(), bucket_indices.end());
  std::reverse(bucket_limits.begin(), bucket_limits.end());
  impl_->module = &module;
  impl_->trainable = parameters.size();
  impl_->sync_buffers = true;
  statistics_.gradient_elements = 0;
  for (const auto& parameter : parameters) statistics_.gradient_elements += parameter.numel();
  impl_->reducer = std::shared_ptr<c10d::Reducer>(
      new c10d::Reducer(parameters, std::move(bucket_indices), std::move(bucket_limits),
                        impl_->group, sparse, bucket_bytes, options_.find_unused_parameters(),
                        options_.gradient_as_bucket_view(), std::move(names),
                        static_cast<int64_t>(kFirstBucketBytes)),
      delete_quietly<c10d::Reducer>);
  impl_->logger =
      std::shared_ptr<c10d::Logger>(new c10d::Logger(impl_->reducer), delete_quietly<c10d::Logger>);
  impl_->reducer->set_logger(impl_->logger);
  statistics_.comm_hook_name.clear();
  statistics_.fp16_all_gather_buckets = 0;
  impl_->fp16_all_gather = nullptr;
  // The hook's name goes into the DDP logging data (as DistributedDataParallel's
  // _register_comm_hook does), from which the statistics read it back, only once the Reducer
  // took the hook: a register call that throws leaves no name, and no pointer to a hook it
  // destroyed.
  const auto registered = [&](std::string_view name) {
    impl_->logger->set_comm_hook(std::string(name));
    const at::DDPLoggingData data = impl_->logger->get_ddp_logging_data();
    const auto comm_hook = data.strs_map.find("comm_hook");
    statistics_.comm_hook_name =
        comm_hook == data.strs_map.end() ? std::string() : comm_hook->second;
  };
  if (options_.comm_hook()) {  // never with a gradient_compression (refused when constructed)
    impl_->reducer->register_comm_hook(
        std::make_unique<UserCommHook>(options_.comm_hook(), impl_->group));
    registered(kUserCommHookName);
    return;
  }
  switch (
      gradient_hook_for(options_.gradient_compression(), impl_->backend, impl_->group->getSize())) {
    case GradientHook::kFp16AllGather: {
      auto all_gather = std::make_unique<Fp16AllGatherHook>(impl_->group);
      Fp16AllGatherHook* const hook = all_gather.get();
      impl_->reducer->register_comm_hook(std::move(all_gather));
      impl_->fp16_all_gather = hook;  // the Reducer owns it now
      registered(gradient_hook_name(GradientHook::kFp16AllGather));
      break;
    }
    case GradientHook::kFp16AllReduce:
      impl_->reducer->register_builtin_comm_hook(c10d::BuiltinCommHookType::FP16_COMPRESS);
      registered(gradient_hook_name(GradientHook::kFp16AllReduce));
      break;
    case GradientHook::kFloat32AllReduce:  // no hook: the Reducer's own all-reduce
      registered(gradient_hook_name(GradientHook::kFloat32AllReduce));
      break;
  }
}

void DDPStrategy::teardown_module() noexcept {
  if (impl_->logger) {
    try {
      impl_->logger->set_runtime_stats_and_log();  // the last step's times, if it was sampled
      statistics_.buckets = static_cast<int64_t>(impl_->logger->get_bucket_sizes().size());
      const at::DDPLoggingData data = impl_->logger->get_ddp_logging_data();
      const auto average = [&](const char* name) -> int64_t {
        const auto found = data.ints_map.find(name);
        return found == data.ints_map.end() ? 0 : found->second;
      };
      statistics_.backward_compute_ns = average("avg_backward_compute_time");
      statistics_.backward_comm_ns = average("avg_backward_comm_time");
      statistics_.backward_compute_comm_overlap_ns =
          average("avg_backward_compute_comm_overlap_time");
    } catch (...) {  // statistics only: a teardown does not fail for them
    }
  }
  if (impl_->fp16_all_gather != nullptr)
    statistics_.fp16_all_gather_buckets = impl_->fp16_all_gather->buckets_averaged();
  impl_->fp16_all_gather = nullptr;  // the Reducer owns it
  impl_->logger.reset();
  impl_->reducer.reset();
  impl_->buffers.clear();
  impl_->module = nullptr;
}

void DDPStrategy::before_training_step(bool synchronize) {
  if (!impl_->reducer) return;
  // A parameter frozen or unfrozen since the Reducer was built (BaseFinetuning unfreezes its
  // backbone at an epoch start, on every rank alike): build it again, or its gradients would
  // stay local.
  if (synchronize && count_trainable(*impl_->module) != impl_->trainable)
    setup_module(*impl_->module);
  // As DistributedDataParallel.forward (will_sync_module_buffers): a step that follows a no_sync
  // step keeps the buffers its rank has; the step after a synchronizing one takes rank 0's.
  if (impl_->sync_buffers && broadcast_buffers()) ++statistics_.buffer_broadcasts;
  impl_->sync_buffers = synchronize;
  if (!synchronize) return;
  // As DistributedDataParallel.forward: the Reducer checks that the previous step reduced
  // every gradient (a parameter without one is an error, not silently local), and reorders its
  // buckets once, after the first step, by the order backward produced the gradients.
  finish_previous_reduction();
  impl_->backwards_in_step = 0;
  // As DistributedDataParallel.forward: the previous step's times into the averages (at the
  // steps the Reducer samples only; DDPStatistics).
  impl_->logger->set_runtime_stats_and_log();
  impl_->reducer->prepare_for_forward();
}

void DDPStrategy::finish_previous_reduction() {
  try {
    impl_->reducer->rebuild_buckets();
  } catch (const std::exception& error) {
    // Rebuilding the buckets (after the first step, and after a rebuild of the Reducer) is a
    // collective: a peer that died shows here as any collective's failure does.
    if (message_of(error).find("Expected to have finished reduction") == std::string::npos) {
      guarded(environment_, options_.timeout(), "rebuilding the gradient buckets",
              [&]() -> int { throw; });
    }
    // c10's text goes on with advice for Python's DDP; its first sentence says what happened.
    std::string what = message_of(error);
    if (const auto end = what.find(". "); end != std::string::npos) what.resize(end + 1);
    throw DistributedError(environment_.rank_message(detail::concat(
        "DDP could not average the previous backward's gradients: ", what, kUnusedParameterAdvice,
        " If another rank failed, its error or the launcher's report says why")));
  }
}

void DDPStrategy::before_evaluation() {
  // Without a Reducer (validate or test outside fit) no module was set up, and none is known.
  if (impl_->reducer) broadcast_buffers();
}

bool DDPStrategy::broadcast_buffers() {
  if (!options_.broadcast_buffers() || impl_->buffers.empty()) return false;
  guarded(environment_, options_.timeout(), "broadcasting rank 0's buffers", [&] {
    torch::NoGradGuard no_grad;
    c10d::broadcast_coalesced(impl_->group, impl_->buffers, kBroadcastBucketBytes, 0);
    return 0;
  });
  return true;
}

void DDPStrategy::backward(const at::Tensor& loss, bool synchronize) {
  if (!impl_->reducer || !synchronize) {  // no_sync: gradients accumulate locally, no collective
    loss.backward();
    return;
  }
  // A second backward in one step (manual optimization: one per optimizer, as a GAN's) averages
  // again, once the first one's averaging is complete, as Lightning's prepare_for_backward.
  if (impl_->backwards_in_step++ > 0) finish_previous_reduction();
  try {
    impl_->reducer->prepare_for_backward(options_.find_unused_parameters()
                                             ? std::vector<at::Tensor>{loss}
                                             : std::vector<at::Tensor>{});
  } catch (const c10::Error& error) {
    throw DistributedError(environment_.rank_message(
        detail::concat("DDP could not start averaging gradients: ", error.what_without_backtrace(),
                       kUnusedParameterAdvice)));
  }
  // The Reducer's all-reduces run inside backward: a peer that died surfaces here (Gloo's
  // exception: a PeerLostError), as does an error of the user's autograd code (this rank's own).
  guarded(
      environment_, options_.timeout(), "backward (averaging gradients across ranks)",
      [&] {
        loss.backward();
        return 0;
      },
      Awaits::kBackward);
  ++statistics_.gradient_syncs;
}

bool DDPStrategy::reduce_boolean_decision(bool decision, bool all) {
  std::vector<double> votes{decision ? 1.0 : 0.0};
  all_reduce(votes, ReduceOp::kSum);
  return all ? votes[0] == environment_.world_size : votes[0] > 0.0;
}

void DDPStrategy::all_reduce(std::vector<double>& values, ReduceOp op) {
  connect(impl_->device);
  at::Tensor tensor = at::empty({static_cast<int64_t>(values.size())}, at::kDouble);
  std::copy(values.begin(), values.end(), tensor.data_ptr<double>());
  tensor = tensor.to(impl_->collective_device());
  guarded(environment_, options_.timeout(), "all-reduce", [&] {
    std::vector<at::Tensor> tensors{tensor};
    c10d::AllreduceOptions reduce_options;
    reduce_options.reduceOp = to_c10d(op);
    impl_->group->allreduce(tensors, reduce_options)->wait();
    return 0;
  });
  tensor = tensor.cpu();
  const double* reduced = tensor.data_ptr<double>();
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = op == ReduceOp::kMean ? reduced[i] / environment_.world_size : reduced[i];
  }
}

int64_t DDPStrategy::broadcast(int64_t value, int root) {
  connect(impl_->device);
  at::Tensor tensor =
      at::full({1}, value, at::TensorOptions(at::kLong).device(impl_->collective_device()));
  guarded(environment_, options_.timeout(), "broadcast", [&] {
    std::vector<at::Tensor> tensors{tensor};
    c10d::BroadcastOptions broadcast_options;
    broadcast_options.rootRank = root;
    impl_->group->broadcast(tensors, broadcast_options)->wait();
    return 0;
  });
  return tensor.item<int64_t>();
}

std::string DDPStrategy::broadcast_text(std::string text, int root) {
  const int64_t size = broadcast(static_cast<int64_t>(text.size()), root);
  if (size == 0) return {};
  at::Tensor bytes = at::empty({size}, at::kByte);
  if (environment_.rank == root) std::memcpy(bytes.data_ptr<uint8_t>(), text.data(), text.size());
  bytes = bytes.to(impl_->collective_device());
  guarded(environment_, options_.timeout(), "broadcast", [&] {
    std::vector<at::Tensor> tensors{bytes};
    c10d::BroadcastOptions broadcast_options;
    broadcast_options.rootRank = root;
    impl_->group->broadcast(tensors, broadcast_options)->wait();
    return 0;
  });
  bytes = bytes.cpu();
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()),
                     static_cast<std::size_t>(size));
}

void DDPStrategy::barrier(std::string_view name) {
  connect(impl_->device);
  guarded(environment_, options_.timeout(), detail::concat("the barrier '", name, "'"), [&] {
    c10d::BarrierOptions barrier_options;
    // NCCL's barrier is an all-reduce on a device it would otherwise guess from the rank.
    if (impl_->collective_device().is_cuda())
      barrier_options.device_ids = {static_cast<int64_t>(impl_->collective_device().index())};
    impl_->group->barrier(barrier_options)->wait();
    return 0;
  });
}

}  // namespace trainbus::distributed
