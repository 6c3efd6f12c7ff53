// DDPStrategy in real fits: two ranks (this test binary run twice as children, joined over
// loopback by a TCPStore) against one process with twice their batch.

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>
#include <catch2/catch.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include "base/errors.h"
#include "callbacks/early_stopping.h"
#include "callbacks/model_checkpoint.h"
#include "callbacks/timer.h"
#include "checkpoint/format.h"
#include "checkpoint/write_progress.h"
#include "core/trainer.h"
#include "distributed/ddp_settings.h"
#include "distributed/ddp_strategy.h"
#include "distributed/launcher.h"
#include "tests/support/child_process.h"
#include "tests/support/scoped_environment.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;

namespace {

constexpr int kWorld = 2;
constexpr int64_t kSamples = 64;
// The hidden width of a model whose parameters (32 x 8192 + 2 x 8192 + 1 floats, 1.06 MiB) do not
// fit DDP's first gradient bucket of 1 MiB.
constexpr int64_t kWideWidth = 8192;

// The identity, whose backward throws: an error of the user's own code inside backward, where
// DDP's Reducer averages the gradients.
struct ThrowingBackward : public torch::autograd::Function<ThrowingBackward> {
  static at::Tensor forward(torch::autograd::AutogradContext*, const at::Tensor& input) {
    return input.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*,
                                                 torch::autograd::variable_list) {
    throw std::runtime_error("ThrowingBackward's backward failed on purpose");
  }
};

// 32 -> 16 (or `width`) -> 1, regressing a fixed linear function of the input, optionally with a
// BatchNorm (running statistics: buffers) on the hidden layer. It records each training loss; on
// one rank it can ask for a stop or die at a given batch.
class RegressionModule : public Module {
 public:
  explicit RegressionModule(int64_t width = 16, bool batch_norm = false) : lr(0.8 / width) {
    torch::manual_seed(5);  // the same start in every process (DDP broadcasts rank 0's anyway)
    hidden = register_module("hidden", torch::nn::Linear(32, width));
    if (batch_norm) norm = register_module("norm", torch::nn::BatchNorm1d(width));
    out = register_module("out", torch::nn::Linear(width, 1));
  }
  virtual ~RegressionModule() = default;
  virtual at::Tensor loss(const Batch& batch) {
    at::Tensor features = hidden->forward(batch.data);
    if (norm) features = norm->forward(features);
    const at::Tensor prediction = out->forward(torch::relu(features));
    return torch::nn::functional::mse_loss(prediction, batch.target);
  }
  StepOutput training_step(const Batch& batch, int64_t batch_idx) override {
    if (batch_idx == die_at_batch) std::_Exit(3);
    if (batch_idx == stop_at_batch) trainer().request_stop("rank asked");
    at::Tensor value = loss(batch);
    losses.push_back(value.item<double>());
    // Its backward runs first, before any parameter has a gradient: no all-reduce has started.
    if (batch_idx == throw_in_backward_at_batch) value = ThrowingBackward::apply(value);
    log("train_loss", value, LogOptions().sync_dist(sync_train_loss));
    if (sync_train_loss) {  // collectives of their own: not in the mode that dies without one
      // reduce_fx under sync_dist takes the matching all-reduce (Lightning's _Sync op is the
      // reduce_fx's name): the rank's max/min/sum over the ranks.
      const double rank = trainer().global_rank();
      const auto epoch = LogOptions().on_step(false).on_epoch(true).sync_dist(true);
      log("rank_max", rank, LogOptions(epoch).reduce_fx(ReduceFx::kMax));
      log("rank_min", rank, LogOptions(epoch).reduce_fx(ReduceFx::kMin));
      log("rank_sum", 1.0 + rank, LogOptions(epoch).reduce_fx(ReduceFx::kSum));
      log("rank_sum_local", 1.0 + rank,
          LogOptions(epoch).sync_dist(false).reduce_fx(ReduceFx::kSum));
      log("step_max", rank, LogOptions().sync_dist(true).reduce_fx(ReduceFx::kMax));
    }
    // A value that differs per rank and is not reduced: what a checkpoint may monitor.
    log("rank_loss", value.item<double>() * (1 + trainer().global_rank()));
    if (log_rank_trend) {  // not reduced: falls every epoch on rank 0, stays 1 on rank 1
      const double trend = trainer().global_rank() == 0 ? -trainer().current_epoch() : 1.0;
      log("rank_trend", trend, LogOptions().on_step(false).on_epoch(true));
    }
    return value;
  }
  StepOutput test_step(const Batch& batch, int64_t batch_idx) override {
    log("test_loss", loss(batch));
    return {};
  }
  void on_validation_epoch_end() override {
    // Logged in an epoch-level hook, different on each rank: reduced to their mean (0.5).
    log("val_rank", static_cast<double>(trainer().global_rank()));
    // Reduced once, when logged (evaluation epoch values always are): 1 + 2, not 2 * (1 + 2).
    log("val_rank_sum", 1.0 + trainer().global_rank(), LogOptions().reduce_fx(ReduceFx::kSum));
  }
  StepOutput validation_step(const Batch& batch, int64_t batch_idx) override {
    log("val_loss", loss(batch));
    return {};
  }
  int on_train_batch_start(const Batch&, int64_t batch_idx) override {
    return batch_idx == skip_epoch_at_batch ? -1 : 0;
  }
  OptimizerConfig configure_optimizers() override {
    return std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(lr));
  }
  at::Tensor flat_weights() {
    std::vector<at::Tensor> flat;
    for (const auto& parameter : parameters()) flat.push_back(parameter.detach().flatten());
    return torch::cat(flat);
  }

  at::Tensor flat_buffers() {
    std::vector<at::Tensor> flat;
    for (const auto& buffer : buffers()) flat.push_back(buffer.detach().flatten().to(at::kDouble));
    return flat.empty() ? at::empty({0}, at::kDouble) : torch::cat(flat);
  }

  torch::nn::Linear hidden{nullptr}, out{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
  // 0.05 for the default width; smaller for a wider one, whose output moves with the sum over
  // its features (stable below about 1.5e-3 at 8192).
  double lr;
  std::vector<double> losses;
  int64_t stop_at_batch = -1;
  int64_t die_at_batch = -1;
  int64_t skip_epoch_at_batch = -1;  // on_train_batch_start returns -1 there, in every epoch
  int64_t throw_in_backward_at_batch = -1;
  bool sync_train_loss = true;
  bool log_rank_trend = false;
};

class RegressionData : public DataModule {
 public:
  explicit RegressionData(int64_t batch_size) : batch_size_(batch_size) {
    inputs_ = torch::randn({kSamples, 32}, at::detail::createCPUGenerator(1234));
    targets_ = inputs_.sum(1, /*keepdim=*/true) * 0.1;
  }
  std::shared_ptr<DataLoader> train_dataloader() override { return loader(true); }
  std::shared_ptr<DataLoader> val_dataloader() override { return loader(false); }
  std::shared_ptr<DataLoader> test_dataloader() override { return loader(false); }

 private:
  std::shared_ptr<DataLoader> loader(bool shuffle) const {
    return std::make_shared<data::TensorDataLoader>(
        inputs_, targets_, data::DataLoaderOptions().batch_size(batch_size_).shuffle(shuffle));
  }
  int64_t batch_size_;
  at::Tensor inputs_, targets_;
};

// A loader whose set_distributed splits the share an earlier call left, not the whole data (one
// batch fewer per call after the first): what the Trainer's second split must refuse.
class ResplittingLoader : public data::TensorDataLoader {
 public:
  using data::TensorDataLoader::TensorDataLoader;
  int64_t num_batches() const override {
    return data::TensorDataLoader::num_batches() - std::max<int64_t>(0, splits_ - 1);
  }
  void set_distributed(int64_t num_replicas, int64_t rank,
                       const std::function<int64_t(int64_t)>& from_rank_zero) override {
    data::TensorDataLoader::set_distributed(num_replicas, rank, from_rank_zero);
    ++splits_;
  }

 private:
  int64_t splits_ = 0;
};

class ResplittingData : public DataModule {
 public:
  std::shared_ptr<DataLoader> train_dataloader() override {
    const at::Tensor inputs = torch::randn({kSamples, 32}, at::detail::createCPUGenerator(1234));
    return std::make_shared<ResplittingLoader>(inputs, inputs.sum(1, /*keepdim=*/true),
                                               data::DataLoaderOptions().batch_size(4));
  }
};

// Asks for the estimate in setup, on every rank: the loaders are split before the fit splits them
// again with the agreed seeds.
class EstimateInSetup : public Callback {
 public:
  void setup(Trainer& trainer, Module&, Stage) override {
    (void)trainer.estimated_stepping_batches();
  }
};

TrainerOptions quiet_options(int64_t accumulate) {
  return testing::trainer_options()
      .max_epochs(2)
      .seed(11)
      .accumulate_grad_batches(accumulate)
      .num_sanity_val_steps(0)
      .enable_model_summary(false)
      .log_every_n_steps(1);
}

// The ranks' MASTER_PORT, held by this process until they are done. A port found free and
// released before rank 0 binds it (check, then use) may be taken in between by another test's
// ranks or by any connect(), whose rank 1 then joins the wrong job. So the port stays bound here:
// bound from port 0 without SO_REUSEADDR (the kernel picks a port no socket uses), then marked
// SO_REUSEADDR, it lets rank 0's TCPStore (which sets SO_REUSEADDR, as c10d's listening sockets
// do) bind and listen on it, while no bind(0) of a socket without it, nor a connect()'s choice of
// a local port, can take it. Never listening, it accepts nobody.
class ReservedPort {
 public:
  ReservedPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    socklen_t length = sizeof(address);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    const int reuse = 1;
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof(reuse)) == 0);
    port_ = ntohs(address.sin_port);
  }
  ~ReservedPort() { ::close(fd_); }
  ReservedPort(const ReservedPort&) = delete;
  ReservedPort& operator=(const ReservedPort&) = delete;
  uint16_t port() const noexcept { return port_; }

 private:
  int fd_;
  uint16_t port_ = 0;
};

// The largest difference between two ranks' (or a rank's and one process's) weights, of equal
// count.
double largest_difference(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double largest = 0.0;
  for (size_t i = 0; i < a.size(); ++i) largest = std::max(largest, std::abs(a[i] - b[i]));
  return largest;
}

// Whether something listens at `port` on loopback: a connect there is answered at once.
bool listening_at(uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const bool accepted = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
  ::close(fd);
  return accepted;
}

// Rank `rank` of a job of two on this machine, whose rendezvous is at `port` on loopback.
distributed::DistributedEnvironment rank_of_two(int rank, uint16_t port) {
  distributed::DistributedEnvironment environment;
  environment.rank = rank;
  environment.local_rank = rank;
  environment.world_size = 2;
  environment.local_world_size = 2;
  environment.master_port = port;
  return environment;
}

// Starts the two ranks of `mode` as children and waits for both; their wait statuses.
std::vector<int> run_ranks(const std::string& mode, const std::string& dir) {
  const ReservedPort reserved;
  const std::string port = std::to_string(reserved.port());
  std::vector<pid_t> children;
  for (int rank = 0; rank < kWorld; ++rank) {
    ::setenv("RANK", std::to_string(rank).c_str(), 1);
    ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
    ::setenv("WORLD_SIZE", std::to_string(kWorld).c_str(), 1);
    ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", port.c_str(), 1);
    ::setenv("TRAINBUS_TEST_DDP_MODE", mode.c_str(), 1);
    children.push_back(testing::spawn_test_child("[.ddp-child]", dir));
  }
  for (const char* name : {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                           "TRAINBUS_TEST_DDP_MODE"}) {
    ::unsetenv(name);
  }
  std::vector<int> statuses;
  for (pid_t child : children) statuses.push_back(testing::wait_for_child(child));
  return statuses;
}

// Runs the two ranks of `mode` (run_ranks) and requires that each exited with 0: a rank's run
// ends with its result file, whatever its fit did (a failed fit writes its error there).
void run_ranks_cleanly(const std::string& mode, const testing::TempDir& dir) {
  for (int status : run_ranks(mode, dir.path().string()))
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

struct RankResult {
  std::vector<double> losses;
  std::vector<double> weights;
  double val_loss = 0.0;
  double val_rank = -1.0;
  double train_loss_epoch = 0.0;
  int64_t global_step = 0;
  int64_t rank_zero_observer_batches = 0;  // batches seen by an observer of the default kind
  int64_t every_rank_observer_batches = 0;
  std::string stop_reasons;
  std::string error;
  Metrics metrics;              // callback_metrics at the end
  std::string resumed_from;     // the checkpoint fit resumed from, if any
  std::vector<double> buffers;  // the module's buffers at the end (BatchNorm statistics)
  std::string evaluated_from;   // the checkpoint validate/test loaded, if any
  int exit_code = 0;            // distributed::rank_exit_code of the error, as `trainbus fit`'s
};

void write_result(const std::string& file, const RankResult& result) {
  std::ofstream out(file);
  out.precision(17);
  out << result.global_step << " " << result.val_loss << " " << result.train_loss_epoch << " "
      << result.rank_zero_observer_batches << " " << result.every_rank_observer_batches << " "
      << result.val_rank << "\n";
  for (double loss : result.losses) out << loss << " ";
  out << "\n";
  for (double weight : result.weights) out << weight << " ";
  std::string error = result.error;  // on one line
  std::replace(error.begin(), error.end(), '\n', ' ');
  out << "\n" << result.stop_reasons << "\n" << error << "\n";
  for (const auto& [name, value] : result.metrics) out << name << " " << value << " ";
  out << "\n" << result.resumed_from << "\n";
  for (double value : result.buffers) out << value << " ";
  out << "\n" << result.evaluated_from << "\n" << result.exit_code << "\n";
}

RankResult read_result(const std::string& file) {
  std::ifstream in(file);
  REQUIRE(in.good());
  RankResult result;
  std::string line;
  std::getline(in, line);
  std::istringstream(line) >> result.global_step >> result.val_loss >> result.train_loss_epoch >>
      result.rank_zero_observer_batches >> result.every_rank_observer_batches >> result.val_rank;
  std::getline(in, line);
  std::istringstream losses(line);
  for (double value; losses >> value;) result.losses.push_back(value);
  std::getline(in, line);
  std::istringstream weights(line);
  for (double value; weights >> value;) result.weights.push_back(value);
  std::getline(in, result.stop_reasons);
  std::getline(in, result.error);
  std::getline(in, line);
  std::istringstream metrics(line);
  std::string name;
  for (double value; metrics >> name >> value;) result.metrics[name] = value;
  std::getline(in, result.resumed_from);
  std::getline(in, line);
  std::istringstream buffers(line);
  for (double value; buffers >> value;) result.buffers.push_back(value);
  std::getline(in, result.evaluated_from);
  in >> result.exit_code;
  return result;
}

// Both ranks' results, each run without an error.
std::pair<RankResult, RankResult> read_clean_ranks(const testing::TempDir& dir) {
  RankResult rank0 = read_result(dir.file("rank0.txt"));
  RankResult rank1 = read_result(dir.file("rank1.txt"));
  INFO("rank 0: " << rank0.error << "\nrank 1: " << rank1.error);
  REQUIRE(rank0.error.empty());
  REQUIRE(rank1.error.empty());
  return {std::move(rank0), std::move(rank1)};
}

std::vector<double> to_vector(const at::Tensor& tensor) {
  const at::Tensor contiguous = tensor.to(at::kDouble).contiguous();
  return {contiguous.data_ptr<double>(), contiguous.data_ptr<double>() + contiguous.numel()};
}

class BatchCounter : public events::Observer {
 public:
  void select_events(events::EventSelection& selection) const override {
    selection.add<events::TrainBatchEnd>();
  }
  void on_train_batch_end(const events::TrainBatchEnd&) override { ++batches; }
  std::atomic<int64_t> batches{0};
};

// What a callback sees at the end of each validation (the last one's): val_loss and val_rank of
// callback_metrics, as "at_validation_end/<name>" in RankResult::metrics.
class ValidationEndProbe : public Callback {
 public:
  void on_validation_end(Trainer& trainer, Module&) override {
    for (const char* name : {"val_loss", "val_rank"}) {
      if (trainer.callback_metrics().count(name))
        seen[std::string("at_validation_end/") + name] = trainer.callback_metrics().at(name);
    }
  }
  Metrics seen;
};

RankResult fit_and_collect(RegressionModule& module, int64_t batch_size, TrainerOptions options,
                           std::vector<std::shared_ptr<Callback>> callbacks = {},
                           const std::string& ckpt_path = {}) {
  RegressionData data(batch_size);
  const auto validation_end = std::make_shared<ValidationEndProbe>();
  callbacks.push_back(validation_end);
  Trainer trainer(std::move(options), std::move(callbacks));
  auto rank_zero_counter = std::make_shared<BatchCounter>();
  auto every_rank_counter = std::make_shared<BatchCounter>();
  trainer.add_observer(rank_zero_counter);
  trainer.add_observer(every_rank_counter, events::ObserverOptions().every_rank(true));
  RankResult result;
  try {
    trainer.fit(module, data, FitOptions().ckpt_path(ckpt_path));
  } catch (const std::exception& error) {
    result.error = error.what();
    result.exit_code = distributed::rank_exit_code(error);
  }
  result.losses = module.losses;
  result.weights = to_vector(module.flat_weights());
  result.buffers = to_vector(module.flat_buffers());
  const Metrics& metrics = trainer.callback_metrics();
  result.metrics = metrics;
  for (const auto& [name, value] : validation_end->seen) result.metrics[name] = value;
  if (metrics.count("val_loss")) result.val_loss = metrics.at("val_loss");
  if (metrics.count("val_rank")) result.val_rank = metrics.at("val_rank");
  if (metrics.count("train_loss_epoch")) result.train_loss_epoch = metrics.at("train_loss_epoch");
  result.global_step = trainer.global_step();
  result.resumed_from = trainer.checkpoints().resumed_from();
  result.rank_zero_observer_batches = rank_zero_counter->batches;
  result.every_rank_observer_batches = every_rank_counter->batches;
  for (const std::string& reason : trainer.stop_reasons()) result.stop_reasons += reason + ";";
  return result;
}

// validate, then test, each with `ckpt_path`; what they return, and which checkpoint each loaded
// (evaluated_from: the two paths, separated by a space).
RankResult evaluate_and_collect(RegressionModule& module, int64_t batch_size,
                                TrainerOptions options,
                                std::vector<std::shared_ptr<Callback>> callbacks,
                                const std::string& ckpt_path) {
  RegressionData data(batch_size);
  Trainer trainer(std::move(options), std::move(callbacks));
  RankResult result;
  try {
    result.metrics = trainer.validate(module, data, EvaluateOptions().ckpt_path(ckpt_path));
    result.evaluated_from = trainer.checkpoints().evaluated_from();
    for (const auto& [name, value] :
         trainer.test(module, data, EvaluateOptions().ckpt_path(ckpt_path)))
      result.metrics[name] = value;
    result.evaluated_from += " " + trainer.checkpoints().evaluated_from();
  } catch (const std::exception& error) {
    result.error = error.what();
  }
  result.weights = to_vector(module.flat_weights());
  return result;
}

}  // namespace

// Saves `path` (synchronously) at the end of batch `batch_idx` of the first epoch.
class SaveAtBatch : public Callback {
 public:
  SaveAtBatch(int64_t batch_idx, std::string path)
      : batch_idx_(batch_idx), path_(std::move(path)) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() == 0 && batch_idx == batch_idx_) trainer.save_checkpoint(path_);
  }

 private:
  int64_t batch_idx_;
  std::string path_;
};

// The collective timeout of the slow_drain modes: shorter than rank 0's slow write, long enough
// for the rendezvous of two children loading LibTorch on two shared cores.
constexpr std::chrono::milliseconds kSlowDrainTimeout{5000};

// slow_drain_*: an asynchronous save at step 2 (slow.ckpt) whose write on rank 0 (its
// after_commit) lasts until rank 1 has waited 1.5 timeouts in a later save, which rank 0's writer
// must finish first: synchronously, after.ckpt at step 3 (it drains the writer); asynchronously,
// b.ckpt at step 3 (pending behind slow.ckpt) and c.ckpt at step 4 (it waits for b.ckpt to start).
// Rank 1 notes in "rank1-waiting" when it begins that save, and in save_seconds<rank>.txt how long
// the save took on each rank.
class SaveBehindSlowWrite : public Callback {
 public:
  SaveBehindSlowWrite(std::string dir, int rank, bool async)
      : dir_(std::move(dir)), rank_(rank), async_(async) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() != 0) return;
    if (batch_idx == 1) {
      CheckpointRequest request;
      request.path = dir_ + "/slow.ckpt";
      request.replace_group = request.path;
      const std::string marker = dir_ + "/rank1-waiting";
      request.after_commit = [marker](const std::string&) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!std::filesystem::exists(marker)) {
          if (std::chrono::steady_clock::now() > deadline)
            throw std::runtime_error("rank 1 did not begin its save (no " + marker +
                                     ") within 30 s");
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        const auto until = std::chrono::steady_clock::now() + kSlowDrainTimeout * 3 / 2;
        while (std::chrono::steady_clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
      };
      trainer.checkpoints().submit(std::move(request));
      return;
    }
    const int64_t waiting_batch = async_ ? 3 : 2;
    if (async_ && batch_idx == 2) {
      trainer.save_checkpoint(dir_ + "/b.ckpt", SaveCheckpointOptions().async(true));
      return;
    }
    if (batch_idx != waiting_batch) return;
    if (rank_ == 1) std::ofstream(dir_ + "/rank1-waiting") << "saving\n";
    const auto started = std::chrono::steady_clock::now();
    trainer.save_checkpoint(dir_ + (async_ ? "/c.ckpt" : "/after.ckpt"),
                            SaveCheckpointOptions().async(async_));
    std::ofstream(dir_ + "/save_seconds" + std::to_string(rank_) + ".txt")
        << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  }

 private:
  std::string dir_;
  int rank_;
  bool async_;
};

// The collective timeout of the stuck_disk modes: short, as the test waits for a few of them, but
// it also bounds good.ckpt's synchronous write and every gradient all-reduce, on a CI machine that
// runs sanitizer builds on two busy cores. Their ranks meet (files started<rank>) before they join,
// so that it need not cover two children loading LibTorch on two shared cores.
constexpr std::chrono::milliseconds kStuckDiskTimeout{5000};

// stuck_disk_*: good.ckpt at step 1 (synchronous), then slow.ckpt at step 2 (asynchronous), whose
// write rank 0's disk never gets on with (stuck_disk below), then a later save that must wait for
// rank 0's writer: synchronously, after.ckpt at step 3 (for the writer to be idle);
// asynchronously, b.ckpt at step 3 (pending behind slow.ckpt) and c.ckpt at step 4 (for room in
// the queue). Each rank notes in save_seconds<rank>.txt how long that save took (until it failed).
class SaveBehindStuckDisk : public Callback {
 public:
  SaveBehindStuckDisk(std::string dir, int rank, bool async)
      : dir_(std::move(dir)), rank_(rank), async_(async) {}
  void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                          int64_t batch_idx) override {
    if (trainer.current_epoch() != 0) return;
    if (batch_idx == 0) trainer.save_checkpoint(dir_ + "/good.ckpt");
    if (batch_idx == 1)
      trainer.save_checkpoint(dir_ + "/slow.ckpt", SaveCheckpointOptions().async(true));
    if (async_ && batch_idx == 2)
      trainer.save_checkpoint(dir_ + "/b.ckpt", SaveCheckpointOptions().async(true));
    if (batch_idx != (async_ ? 3 : 2)) return;
    const auto started = std::chrono::steady_clock::now();
    auto note_seconds = [&] {
      std::ofstream(dir_ + "/save_seconds" + std::to_string(rank_) + ".txt")
          << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    };
    try {
      trainer.save_checkpoint(dir_ + (async_ ? "/c.ckpt" : "/after.ckpt"),
                              SaveCheckpointOptions().async(async_));
    } catch (...) {
      note_seconds();
      throw;
    }
    note_seconds();
  }

 private:
  std::string dir_;
  int rank_;
  bool async_;
};

// Rank 0's disk in the stuck_disk modes (checkpoint::detail::simulate_slow_disk, before each step
// of a write): slow.ckpt's first step blocks until rank 1 is done (its rank1.txt; at most 60 s),
// then fails as an I/O error would.
void stuck_disk(const std::string& dir, const std::string& path) {
  if (path.find("slow.ckpt") == std::string::npos) return;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(dir + "/rank1.txt") &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  throw CheckpointError("cannot write " + path + ": Input/output error (simulated)");
}

// Waits (at most 60 s) until both ranks have written started<rank> in `dir`.
void meet_before_joining(const std::string& dir, int rank) {
  std::ofstream(dir + "/started" + std::to_string(rank)) << "started\n";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int other = 0; other < kWorld; ++other) {
    while (!std::filesystem::exists(dir + "/started" + std::to_string(other)) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// One rank of a two-rank job; the parent test reads what it writes.
TEST_CASE("ddp child rank", "[.ddp-child]") {
  const std::string dir = testing::test_child_dir();
  std::string mode = std::getenv("TRAINBUS_TEST_DDP_MODE");
  // "ddp child rank, core", "ddp child rank, overlap", "ddp child rank, bad hook" and "ddp child
  // rank, refit" below run these.
  if (mode.rfind("core_", 0) == 0 || mode == "overlap" || mode.rfind("bad_hook_", 0) == 0 ||
      mode.rfind("refit_", 0) == 0)
    return;
  // "MODE+view": MODE with DDPOptions::gradient_as_bucket_view; "MODE+fp16": MODE with fp16
  // gradients (as "fp16" is); "fp16_all_reduce": LibTorch's float16 all-reduce
  // (GradientCompression::kFp16AllReduce).
  const auto strip_suffix = [&mode](const std::string& suffix) {
    const bool found = mode.size() > suffix.size() &&
                       mode.compare(mode.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (found) mode.resize(mode.size() - suffix.size());
    return found;
  };
  const bool bucket_view = strip_suffix("+view");
  const bool fp16_gradients = strip_suffix("+fp16") || mode == "fp16";
  const bool fp16_all_reduce = mode == "fp16_all_reduce";
  const distributed::DistributedEnvironment environment = distributed::environment_from_variables();
  const bool stuck_disk_mode = mode.rfind("stuck_disk", 0) == 0;
  if (stuck_disk_mode) meet_before_joining(dir, environment.rank);
  auto strategy = std::make_shared<distributed::DDPStrategy>(
      environment,
      distributed::DDPOptions()
          // Short where a rank waits for a collective the others never call.
          .timeout(mode == "save_on_rank_zero_only" || mode == "save_beside_callback"
                       ? std::chrono::seconds(5)
                   : mode.rfind("slow_drain", 0) == 0 ? kSlowDrainTimeout
                   : stuck_disk_mode                  ? kStuckDiskTimeout
                                                      : std::chrono::seconds(60))
          // settings_differ: rank 1 alone looks for unused parameters (a mismatched flag).
          .find_unused_parameters(mode == "unused_allowed" ||
                                  (mode == "settings_differ" && environment.rank == 1))
          .stop_agreement_every_batch(mode != "timer_without_agreement" &&
                                      mode != "validation_stop_without_agreement")
          // Buckets of 50 KiB after the first MiB: the wide model's gradients take three.
          .bucket_cap_mb(mode == "buckets" ? 0.05 : 25.0)
          .gradient_as_bucket_view(bucket_view)
          .gradient_compression(
              fp16_all_reduce  ? distributed::DDPOptions::GradientCompression::kFp16AllReduce
              : fp16_gradients ? distributed::DDPOptions::GradientCompression::kFp16
                               : distributed::DDPOptions::GradientCompression::kNone));
  const int rank = strategy->global_rank();
  // models_differ: rank 1's hidden layer is narrower.
  const int64_t width = mode == "buckets"                      ? kWideWidth
                        : mode == "models_differ" && rank == 1 ? 8
                                                               : 16;
  RegressionModule module(width, mode == "batchnorm");
  if (rank == 1 && (mode == "equivalence" || mode == "accumulate" || mode == "batchnorm")) {
    // Rank 1 starts from other weights and buffers: DDP starts every rank from rank 0's.
    torch::NoGradGuard no_grad;
    for (auto& parameter : module.parameters()) parameter.add_(0.25);
    for (auto& buffer : module.buffers()) {
      if (buffer.is_floating_point()) buffer.add_(1.0);
    }
  }
  if (mode == "die_quiet") {  // no collective of its own in the step: the death shows in backward
    module.sync_train_loss = false;
    if (rank == 1) module.die_at_batch = 2;
  }
  if (mode == "unused" || mode == "unused_allowed") {
    // A layer that gets no gradient: DDP's find_unused_parameters case.
    module.register_module("unused", torch::nn::Linear(4, 4));
  }
  if (mode == "stop" && rank == 1) module.stop_at_batch = 3;
  if (mode == "skip_epoch" && rank == 1) module.skip_epoch_at_batch = 2;
  if (mode == "die" && rank == 1) module.die_at_batch = 2;
  if (mode == "backward_throws") {  // rank 0 waits in backward's all-reduce for rank 1
    module.sync_train_loss = false;
    if (rank == 1) module.throw_in_backward_at_batch = 2;
  }
  TrainerOptions options = quiet_options(mode == "accumulate" ? 2 : 1).strategy(strategy);
  std::vector<std::shared_ptr<Callback>> callbacks;
  std::string ckpt_path;
  options.enable_checkpointing(
      mode == "monitor" || mode == "checkpoint" || mode == "resume" || mode == "resume_last" ||
      mode == "resume_last_none" || mode == "save_fails" || mode == "evaluate_last" ||
      mode.rfind("save_fails_on_rank1", 0) == 0 || mode == "save_beside_callback");
  if (mode == "earlystop") {
    // rank_trend improves every epoch on rank 0 and never on rank 1, whose EarlyStopping
    // (patience 1) asks for a stop at the end of epoch 1: every rank stops there.
    module.log_rank_trend = true;
    options.max_epochs(4);
    callbacks.push_back(
        std::make_shared<callbacks::EarlyStopping>(callbacks::EarlyStoppingOptions()
                                                       .monitor("rank_trend")
                                                       .patience(1)
                                                       .check_on_train_epoch_end(true)));
  }
  if (mode == "evaluate_last") {
    // As resume_last: rank 1 looks in an empty directory; "last" is what rank 0 finds.
    const std::string checkpoints = rank == 1 ? dir + "/not-yet-written" : dir + "/checkpoints";
    callbacks.push_back(std::make_shared<callbacks::ModelCheckpoint>(
        callbacks::ModelCheckpointOptions().dirpath(checkpoints).filename("{step}")));
    write_result(dir + "/rank" + std::to_string(rank) + ".txt",
                 evaluate_and_collect(module, 4, options, callbacks, "last"));
    return;
  }
  if (mode == "monitor") {
    // rank_loss differs per rank: the top-k decision must still be the same on both (a save is
    // a collective), or they would wait on each other.
    callbacks.push_back(
        std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions()
                                                         .dirpath(dir + "/checkpoints")
                                                         .monitor("rank_loss")
                                                         .every_n_train_steps(1)
                                                         .save_top_k(2)));
  }
  if (mode == "checkpoint" || mode == "resume" || mode == "resume_last" ||
      mode == "resume_last_none") {
    // Every 3 steps, all kept: mid-epoch ones (step 3, 6), none at the epoch's end (step 8).
    // resume_last: rank 1 looks in an empty directory, as a rank that sees the run directory
    // before rank 0's files are there would; "last" is what rank 0 finds. resume_last_none: the
    // other way round, and rank 0 finds nothing: both fail with its error.
    const bool empty_here =
        (mode == "resume_last" && rank == 1) || (mode == "resume_last_none" && rank == 0);
    const std::string checkpoints = empty_here ? dir + "/not-yet-written" : dir + "/checkpoints";
    callbacks.push_back(
        std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions()
                                                         .dirpath(checkpoints)
                                                         .filename("{step}")
                                                         .every_n_train_steps(3)
                                                         .save_top_k(-1)));
    options.max_epochs(mode == "checkpoint" ? 1 : 2);
    if (mode == "resume") ckpt_path = dir + "/checkpoints/step=6.ckpt";
    if (mode == "resume_last" || mode == "resume_last_none") ckpt_path = "last";
  }
  if (mode == "save_fails") {
    // Rank 0's save fails in a hook (the hooks run on every rank, the write on rank 0).
    class FailingSave : public Callback {
      void on_save_checkpoint(Trainer& trainer, Module&, CheckpointData&) override {
        if (trainer.global_rank() == 0)
          throw std::runtime_error("on_save_checkpoint failed on purpose");
      }
    };
    callbacks.push_back(std::make_shared<callbacks::ModelCheckpoint>(
        callbacks::ModelCheckpointOptions().dirpath(dir + "/checkpoints").every_n_train_steps(3)));
    callbacks.push_back(std::make_shared<FailingSave>());
  }
  if (mode == "save_fails_on_rank1_async" || mode == "save_fails_on_rank1_sync") {
    // Rank 1's hook fails in the second save (step 6), which as the top 1 would evict step 3's:
    // rank 0 must neither write it nor evict the older one.
    class FailingSecondSaveOnRankOne : public Callback {
      void on_save_checkpoint(Trainer& trainer, Module&, CheckpointData&) override {
        if (trainer.global_rank() == 1 && trainer.global_step() == 6)
          throw std::runtime_error("rank 1's on_save_checkpoint failed on purpose");
      }
    };
    callbacks.push_back(std::make_shared<callbacks::ModelCheckpoint>(
        callbacks::ModelCheckpointOptions()
            .dirpath(dir + "/checkpoints")
            .filename("{step}")
            .every_n_train_steps(3)
            .async(mode == "save_fails_on_rank1_async")));
    callbacks.push_back(std::make_shared<FailingSecondSaveOnRankOne>());
  }
  if (mode == "save_on_rank_zero_only") {
    // What the README forbids: a save on rank 0 alone, while every rank trains on.
    class SaveOnRankZeroOnly : public Callback {
     public:
      explicit SaveOnRankZeroOnly(std::string path) : path_(std::move(path)) {}
      void on_train_batch_end(Trainer& trainer, Module&, const StepOutput&, const Batch&,
                              int64_t batch_idx) override {
        if (batch_idx == 2 && trainer.is_global_zero()) trainer.save_checkpoint(path_);
      }

     private:
      std::string path_;
    };
    module.sync_train_loss = false;  // the next collective of rank 1 is its stop vote
    callbacks.push_back(std::make_shared<SaveOnRankZeroOnly>(dir + "/rank0-only.ckpt"));
  }
  if (mode == "save_other_path") {
    // Every rank saves at step 3, each under a name of its own: the same save; rank 0's is
    // written.
    callbacks.push_back(std::make_shared<SaveAtBatch>(
        2, dir + (rank == 0 ? "/rank0-path.ckpt" : "/rank1-path.ckpt")));
  }
  if (mode == "save_beside_callback") {
    // At the step where ModelCheckpoint saves on every rank, rank 0 alone saves one of its own
    // first (callbacks run before the checkpoint callbacks).
    module.sync_train_loss = false;
    callbacks.push_back(std::make_shared<callbacks::ModelCheckpoint>(
        callbacks::ModelCheckpointOptions().dirpath(dir + "/checkpoints").every_n_train_steps(3)));
    if (rank == 0) callbacks.push_back(std::make_shared<SaveAtBatch>(2, dir + "/extra.ckpt"));
  }
  if (mode == "slow_drain_sync" || mode == "slow_drain_async") {
    callbacks.push_back(
        std::make_shared<SaveBehindSlowWrite>(dir, rank, mode == "slow_drain_async"));
  }
  if (stuck_disk_mode) {
    callbacks.push_back(
        std::make_shared<SaveBehindStuckDisk>(dir, rank, mode == "stuck_disk_async"));
    if (rank == 0)
      checkpoint::detail::simulate_slow_disk(
          [dir](const std::string& path) { stuck_disk(dir, path); });
  }
  if (mode == "validation_stop_without_agreement" && rank == 1) {
    // Without the per-batch agreement the Trainer still agrees after validation: a stop asked
    // there on one rank stops both.
    class StopAtFirstValidationEnd : public Callback {
      void on_validation_end(Trainer& trainer, Module&) override {
        if (trainer.current_epoch() == 0) trainer.request_stop("rank 1 at validation");
      }
    };
    callbacks.push_back(std::make_shared<StopAtFirstValidationEnd>());
    options.max_epochs(4);
  }
  if (mode == "timer_without_agreement") {
    // Rank 0's limit passes after a few paused steps, rank 1's never: without the Trainer's
    // agreement after every batch, the Timer itself must stop both ranks after the same batch.
    class PausedSteps : public Callback {
      void on_train_batch_start(Trainer&, Module&, const Batch&, int64_t) override {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // time for the Timer
      }
    };
    callbacks.push_back(std::make_shared<PausedSteps>());
    callbacks.push_back(std::make_shared<callbacks::Timer>(callbacks::TimerOptions().duration(
        rank == 0 ? Duration(std::chrono::milliseconds(60)) : Duration(std::chrono::hours(1)))));
    options.max_epochs(20);  // 160 steps if nothing stopped the fit
  }
  if (mode == "resplit") {
    ResplittingData data;
    Trainer trainer(options.max_epochs(1), {std::make_shared<EstimateInSetup>()});
    RankResult result;
    try {
      trainer.fit(module, data);
    } catch (const std::exception& error) {
      result.error = error.what();
    }
    write_result(dir + "/rank" + std::to_string(rank) + ".txt", result);
    return;
  }
  // Whether every gradient the optimizer steps with is a view into one bucket (all fit the
  // first): so with gradient_as_bucket_view, never without.
  class BucketViewProbe : public Callback {
   public:
    void on_before_optimizer_step(Trainer&, Module& module, torch::optim::Optimizer&) override {
      std::vector<at::Tensor> gradients;
      for (const auto& parameter : module.parameters()) {
        if (parameter.grad().defined()) gradients.push_back(parameter.grad());
      }
      for (size_t i = 1; i < gradients.size(); ++i)
        (gradients[i].is_alias_of(gradients.front()) ? views : copies) += 1;
    }
    int views = 0, copies = 0;
  };
  const auto probe = std::make_shared<BucketViewProbe>();
  const bool probed = mode == "equivalence" || mode == "accumulate";
  if (probed) callbacks.push_back(probe);
  const auto started = std::chrono::steady_clock::now();
  RankResult result = fit_and_collect(module, 4, options, callbacks, ckpt_path);
  if (probed && (probe->views + probe->copies == 0 || (bucket_view && probe->copies > 0) ||
                 (!bucket_view && probe->views > 0))) {
    result.error += "gradient_as_bucket_view(" + std::to_string(bucket_view) +
                    "): " + std::to_string(probe->views) + " gradients were bucket views, " +
                    std::to_string(probe->copies) + " were not";
  }
  const distributed::DDPStatistics& statistics = strategy->statistics();
  result.metrics["ddp/buckets"] = static_cast<double>(statistics.buckets);
  // The hook the Reducer was given, as its Logger has it, and the buckets trainbus's averaged.
  result.metrics["ddp/comm_hook/" + statistics.comm_hook_name] = 1.0;
  result.metrics["ddp/fp16_all_gather_buckets"] =
      static_cast<double>(statistics.fp16_all_gather_buckets);
  result.metrics["ddp/backward_compute_ns"] = static_cast<double>(statistics.backward_compute_ns);
  result.metrics["ddp/backward_compute_comm_overlap_ns"] =
      static_cast<double>(statistics.backward_compute_comm_overlap_ns);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!result.error.empty()) result.error += " [after " + std::to_string(seconds) + " s]";
  if (mode == "save_fails" && rank == 0) {
    // Alive until rank 1 is done: its connection to rank 0 stays open, so only what rank 0
    // tells it can end its wait (a process that exits is noticed anyway).
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    while (!std::filesystem::exists(dir + "/rank1.txt") && std::chrono::steady_clock::now() < limit)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (mode.rfind("save_fails_on_rank1", 0) == 0 && rank == 1) {
    // Alive until rank 0 is done, as rank 0 above: only the agreement can tell rank 0.
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(90);
    while (!std::filesystem::exists(dir + "/rank0.txt") && std::chrono::steady_clock::now() < limit)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  write_result(dir + "/rank" + std::to_string(rank) + ".txt", result);
}

TEST_CASE("DDP gives each rank of a machine its own CUDA device, unless one is named", "[ddp]") {
  distributed::DistributedEnvironment environment;
  environment.world_size = 4;
  environment.rank = 3;
  environment.local_world_size = 2;
  environment.local_rank = 1;
  const distributed::DDPStrategy strategy(environment);
  CHECK(strategy.root_device(c10::Device("cuda")) == c10::Device("cuda:1"));
  CHECK(strategy.root_device(c10::Device("cuda:0")) == c10::Device("cuda:0"));
  CHECK(strategy.root_device(c10::Device("cpu")) == c10::Device("cpu"));
  CHECK(distributed::SingleProcessStrategy().root_device(c10::Device("cuda")) ==
        c10::Device("cuda"));
}

TEST_CASE("DDP's backend: gloo on the CPU, nccl asked where it cannot work says what to change",
          "[ddp]") {
  const ReservedPort reserved;
  distributed::DistributedEnvironment environment;  // a job of one rank, on loopback
  environment.master_port = reserved.port();
  using Backend = distributed::DDPOptions::Backend;

  SECTION("auto on the CPU is gloo; a later run on another device type is refused") {
    distributed::DDPStrategy strategy(environment);
    CHECK(strategy.backend_name().empty());
    strategy.connect(c10::Device("cpu"));
    CHECK(strategy.backend_name() == "gloo");
    std::vector<double> values{2.0};
    strategy.all_reduce(values, distributed::ReduceOp::kSum);
    CHECK(values[0] == 2.0);
    CHECK(strategy.broadcast_text("text") == "text");
    strategy.connect(c10::Device("cpu"));  // the next run: the same group
    CHECK_THROWS_WITH(strategy.connect(c10::Device("cuda:0")),
                      Catch::Contains("joined the job for device cpu (backend gloo), and a later "
                                      "run asks for cuda:0"));
  }
  SECTION("nccl on the CPU") {
    distributed::DDPStrategy strategy(environment,
                                      distributed::DDPOptions().backend(Backend::kNccl));
    CHECK_THROWS_AS(strategy.connect(c10::Device("cpu")), MisconfigurationError);
    CHECK_THROWS_WITH(strategy.connect(c10::Device("cpu")),
                      Catch::Contains("rank 0 of 1: DDPOptions::backend is nccl (--ddp-backend "
                                      "nccl), which moves CUDA tensors only, but the Trainer's "
                                      "device is cpu: train on cuda (--device cuda), or use gloo "
                                      "or auto"));
    CHECK(strategy.backend_name().empty());
  }
  if (!distributed::DDPStrategy::nccl_available()) {
    SECTION("nccl on CUDA, with a LibTorch built without NCCL (Debian's)") {
      distributed::DDPStrategy strategy(environment,
                                        distributed::DDPOptions().backend(Backend::kNccl));
      CHECK_THROWS_WITH(strategy.connect(c10::Device("cuda:0")),
                        Catch::Contains("but this LibTorch was built without NCCL (Debian's "
                                        "libtorch-dev is CPU-only): use gloo or auto"));
    }
    SECTION("auto on CUDA falls back to gloo without NCCL") {
      distributed::DDPStrategy strategy(environment);
      strategy.connect(c10::Device("cuda:0"));  // joins without touching a CUDA tensor
      CHECK(strategy.backend_name() == "gloo");
    }
  }
}

TEST_CASE("two ranks with batch B train as one process with batch 2B", "[ddp]") {
  // Rank 1 starts from other weights than rank 0's (the child above): they train as one process
  // only because DDP starts every rank from rank 0's.
  const int64_t accumulate = GENERATE(1, 2);
  const bool gradient_as_bucket_view = GENERATE(false, true);
  CAPTURE(accumulate, gradient_as_bucket_view);
  testing::TempDir dir;
  run_ranks_cleanly(std::string(accumulate == 1 ? "equivalence" : "accumulate") +
                        (gradient_as_bucket_view ? "+view" : ""),
                    dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);

  RegressionModule single_module;
  const RankResult single = fit_and_collect(single_module, 8, quiet_options(accumulate));
  REQUIRE(single.error.empty());

  // Every rank steps identically: the same weights, bit for bit.
  CHECK(rank0.weights == rank1.weights);
  REQUIRE(rank0.weights.size() == single.weights.size());
  for (size_t i = 0; i < single.weights.size(); ++i)
    REQUIRE(rank0.weights[i] == Approx(single.weights[i]).margin(1e-5));
  // 8 batches of 8 samples a epoch, for 2 epochs; each rank sees its half of every batch.
  CHECK(rank0.global_step == single.global_step);
  REQUIRE(rank0.losses.size() == single.losses.size());
  for (size_t i = 0; i < single.losses.size(); ++i)
    CHECK((rank0.losses[i] + rank1.losses[i]) / 2 == Approx(single.losses[i]).margin(1e-5));
  // Validation metrics are reduced over every rank's samples before callbacks see them;
  // sync_dist training values too.
  CHECK(rank0.val_loss == rank1.val_loss);
  CHECK(rank0.val_loss == Approx(single.val_loss).margin(1e-6));
  CHECK(rank0.train_loss_epoch == rank1.train_loss_epoch);
  // Logged in on_validation_epoch_end as the rank number: the ranks' mean on both, already in
  // the callback_metrics a callback's on_validation_end sees.
  CHECK(rank0.val_rank == 0.5);
  CHECK(rank1.val_rank == 0.5);
  for (const RankResult* rank : {&rank0, &rank1}) {
    CHECK(rank->metrics.at("at_validation_end/val_rank") == 0.5);
    CHECK(rank->metrics.at("at_validation_end/val_loss") == rank0.val_loss);
  }
  // sync_dist reduces with reduce_fx's op: max and min of the ranks' 0 and 1, the sum of every
  // rank's 8 batches of 1 (rank 0) and 2 (rank 1); without sync_dist each rank keeps its own.
  for (const RankResult* rank : {&rank0, &rank1}) {
    CHECK(rank->metrics.at("rank_max") == 1.0);
    CHECK(rank->metrics.at("rank_min") == 0.0);
    CHECK(rank->metrics.at("rank_sum") == 8 * 1.0 + 8 * 2.0);
    CHECK(rank->metrics.at("step_max") == 1.0);  // a step value, reduced when logged
    CHECK(rank->metrics.at("val_rank_sum") == 1.0 + 2.0);
  }
  CHECK(rank0.metrics.at("rank_sum_local") == 8 * 1.0);
  CHECK(rank1.metrics.at("rank_sum_local") == 8 * 2.0);
  // Observers (loggers, progress bar) run on rank 0 unless asked to run on every rank.
  CHECK(rank0.rank_zero_observer_batches == 16);
  CHECK(rank1.rank_zero_observer_batches == 0);
  CHECK(rank1.every_rank_observer_batches == 16);
  CHECK(rank0.train_loss_epoch == Approx(single.train_loss_epoch).margin(1e-6));
}

TEST_CASE("a stop asked on one rank stops every rank at the same batch", "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("stop", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank1.global_step == 4);  // batch 3 still steps, then the fit stops
  CHECK(rank0.global_step == 4);
  CHECK(rank1.stop_reasons == "rank asked;");
  CHECK(rank0.stop_reasons == "a stop was requested on another rank;");
  CHECK(rank0.weights == rank1.weights);
}

TEST_CASE("on_train_batch_start's -1 on one rank skips the rest of the epoch on every rank",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("skip_epoch", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  // Batches 0 and 1 of each of the 2 epochs step (of 8); rank 0 skips with rank 1.
  CHECK(rank1.global_step == 4);
  CHECK(rank0.global_step == 4);
  CHECK(rank0.losses.size() == 4);
  CHECK(rank0.weights == rank1.weights);
}

TEST_CASE("a rank that dies makes the other fail at once with a DistributedError", "[ddp]") {
  // "die": rank 0 notices in a sync_dist log's all-reduce; "die_quiet": in backward's;
  // "die_quiet+fp16": in the all-gather of the fp16 gradient hook (Fp16AllGatherHook), whose
  // future fails.
  const std::string mode = GENERATE("die", "die_quiet", "die_quiet+fp16");
  CAPTURE(mode);
  testing::TempDir dir;
  const std::vector<int> statuses = run_ranks(mode, dir.path().string());
  CHECK((WIFEXITED(statuses[1]) && WEXITSTATUS(statuses[1]) == 3));
  REQUIRE((WIFEXITED(statuses[0]) && WEXITSTATUS(statuses[0]) == 0));
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  INFO(rank0.error);
  CHECK_THAT(rank0.error, Catch::Contains("rank 0 of 2"));
  CHECK_THAT(rank0.error, Catch::Contains("failed"));
  // A PeerLostError: `trainbus fit` exits with kAnotherRankFailedExitCode, and the launcher does
  // not name this rank as the job's failure.
  CHECK(rank0.exit_code == distributed::kAnotherRankFailedExitCode);
  // Of two ranks, the other is the one that stopped: named.
  CHECK_THAT(rank0.error, Catch::Contains("Another rank (rank 1, the only other one) stopped"));
  // Noticed when the connection closed, long before the 60 s timeout.
  const auto after = rank0.error.find("[after ");
  REQUIRE(after != std::string::npos);
  CHECK(std::stod(rank0.error.substr(after + 7)) < 30.0);
  if (mode == "die_quiet+fp16") {
    CHECK(rank0.metrics.count("ddp/comm_hook/fp16_all_gather") == 1);
    // Rank 1 dies at its third batch: the hook averaged the buckets of the batches before.
    REQUIRE(rank0.metrics.count("ddp/fp16_all_gather_buckets") == 1);
    CHECK(rank0.metrics.at("ddp/fp16_all_gather_buckets") > 0.0);
  }
}

TEST_CASE("an error of a rank's own inside backward is its failure, not the other rank's",
          "[ddp]") {
  // Rank 1's autograd function throws inside backward, where the Reducer averages gradients;
  // rank 0 waits in that backward's all-reduce until rank 1 is gone.
  testing::TempDir dir;
  run_ranks_cleanly("backward_throws", dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  INFO("rank 0: " << rank0.error << "\nrank 1: " << rank1.error);
  CHECK_THAT(rank1.error, Catch::Contains("rank 1 of 2") &&
                              Catch::Contains("ThrowingBackward's backward failed on purpose"));
  CHECK_THAT(rank1.error, !Catch::Contains("Another rank"));
  CHECK(rank1.exit_code == 1);
  CHECK_THAT(rank0.error, Catch::Contains("rank 0 of 2") &&
                              Catch::Contains("Another rank (rank 1, the only other one) stopped"));
  CHECK(rank0.exit_code == distributed::kAnotherRankFailedExitCode);
}

TEST_CASE("a rank whose model differs from rank 0's fails with its own error", "[ddp]") {
  // verify_params_across_processes: rank 1 compares its parameters with rank 0's (broadcast) and
  // fails; rank 0 then finds rank 1 gone in the next collective.
  testing::TempDir dir;
  run_ranks_cleanly("models_differ", dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  INFO("rank 0: " << rank0.error << "\nrank 1: " << rank1.error);
  CHECK_THAT(rank1.error, Catch::Contains("rank 1 of 2: checking that every rank has the same "
                                          "parameters failed on this rank") &&
                              Catch::Contains("sizes [8, 32]"));
  CHECK_THAT(rank1.error, !Catch::Contains("Another rank"));
  CHECK(rank1.exit_code == 1);
  CHECK(rank0.exit_code == distributed::kAnotherRankFailedExitCode);
}

TEST_CASE("a socket interface that does not exist is this rank's own error", "[ddp]") {
  const ReservedPort reserved;
  distributed::DistributedEnvironment environment;
  environment.master_addr = "127.0.0.1";
  environment.master_port = reserved.port();
  distributed::DDPStrategy strategy(
      environment, distributed::DDPOptions().socket_ifname("trainbus-no-such-interface0"));
  // The second connect (the next run) fails as the first, not at a store the first left behind.
  for (int attempt = 1; attempt <= 2; ++attempt) {
    CAPTURE(attempt);
    try {
      strategy.connect(c10::Device("cpu"));
      FAIL("connect() succeeded");
    } catch (const distributed::DistributedError& error) {
      CHECK_THAT(error.what(), Catch::Contains("creating the Gloo device failed on this rank") &&
                                   Catch::Contains("trainbus-no-such-interface0"));
      CHECK(distributed::rank_exit_code(error) == 1);
    }
  }
  CHECK(strategy.backend_name().empty());
}

TEST_CASE("a connect that failed can be tried again and joins", "[ddp]") {
  const ReservedPort reserved;
  distributed::DistributedEnvironment environment;
  environment.master_addr = "127.0.0.1";
  environment.master_port = reserved.port();
  distributed::DDPStrategy strategy(environment);
  {
    testing::ScopedEnvironment environment_variables;
    environment_variables.set("GLOO_SOCKET_IFNAME", "trainbus-no-such-interface0");
    CHECK_THROWS_WITH(strategy.connect(c10::Device("cpu")),
                      Catch::Contains("creating the Gloo device failed on this rank"));
  }
  strategy.connect(c10::Device("cpu"));  // the interface is back: this rank joins
  CHECK(strategy.backend_name() == "gloo");
  std::vector<double> values{2.0};
  strategy.all_reduce(values, distributed::ReduceOp::kSum);
  CHECK(values[0] == 2.0);
}

TEST_CASE("ranks whose DDP settings differ fail at once, each naming the setting", "[ddp]") {
  // Rank 1 alone has --ddp-find-unused-parameters: it says so; rank 0 stops because of it.
  testing::TempDir dir;
  run_ranks_cleanly("settings_differ", dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  INFO("rank 0: " << rank0.error << "\nrank 1: " << rank1.error);
  CHECK_THAT(rank1.error, Catch::StartsWith("rank 1 of 2: this rank's DDP settings differ from "
                                            "rank 0's: `find_unused_parameters` is true on rank "
                                            "1 but false on rank 0: set "
                                            "--ddp-find-unused-parameters"));
  CHECK(rank1.exit_code == 1);
  CHECK_THAT(rank0.error, Catch::StartsWith("rank 0 of 2: the DDP settings of another rank "
                                            "differ from this rank's: `find_unused_parameters` "
                                            "is true on rank 1 but false on rank 0"));
  CHECK(rank0.exit_code == distributed::kAnotherRankFailedExitCode);
  CHECK(rank0.global_step == 0);
  CHECK(rank1.global_step == 0);
  for (const RankResult* rank : {&rank0, &rank1}) {  // not the 60 s timeout
    const auto after = rank->error.find("[after ");
    REQUIRE(after != std::string::npos);
    CHECK(std::stod(rank->error.substr(after + 7)) < 30.0);
  }
}

TEST_CASE("a save that fails on rank 0 fails on every rank at once, not at the timeout", "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("save_fails", dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  CHECK_THAT(rank0.error, Catch::Contains("on_save_checkpoint failed on purpose"));
  INFO(rank1.error);
  CHECK_THAT(rank1.error, Catch::Contains("rank 0"));
  CHECK_THAT(rank1.error, Catch::Contains("step=3.ckpt"));
  // Rank 0's failure is its own; rank 1 stops only because of it.
  CHECK(rank0.exit_code == 1);
  CHECK(rank1.exit_code == distributed::kAnotherRankFailedExitCode);
  const auto after = rank1.error.find("[after ");
  REQUIRE(after != std::string::npos);
  CHECK(std::stod(rank1.error.substr(after + 7)) < 30.0);  // the timeout is 60 s
}

TEST_CASE("a save that fails on rank 1 is not written by rank 0, nor evicts an older checkpoint",
          "[ddp]") {
  // Two phases: every rank's hooks, the agreement, then rank 0 writes (or submits) and evicts.
  const std::string mode = GENERATE("save_fails_on_rank1_async", "save_fails_on_rank1_sync");
  CAPTURE(mode);
  testing::TempDir dir;
  run_ranks_cleanly(mode, dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  CHECK_THAT(rank1.error, Catch::Contains("rank 1's on_save_checkpoint failed on purpose"));
  INFO(rank0.error);
  CHECK_THAT(rank0.error, Catch::Contains("rank 1's part of the save of checkpoint") &&
                              Catch::Contains("step=6.ckpt"));
  CHECK(rank0.global_step == 6);
  CHECK(rank1.exit_code == 1);
  CHECK(rank0.exit_code == distributed::kAnotherRankFailedExitCode);
  std::vector<std::string> written;
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("checkpoints")))
    written.push_back(entry.path().filename().string());
  // Step 3's (the top 1 until then) is still there; step 6's was never written, nor a temporary.
  CHECK(written == std::vector<std::string>{"step=3.ckpt"});
}

TEST_CASE("a save called on rank 0 only fails every rank at the timeout, saying what to fix",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("save_on_rank_zero_only", dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  INFO("rank 0: " << rank0.error << "\nrank 1: " << rank1.error);
  // Rank 0's save agreement (two values) meets rank 1's stop vote (one): Gloo makes both wait
  // until the timeout (5 s here). Rank 0 knows it was in a save and says what to fix; rank 1 only
  // that another rank did not reach its collective.
  CHECK_THAT(rank0.error,
             Catch::Contains("rank 0 of 2: a checkpoint save was called on some ranks only") &&
                 Catch::Contains("save_checkpoint is a collective") &&
                 Catch::Contains("is_global_zero()") && Catch::Contains("rank0-only.ckpt"));
  CHECK(rank0.exit_code == 1);  // the rank that is in the wrong collective is named
  CHECK(rank1.exit_code == distributed::kAnotherRankFailedExitCode);
  CHECK_THAT(rank1.error, Catch::Contains("rank 1 of 2"));
  for (const RankResult* rank : {&rank0, &rank1}) {
    const auto after = rank->error.find("[after ");
    REQUIRE(after != std::string::npos);
    CHECK(std::stod(rank->error.substr(after + 7)) < 30.0);
  }
  CHECK(rank0.global_step == 3);  // the save at batch 2's end
  CHECK_FALSE(std::filesystem::exists(dir.file("rank0-only.ckpt")));
}

TEST_CASE("ranks that save_checkpoint under different file names write rank 0's, as Lightning",
          "[ddp]") {
  // A timestamp, a hostname or a metric not reduced in the name: the same save on every rank.
  testing::TempDir dir;
  run_ranks_cleanly("save_other_path", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 16);
  CHECK(rank0.weights == rank1.weights);
  CHECK(std::filesystem::exists(dir.file("rank0-path.ckpt")));
  CHECK_FALSE(std::filesystem::exists(dir.file("rank1-path.ckpt")));
}

TEST_CASE("a save of one's own beside ModelCheckpoint's save of every rank fails both at once",
          "[ddp]") {
  // save_beside_callback: rank 0 alone saves one beside ModelCheckpoint's save of every rank. The
  // same step and phase, another save.
  testing::TempDir dir;
  run_ranks_cleanly("save_beside_callback", dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  INFO("rank 0: " << rank0.error << "\nrank 1: " << rank1.error);
  const std::string rank0_path = "extra.ckpt";
  const std::string rank1_path = "epoch=0-step=3.ckpt";
  for (const auto& [rank, path] : {std::pair{&rank0, rank0_path}, std::pair{&rank1, rank1_path}}) {
    CHECK_THAT(rank->error,
               Catch::Contains("a checkpoint save was called on some ranks only") &&
                   Catch::Contains(path + " at step 3") &&
                   Catch::Contains("another rank saves another checkpoint at this step") &&
                   Catch::Contains("save_checkpoint is a collective"));
    CHECK(rank->exit_code == 1);
    CHECK(rank->global_step == 3);
    // At once, not at the timeout (5 s here).
    const auto after = rank->error.find("[after ");
    REQUIRE(after != std::string::npos);
    CHECK(std::stod(rank->error.substr(after + 7)) < 4.0);
  }
  // Nothing written.
  for (const std::string& path : {rank0_path, rank1_path}) {
    CHECK_FALSE(std::filesystem::exists(dir.file(path)));
    CHECK_FALSE(std::filesystem::exists(dir.file("checkpoints/" + path)));
  }
}

TEST_CASE("a save that waits for rank 0's earlier asynchronous writes outlasts the timeout",
          "[ddp]") {
  // Rank 0 must let its writer finish the slow save (1.5 timeouts) before it goes on with a later
  // save; the other rank waits with it, in rounds of the save's agreement, not in one collective.
  const std::string mode = GENERATE("slow_drain_sync", "slow_drain_async");
  CAPTURE(mode);
  testing::TempDir dir;
  run_ranks_cleanly(mode, dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 16);
  CHECK(rank0.weights == rank1.weights);
  const std::vector<std::string> written =
      mode == "slow_drain_sync" ? std::vector<std::string>{"slow.ckpt", "after.ckpt"}
                                : std::vector<std::string>{"slow.ckpt", "b.ckpt", "c.ckpt"};
  for (const std::string& name : written) CHECK(std::filesystem::exists(dir.file(name)));
  double rank1_seconds = 0.0;
  std::ifstream(dir.file("save_seconds1.txt")) >> rank1_seconds;
  CHECK(rank1_seconds > std::chrono::duration<double>(kSlowDrainTimeout).count());
}

TEST_CASE("a save that waits for rank 0's writer stuck on its disk fails both ranks, naming rank 0",
          "[ddp]") {
  // Rank 0's writer makes no progress on slow.ckpt: rank 0 fails with its own error after a
  // timeout without progress, rank 1 in the same round of the save's agreement, naming rank 0.
  // Bounded: without the bound both ranks wait until rank 0's disk fails after 60 s.
  const std::string mode = GENERATE("stuck_disk_sync", "stuck_disk_async");
  CAPTURE(mode);
  testing::TempDir dir;
  run_ranks_cleanly(mode, dir);
  const RankResult rank0 = read_result(dir.file("rank0.txt"));
  const RankResult rank1 = read_result(dir.file("rank1.txt"));
  INFO("rank 0: " << rank0.error << "\nrank 1: " << rank1.error);
  const std::string later = mode == "stuck_disk_sync" ? "after.ckpt" : "c.ckpt";
  CHECK_THAT(rank0.error, Catch::Contains("rank 0's checkpoint writer made no progress for") &&
                              Catch::Contains("while writing " + dir.file("slow.ckpt")) &&
                              Catch::Contains("(the save of " + dir.file(later) + " at step") &&
                              Catch::Contains("disk or filesystem is stuck") &&
                              Catch::Contains("did not finish within the limit") &&
                              Catch::Contains("DDPOptions::timeout (--ddp-timeout, now 5 s)"));
  CHECK(rank0.exit_code == 1);
  // Rank 1 learns it in the round where rank 0 fails (rank 0 comes to every round within
  // kWriterWaitRound, far below the timeout).
  CHECK_THAT(rank1.error, Catch::Contains("rank 1 of 2: rank 0's part of the save of checkpoint " +
                                          dir.file(later)));
  CHECK(rank1.exit_code == distributed::kAnotherRankFailedExitCode);
  // Within a few timeouts: well below the simulated disk's 60 s (wide enough for a busy machine).
  const double timeout_seconds = std::chrono::duration<double>(kStuckDiskTimeout).count();
  for (const char* file : {"save_seconds0.txt", "save_seconds1.txt"}) {
    double seconds = 0.0;
    std::ifstream(dir.file(file)) >> seconds;
    CAPTURE(file);
    CHECK(seconds >= timeout_seconds);
    CHECK(seconds < 3 * timeout_seconds + 5.0);
  }
  // The complete checkpoint before it is intact; slow.ckpt never appeared, nor a temporary.
  CHECK_NOTHROW(checkpoint::read_checkpoint(dir.file("good.ckpt")));
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    const std::string name = entry.path().filename().string();
    CAPTURE(name);
    CHECK((name.find(".ckpt") == std::string::npos || name == "good.ckpt" || name == "b.ckpt"));
  }
}

TEST_CASE("only rank 0 writes checkpoints, two ranks resume from one mid-epoch, one process cannot",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("checkpoint", dir);
  for (const char* rank : {"rank0.txt", "rank1.txt"})
    REQUIRE(read_result(dir.file(rank)).error.empty());
  std::vector<std::string> written;
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("checkpoints")))
    written.push_back(entry.path().filename().string());
  std::sort(written.begin(), written.end());
  // Rank 1 wrote nothing of its own: no second set, no temporary left behind.
  CHECK(written == std::vector<std::string>{"step=3.ckpt", "step=6.ckpt"});

  run_ranks_cleanly("resume", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 16);
  CHECK(rank0.weights == rank1.weights);
  // Resumed at step 6, mid-epoch, the two ranks end as two ranks that never stopped: the same
  // batches from step 6 on, the same losses, the same weights, bit for bit.
  testing::TempDir uninterrupted_dir;
  run_ranks_cleanly("equivalence", uninterrupted_dir);
  const auto [uninterrupted0, uninterrupted1] = read_clean_ranks(uninterrupted_dir);
  CHECK(uninterrupted0.global_step == 16);
  CHECK(rank0.weights == uninterrupted0.weights);
  CHECK(rank1.weights == uninterrupted1.weights);
  REQUIRE(rank1.losses.size() == 10);  // steps 6 to 15
  REQUIRE(uninterrupted1.losses.size() == 16);
  CHECK(rank1.losses ==
        std::vector<double>(uninterrupted1.losses.begin() + 6, uninterrupted1.losses.end()));

  // ckpt_path "last" is what rank 0 finds (the resumed run's step=15), on every rank, whatever
  // the others see.
  run_ranks_cleanly("resume_last", dir);
  const auto [last0, last1] = read_clean_ranks(dir);
  CHECK(last0.global_step == 16);
  CHECK(last0.weights == last1.weights);
  CHECK_THAT(last0.resumed_from, Catch::EndsWith("checkpoints/step=15.ckpt"));
  CHECK(last1.resumed_from == last0.resumed_from);

  // validate and test with ckpt_path "last": both ranks load rank 0's newest (step=15), and the
  // metrics, reduced over both ranks' halves, are one process's over the whole set.
  run_ranks_cleanly("evaluate_last", dir);
  const auto [evaluated0, evaluated1] = read_clean_ranks(dir);
  const std::string step15 = dir.file("checkpoints/step=15.ckpt");
  CHECK(evaluated0.evaluated_from == step15 + " " + step15);
  CHECK(evaluated1.evaluated_from == evaluated0.evaluated_from);
  CHECK(evaluated0.weights == evaluated1.weights);
  RegressionModule one_process_module;
  const RankResult one_process = evaluate_and_collect(
      one_process_module, 8, quiet_options(1).enable_checkpointing(false), {}, step15);
  REQUIRE(one_process.error.empty());
  CHECK(evaluated0.weights == one_process.weights);
  for (const char* name : {"val_loss", "test_loss"}) {
    CAPTURE(name);
    REQUIRE(evaluated0.metrics.count(name) == 1);
    CHECK(evaluated0.metrics.at(name) == evaluated1.metrics.at(name));
    CHECK(evaluated0.metrics.at(name) == Approx(one_process.metrics.at(name)).margin(1e-6));
  }

  // Rank 0 finds nothing: every rank fails with its error, none resumes from what it sees itself.
  for (int status : run_ranks("resume_last_none", dir.path().string())) REQUIRE(WIFEXITED(status));
  const RankResult none0 = read_result(dir.file("rank0.txt"));
  const RankResult none1 = read_result(dir.file("rank1.txt"));
  CHECK_THAT(none0.error, Catch::Contains("no complete checkpoint found"));
  CHECK_THAT(none1.error, Catch::Contains("no complete checkpoint found") &&
                              Catch::Contains("(on rank 0, which looks for all)"));

  // One process with the ranks' batch size would count twice the batches: the position would
  // point at other samples. A clear error, not a silent skip.
  RegressionModule module;
  const RankResult mismatched =
      fit_and_collect(module, 4, quiet_options(1), {}, dir.file("checkpoints/step=6.ckpt"));
  CHECK_THAT(mismatched.error, Catch::Contains("saved inside an epoch by 2 ranks with 8 batches"));
  CHECK_THAT(mismatched.error, Catch::Contains("this run has 1 process with 16"));
  CHECK_THAT(mismatched.error, Catch::Contains("--nproc-per-node"));
  // With their global batch size the epoch divides the same way: it resumes.
  RegressionModule same_division;
  const RankResult single =
      fit_and_collect(same_division, 8, quiet_options(1), {}, dir.file("checkpoints/step=6.ckpt"));
  CHECK(single.error.empty());
  CHECK(single.global_step == 16);
}

TEST_CASE("a parameter without a gradient is an error at the next step, unless DDP looks for it",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("unused", dir);
  const RankResult refused = read_result(dir.file("rank0.txt"));
  CHECK_THAT(refused.error, Catch::Contains("rank 0 of 2: DDP could not average"));
  CHECK_THAT(refused.error, Catch::Contains("find_unused_parameters(true)"));
  CHECK(refused.global_step == 1);  // the second step's check finds the first step unfinished

  run_ranks_cleanly("unused_allowed", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 16);
  CHECK(rank0.weights == rank1.weights);
}

TEST_CASE("a checkpoint monitoring a metric that differs per rank saves alike on every rank",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("monitor", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 16);
}

namespace {
// The two ranks of the float16 `mode` (its gradients averaged by some fp16 hook), checked against
// one process with both ranks' batches: every rank steps alike, close to one process but not
// equal (float16 keeps about 3 decimal digits: after 16 steps at lr 0.05, 1.5e-5 with
// Fp16AllGatherHook, 2.2e-5 with LibTorch's float16 all-reduce).
std::pair<RankResult, RankResult> fp16_ranks_against_one_process(const std::string& mode) {
  testing::TempDir dir;
  run_ranks_cleanly(mode, dir);
  auto ranks = read_clean_ranks(dir);
  RegressionModule single_module;
  const RankResult single = fit_and_collect(single_module, 8, quiet_options(1));
  CHECK(ranks.first.weights == ranks.second.weights);
  const double largest = largest_difference(ranks.first.weights, single.weights);
  CAPTURE(largest);
  CHECK(largest > 0.0);
  CHECK(largest < 1e-3);
  return ranks;
}
}  // namespace

TEST_CASE("fp16 gradients: every rank steps alike, close to one process", "[ddp]") {
  // On Gloo: Fp16AllGatherHook; with the bucket view the gradients are views into the bucket
  // the hook writes the average into.
  const bool gradient_as_bucket_view = GENERATE(false, true);
  CAPTURE(gradient_as_bucket_view);
  const auto [rank0, rank1] =
      fp16_ranks_against_one_process(gradient_as_bucket_view ? "fp16+view" : "fp16");
  // trainbus's all-gather hook (two ranks on Gloo: gradient_hook_for), registered with the
  // Reducer (its Logger's comm_hook) and run: 16 steps of one bucket.
  for (const RankResult* rank : {&rank0, &rank1}) {
    CHECK(rank->metrics.count("ddp/comm_hook/fp16_all_gather") == 1);
    CHECK(rank->metrics.at("ddp/fp16_all_gather_buckets") == 16.0);
  }
}

TEST_CASE(
    "fp16 gradients by LibTorch's float16 all-reduce: every rank steps alike, close to one "
    "process",
    "[ddp]") {
  // GradientCompression::kFp16AllReduce: c10d's FP16CompressCommHook on Gloo (what kFp16 is
  // from 3 ranks on, and on NCCL); with the bucket view it copies the average into the bucket.
  const bool gradient_as_bucket_view = GENERATE(false, true);
  CAPTURE(gradient_as_bucket_view);
  const auto [rank0, rank1] = fp16_ranks_against_one_process(
      gradient_as_bucket_view ? "fp16_all_reduce+view" : "fp16_all_reduce");
  // LibTorch's hook, registered with the Reducer (its Logger's comm_hook), not trainbus's.
  for (const RankResult* rank : {&rank0, &rank1}) {
    CHECK(rank->metrics.count("ddp/comm_hook/fp16_all_reduce") == 1);
    CHECK(rank->metrics.count("ddp/comm_hook/fp16_all_gather") == 0);
    CHECK(rank->metrics.at("ddp/fp16_all_gather_buckets") == 0.0);
  }
}

TEST_CASE("without the per-batch stop agreement, a Timer stops every rank when rank 0's time is up",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("timer_without_agreement", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step > 0);
  CHECK(rank0.global_step < 160);
  CHECK(rank1.global_step == rank0.global_step);
  CHECK(rank0.stop_reasons.rfind("Timer: Time limit reached", 0) == 0);
  CHECK(rank1.stop_reasons.rfind("Timer: Time limit reached", 0) == 0);
  CHECK(rank0.weights == rank1.weights);
}

TEST_CASE("without the per-batch stop agreement, a stop asked at validation on one rank stops all",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("validation_stop_without_agreement", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank1.global_step == 8);  // the first epoch's 8 steps, not 4 epochs'
  CHECK(rank0.global_step == 8);
  CHECK(rank1.stop_reasons == "rank 1 at validation;");
  CHECK(rank0.stop_reasons == "a stop was requested on another rank;");
  CHECK(rank0.weights == rank1.weights);
}

TEST_CASE("a loader that splits its own share again is refused on every rank, saying what to fix",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("resplit", dir);
  for (const char* file : {"rank0.txt", "rank1.txt"}) {
    const RankResult rank = read_result(dir.file(file));
    CHECK_THAT(rank.error, Catch::Contains("training batches: 8, then 7"));
    CHECK_THAT(rank.error,
               Catch::Contains("DataLoader::set_distributed must split the whole data each time"));
  }
}

TEST_CASE("BatchNorm statistics: after a fit every rank holds rank 0's", "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("batchnorm", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 16);
  CHECK(rank0.weights == rank1.weights);
  // running_mean, running_var (16 each), num_batches_tracked: rank 0's on both, as DDP's
  // broadcast_buffers leaves them (rank 0's before each forward, validation's too).
  REQUIRE(rank0.buffers.size() == 33);
  CHECK(rank0.buffers == rank1.buffers);
  CHECK(rank0.buffers.back() == 16.0);  // one update a training step
  CHECK(std::vector<double>(rank0.buffers.begin(), rank0.buffers.begin() + 16) !=
        std::vector<double>(16, 0.0));  // trained: no longer the initial mean
  // Validation ran the same module on both ranks: one reduced val_loss.
  CHECK(rank0.val_loss == rank1.val_loss);
}

TEST_CASE("gradients in several buckets: every rank steps alike, as one process with batch 2B",
          "[ddp]") {
  // The parameters do not fit DDP's first bucket of 1 MiB; with bucket_cap_mb 0.05 the rest
  // take two more.
  REQUIRE(RegressionModule(kWideWidth).flat_weights().numel() * 4 > (int64_t{1} << 20));
  testing::TempDir dir;
  run_ranks_cleanly("buckets", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  RegressionModule single_module(kWideWidth);
  const RankResult single = fit_and_collect(single_module, 8, quiet_options(1));
  REQUIRE(single.error.empty());
  CHECK(rank0.weights == rank1.weights);
  const double largest = largest_difference(rank0.weights, single.weights);
  CHECK(largest < 1e-5);
  REQUIRE(rank0.losses.size() == single.losses.size());
  for (size_t i = 0; i < single.losses.size(); ++i)
    CHECK((rank0.losses[i] + rank1.losses[i]) / 2 == Approx(single.losses[i]).margin(1e-5));
  // The first step ran with three buckets; after it the Reducer rebuilt them in the order
  // backward produced the gradients, the first of 1 MiB (as PyTorch's DDP): hidden.weight
  // (1 MiB) comes last, so its 4 gradient tensors now travel in one all-reduce, not one each.
  CHECK(rank0.metrics.at("ddp/buckets") == 1);
  CHECK(rank0.metrics.at("ddp/backward_compute_ns") > 0);
  // No hook: c10d's float32 all-reduce.
  CHECK(rank0.metrics.count("ddp/comm_hook/float32_all_reduce") == 1);
  CHECK(rank0.metrics.at("ddp/fp16_all_gather_buckets") == 0);
}

TEST_CASE("EarlyStopping on one rank stops every rank at the same epoch", "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("earlystop", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  // Rank 1's rank_trend did not improve in epoch 1: both end after it (2 epochs of 8 steps),
  // not after max_epochs 4, as Lightning's EarlyStopping (reduce_boolean_decision) does.
  CHECK(rank1.global_step == 16);
  CHECK(rank0.global_step == 16);
  CHECK_THAT(rank1.stop_reasons, Catch::StartsWith("EarlyStopping: "));
  CHECK(rank0.stop_reasons == "a stop was requested on another rank;");
  CHECK(rank0.weights == rank1.weights);
}

namespace {

// A strategy of one's own on one process: notes every backward the Trainer asks it for.
class BackwardNotingStrategy final : public distributed::Strategy {
 public:
  std::string_view name() const noexcept override { return "noting"; }
  const distributed::DistributedEnvironment& environment() const noexcept override {
    return environment_;
  }
  void backward(const at::Tensor& loss, bool synchronize) override {
    synchronized.push_back(synchronize);
    Strategy::backward(loss, synchronize);
  }
  std::vector<bool> synchronized;

 private:
  distributed::DistributedEnvironment environment_;
};

}  // namespace

TEST_CASE("backward runs through the strategy, which says when gradients are averaged", "[ddp]") {
  // As Lightning's strategy.backward: the Trainer's automatic optimization asks the strategy to
  // run backward, synchronizing only on the batch that steps (DDP's no_sync while accumulating).
  auto strategy = std::make_shared<BackwardNotingStrategy>();
  RegressionModule module;
  RegressionData data(8);  // 8 batches an epoch
  Trainer trainer(quiet_options(2).max_epochs(1).strategy(strategy));
  trainer.fit(module, data);
  CHECK(strategy->synchronized ==
        std::vector<bool>{false, true, false, true, false, true, false, true});
  CHECK(trainer.global_step() == 4);
}

// ---- Runs of the "ddp child rank, core" modes below: each rank also writes named lists of
// numbers ("extra<rank>.txt") beside its RankResult. ----
namespace {

using Extras = std::map<std::string, std::vector<double>>;

void write_extras(const std::string& file, const Extras& extras) {
  std::ofstream out(file);
  out.precision(17);
  for (const auto& [name, values] : extras) {
    out << name;
    for (double value : values) out << " " << value;
    out << "\n";
  }
}

Extras read_extras(const std::string& file) {
  std::ifstream in(file);
  REQUIRE(in.good());
  Extras extras;
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string name;
    fields >> name;
    std::vector<double>& values = extras[name];
    for (double value; fields >> value;) values.push_back(value);
  }
  return extras;
}

// RegressionModule with a buffer, as BatchNorm's running statistics: what DDP broadcasts.
class BufferedModule : public RegressionModule {
 public:
  BufferedModule() { counter = register_buffer("counter", torch::zeros({1})); }
  at::Tensor counter;
};

// Before each backward: notes the buffer (rank 0's if it was just broadcast), then moves it by
// 1 + rank, so that every rank's differs until the next broadcast. After each backward: notes
// the sum of the gradients (the same on every rank only once they were averaged).
class BufferAndGradientNotes : public Callback {
 public:
  void on_before_backward(Trainer& trainer, Module& module, const at::Tensor&) override {
    auto& buffered = dynamic_cast<BufferedModule&>(module);
    buffers.push_back(buffered.counter.item<double>());
    torch::NoGradGuard no_grad;
    buffered.counter += 1.0 + trainer.global_rank();
  }
  void on_after_backward(Trainer&, Module& module) override {
    double sum = 0.0;
    for (const auto& parameter : module.parameters()) sum += parameter.grad().sum().item<double>();
    gradient_sums.push_back(sum);
  }
  std::vector<double> buffers, gradient_sums;
};

// 32 -> 16 -> 16 -> 16 -> 1 where the middle two layers share one weight tensor (registered
// twice, as a decoder tied to an encoder): one parameter under two names.
class TiedModule : public RegressionModule {
 public:
  TiedModule() {
    torch::manual_seed(6);
    square = register_module("square", torch::nn::Linear(16, 16));
    tied = register_parameter("tied", square->weight);
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    const at::Tensor h = torch::relu(square->forward(torch::relu(hidden->forward(batch.data))));
    const at::Tensor prediction = out->forward(torch::relu(torch::linear(h, tied)));
    at::Tensor value = torch::nn::functional::mse_loss(prediction, batch.target);
    losses.push_back(value.item<double>());
    return value;
  }
  OptimizerConfig configure_optimizers() override {
    // LibTorch's parameters() lists the tied tensor twice; the optimizer takes it once.
    std::vector<at::Tensor> unique;
    for (const auto& parameter : parameters()) {
      const bool seen = std::any_of(unique.begin(), unique.end(),
                                    [&](const at::Tensor& p) { return p.is_same(parameter); });
      if (!seen) unique.push_back(parameter);
    }
    return std::make_shared<torch::optim::SGD>(unique, torch::optim::SGDOptions(0.05));
  }
  torch::nn::Linear square{nullptr};
  at::Tensor tied;
};

// Manual optimization, as the mode says: "core_manual", one optimizer and one manual_backward a
// step; "core_manual_twice", one optimizer stepped twice a batch (two backward passes over every
// parameter); "core_manual_two" (and "_strict", without find_unused_parameters), one optimizer
// per layer, each toggled and stepped in turn as a GAN's generator and discriminator: two
// backward passes a step, each leaving the other layer's parameters without a gradient.
class ManualModule : public RegressionModule {
 public:
  explicit ManualModule(const std::string& mode)
      : two_optimizers_(mode.rfind("core_manual_two", 0) == 0),
        passes_(mode == "core_manual_twice" ? 2 : 1) {
    automatic_optimization(false);
  }
  StepOutput training_step(const Batch& batch, int64_t) override {
    std::vector<LightningOptimizer> all = optimizers();
    at::Tensor first_loss;
    for (int pass = 0; pass < passes_; ++pass) {
      for (LightningOptimizer& opt : all) {
        if (two_optimizers_) toggle_optimizer(opt);
        const at::Tensor value = loss(batch);
        if (!first_loss.defined()) first_loss = value.detach();
        opt.zero_grad();
        manual_backward(value);
        opt.step();
        if (two_optimizers_) untoggle_optimizer(opt);
      }
    }
    losses.push_back(first_loss.item<double>());
    return first_loss;
  }
  OptimizerConfig configure_optimizers() override {
    OptimizerConfig config;
    if (!two_optimizers_) {
      config.optimizers = {
          std::make_shared<torch::optim::SGD>(parameters(), torch::optim::SGDOptions(lr))};
    } else {
      config.optimizers = {
          std::make_shared<torch::optim::SGD>(hidden->parameters(), torch::optim::SGDOptions(lr)),
          std::make_shared<torch::optim::SGD>(out->parameters(), torch::optim::SGDOptions(lr))};
    }
    return config;
  }

 private:
  bool two_optimizers_;
  int passes_;
};

// Calls estimated_stepping_batches() in setup on rank 0 only (before the fit loads its data),
// and on every rank at on_fit_start.
class EstimateOnRankZero : public Callback {
 public:
  void setup(Trainer& trainer, Module&, Stage) override {
    if (trainer.global_rank() == 0) in_setup = trainer.estimated_stepping_batches();
    // Rank 1's default generator moves on before its loaders draw their shuffle seed: only the
    // ranks' agreement on rank 0's seed keeps their shuffles alike.
    if (trainer.global_rank() == 1) (void)torch::rand({3});
  }
  void on_fit_start(Trainer& trainer, Module&) override {
    at_fit_start = trainer.estimated_stepping_batches();
  }
  int64_t in_setup = -1;
  int64_t at_fit_start = -1;
};

// Counts the checkpoint hooks that run on its rank.
class SaveHookCounter : public Callback {
 public:
  StateDict state_dict() const override {
    ++state_dicts;
    StateDict state;
    state.insert("state_dicts", state_dicts);
    return state;
  }
  void on_save_checkpoint(Trainer&, Module&, CheckpointData&) override { ++on_saves; }
  mutable int64_t state_dicts = 0;
  int64_t on_saves = 0;
};

}  // namespace

// One rank of a two-rank job, for the modes that start with "core_".
TEST_CASE("ddp child rank, core", "[.ddp-child]") {
  const std::string mode = std::getenv("TRAINBUS_TEST_DDP_MODE");
  if (mode.rfind("core_", 0) != 0) return;  // the modes of "ddp child rank"
  const std::string dir = testing::test_child_dir();
  auto strategy = std::make_shared<distributed::DDPStrategy>(
      distributed::environment_from_variables(),
      distributed::DDPOptions()
          .timeout(std::chrono::seconds(60))
          .find_unused_parameters(mode == "core_tied_unused" || mode == "core_manual_two"));
  const int rank = strategy->global_rank();
  Extras extras;
  std::unique_ptr<RegressionModule> module;
  std::vector<std::shared_ptr<Callback>> callbacks;
  TrainerOptions options = quiet_options(1).strategy(strategy);
  auto notes = std::make_shared<BufferAndGradientNotes>();
  auto estimate = std::make_shared<EstimateOnRankZero>();
  auto counter = std::make_shared<SaveHookCounter>();
  if (mode == "core_accumulate") {
    module = std::make_unique<BufferedModule>();
    options.accumulate_grad_batches(2);
    callbacks.push_back(notes);
  } else if (mode == "core_tied" || mode == "core_tied_unused") {
    module = std::make_unique<TiedModule>();
  } else if (mode.rfind("core_manual", 0) == 0) {
    module = std::make_unique<ManualModule>(mode);
  } else if (mode == "core_estimate") {
    module = std::make_unique<RegressionModule>();
    callbacks.push_back(estimate);
  } else if (mode == "core_save_hooks") {
    module = std::make_unique<RegressionModule>();
    options.enable_checkpointing(true).max_epochs(1);
    callbacks.push_back(
        std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions()
                                                         .dirpath(dir + "/checkpoints")
                                                         .filename("{step}")
                                                         .every_n_train_steps(3)
                                                         .save_top_k(-1)));
    callbacks.push_back(counter);
  } else {
    FAIL("unknown mode " << mode);
  }
  module->sync_train_loss = false;
  const RankResult result = fit_and_collect(*module, 4, options, callbacks);
  extras["buffers"] = notes->buffers;
  extras["gradient_sums"] = notes->gradient_sums;
  extras["buffer_broadcasts"] = {static_cast<double>(strategy->statistics().buffer_broadcasts)};
  extras["gradient_syncs"] = {static_cast<double>(strategy->statistics().gradient_syncs)};
  extras["gradient_elements"] = {static_cast<double>(strategy->statistics().gradient_elements)};
  extras["estimated"] = {static_cast<double>(estimate->in_setup),
                         static_cast<double>(estimate->at_fit_start)};
  extras["save_hooks"] = {static_cast<double>(counter->state_dicts),
                          static_cast<double>(counter->on_saves)};
  write_extras(dir + "/extra" + std::to_string(rank) + ".txt", extras);
  write_result(dir + "/rank" + std::to_string(rank) + ".txt", result);
}

TEST_CASE("under accumulation, gradients are averaged once per step, buffers sent once per step",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("core_accumulate", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  const Extras extras0 = read_extras(dir.file("extra0.txt"));
  const Extras extras1 = read_extras(dir.file("extra1.txt"));
  CHECK(rank0.global_step == 8);  // 16 batches, accumulated in pairs
  CHECK(rank0.weights == rank1.weights);

  // DDP's no_sync: the first batch of a pair keeps its gradients on its rank (they differ), the
  // second averages the pair's sum across the ranks (the same on both): one all-reduce a step.
  const std::vector<double>& sums0 = extras0.at("gradient_sums");
  const std::vector<double>& sums1 = extras1.at("gradient_sums");
  REQUIRE(sums0.size() == 16);
  REQUIRE(sums1.size() == 16);
  for (size_t batch = 0; batch < sums0.size(); ++batch) {
    CAPTURE(batch);
    if (batch % 2 == 0) CHECK(sums0[batch] != sums1[batch]);
    if (batch % 2 == 1) CHECK(sums0[batch] == sums1[batch]);
  }
  CHECK(extras0.at("gradient_syncs") == std::vector<double>{8});
  CHECK(extras1.at("gradient_syncs") == std::vector<double>{8});

  // As DDP's forward (require_forward_param_sync): rank 0's buffers before the first batch of
  // each pair (after a step that averaged), not before the second (after a no_sync step). Rank 0
  // adds 1 a batch, rank 1 adds 2: rank 1 sees rank 0's value, then its own plus 2.
  std::vector<double> expected0, expected1;
  for (int batch = 0; batch < 16; ++batch) {
    expected0.push_back(batch);
    expected1.push_back(batch % 2 == 0 ? batch : batch + 1);
  }
  CHECK(extras0.at("buffers") == expected0);
  CHECK(extras1.at("buffers") == expected1);
  CHECK(extras0.at("buffer_broadcasts") == std::vector<double>{8});
  CHECK(extras1.at("buffer_broadcasts") == std::vector<double>{8});
}

TEST_CASE("a weight shared by two layers is averaged once: ranks stay alike, as one process",
          "[ddp]") {
  // Also when DDP walks the loss's graph for parameters without a gradient.
  const std::string mode = GENERATE("core_tied", "core_tied_unused");
  CAPTURE(mode);
  testing::TempDir dir;
  run_ranks_cleanly(mode, dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 16);
  CHECK(rank0.weights == rank1.weights);
  // hidden 32x16+16, square 16x16+16 (its weight also "tied"), out 16+1: the shared weight is
  // averaged once.
  CHECK(read_extras(dir.file("extra0.txt")).at("gradient_elements") ==
        std::vector<double>{528 + 272 + 17});

  TiedModule single_module;
  single_module.sync_train_loss = false;
  const RankResult single = fit_and_collect(single_module, 8, quiet_options(1));
  REQUIRE(single.error.empty());
  REQUIRE(rank0.weights.size() == single.weights.size());
  for (size_t i = 0; i < single.weights.size(); ++i)
    REQUIRE(rank0.weights[i] == Approx(single.weights[i]).margin(1e-5));
  REQUIRE(rank0.losses.size() == single.losses.size());
  for (size_t i = 0; i < single.losses.size(); ++i)
    CHECK((rank0.losses[i] + rank1.losses[i]) / 2 == Approx(single.losses[i]).margin(1e-5));
}

TEST_CASE("manual optimization: every manual_backward averages, ranks train as one process",
          "[ddp]") {
  // As Lightning's DDP: each manual_backward averages the gradients, also a second one in a step
  // (after the first step, its buckets are rebuilt before it: a collective mid-step); with two
  // toggled optimizers (a GAN's pattern) the parameters one pass leaves without a gradient need
  // find_unused_parameters.
  const std::string mode = GENERATE("core_manual", "core_manual_twice", "core_manual_two");
  CAPTURE(mode);
  testing::TempDir dir;
  run_ranks_cleanly(mode, dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  const double steps = mode == "core_manual" ? 16 : 32;  // every optimizer step counts
  CHECK(rank0.global_step == steps);
  CHECK(rank0.weights == rank1.weights);
  CHECK(read_extras(dir.file("extra0.txt")).at("gradient_syncs") == std::vector<double>{steps});

  ManualModule single_module(mode);
  single_module.sync_train_loss = false;
  const RankResult single = fit_and_collect(single_module, 8, quiet_options(1));
  REQUIRE(single.error.empty());
  REQUIRE(rank0.weights.size() == single.weights.size());
  for (size_t i = 0; i < single.weights.size(); ++i)
    REQUIRE(rank0.weights[i] == Approx(single.weights[i]).margin(1e-5));
}

TEST_CASE("manual optimization: toggled optimizers without find_unused_parameters say what to do",
          "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("core_manual_two_strict", dir);
  for (const char* file : {"rank0.txt", "rank1.txt"}) {
    const RankResult rank = read_result(dir.file(file));
    INFO(rank.error);
    CHECK_THAT(rank.error, Catch::Contains("DDP could not average the previous backward's "
                                           "gradients") &&
                               Catch::Contains("--ddp-find-unused-parameters"));
  }
}

TEST_CASE(
    "estimated_stepping_batches() on one rank only, before the fit loads its data, is no "
    "collective",
    "[ddp]") {
  testing::TempDir dir;
  run_ranks_cleanly("core_estimate", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  // 64 samples, 2 ranks, batches of 4: 8 batches an epoch, 2 epochs.
  CHECK(read_extras(dir.file("extra0.txt")).at("estimated") == std::vector<double>{16, 16});
  CHECK(read_extras(dir.file("extra1.txt")).at("estimated") == std::vector<double>{-1, 16});
  CHECK(rank0.global_step == 16);
  CHECK(rank0.weights == rank1.weights);
  // The ranks still shuffle alike: together they train as the one process of the first test.
  RegressionModule single_module;
  const RankResult single = fit_and_collect(single_module, 8, quiet_options(1));
  for (size_t i = 0; i < single.weights.size(); ++i)
    REQUIRE(rank0.weights[i] == Approx(single.weights[i]).margin(1e-5));
}

TEST_CASE("every rank runs the checkpoint hooks of a save, rank 0 alone writes", "[ddp]") {
  // As Lightning's Trainer.save_checkpoint: dump_checkpoint (state_dict, on_save_checkpoint) on
  // every rank, strategy.save_checkpoint writes on rank 0 only, then a barrier.
  testing::TempDir dir;
  run_ranks_cleanly("core_save_hooks", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.global_step == 8);
  // Saves at steps 3 and 6: the callback's state_dict and on_save_checkpoint twice on each rank.
  CHECK(read_extras(dir.file("extra0.txt")).at("save_hooks") == std::vector<double>{2, 2});
  CHECK(read_extras(dir.file("extra1.txt")).at("save_hooks") == std::vector<double>{2, 2});
  std::vector<std::string> written;
  for (const auto& entry : std::filesystem::directory_iterator(dir.file("checkpoints")))
    written.push_back(entry.path().filename().string());
  std::sort(written.begin(), written.end());
  CHECK(written == std::vector<std::string>{"step=3.ckpt", "step=6.ckpt"});
}

// ---- Overlap: whether a bucket's all-reduce starts while backward still computes. ----
namespace {

// RegressionModule with a 512 x 512 layer ("middle") between its two: 32 -> 512 -> 512 -> 1,
// 1.07 MiB of gradients. Backward produces out's (2 KiB), then middle's (1 MiB), then
// hidden's (66 KiB): once the Reducer has ordered its buckets that way (after the first step),
// out's and middle's fill DDP's first bucket of 1 MiB and hidden's, the first layer's, are a
// second one. Before that, the buckets follow the parameters' order (DDPStrategy::setup_module):
// at the first step middle.bias alone is bucket 0, and every other gradient, out's with hidden's,
// bucket 1.
class LayeredModule : public RegressionModule {
 public:
  LayeredModule() : RegressionModule(kLayeredWidth) {
    middle = register_module("middle", torch::nn::Linear(kLayeredWidth, kLayeredWidth));
    // No all-reduce of the loss; the stop agreement's all-reduce of each batch (after the step)
    // stays, outside backward.
    sync_train_loss = false;
  }
  at::Tensor loss(const Batch& batch) override {
    const at::Tensor h = torch::relu(middle->forward(torch::relu(hidden->forward(batch.data))));
    return torch::nn::functional::mse_loss(out->forward(torch::relu(h)), batch.target);
  }
  static constexpr int64_t kLayeredWidth = 512;
  torch::nn::Linear middle{nullptr};
};

// What a rank of the overlap mode notes, in the order it happens on the thread that runs
// backward (on the CPU, the training thread, which runs the whole autograd graph): each
// bucket's launch (the comm hook, called when the Reducer starts the bucket's all-reduce) and
// the moment the first layer's weight gets its gradient (a tensor hook: it runs when backward
// has computed that gradient, before it is accumulated). Autograd's order on one thread is
// fixed by the graph, not by timing: the notes are the same on every run.
struct OverlapNotes {
  enum Kind { kLaunch = 0, kFirstLayerGradient = 1 };
  struct Note {
    int64_t step;
    Kind kind;
    int64_t bucket = -1;             // kLaunch: the bucket's index
    bool holds_last_layer = false;   // kLaunch: whether out.weight is in it
    bool holds_first_layer = false;  // kLaunch: whether hidden.weight is in it
  };
  void launched(const c10d::GradBucket& bucket) {
    const auto holds = [&](const at::Tensor& weight) {
      const std::vector<at::Tensor> parameters = bucket.getParameters();
      return std::any_of(parameters.begin(), parameters.end(),
                         [&](const at::Tensor& parameter) { return parameter.is_same(weight); });
    };
    const std::lock_guard<std::mutex> lock(mutex);
    notes.push_back({step, kLaunch, static_cast<int64_t>(bucket.getIndex()), holds(last_weight),
                     holds(first_weight)});
  }
  void first_layer_gradient() {
    const std::lock_guard<std::mutex> lock(mutex);
    notes.push_back({step, kFirstLayerGradient});
  }
  // As Extras: five numbers a note.
  std::vector<double> flattened() {
    const std::lock_guard<std::mutex> lock(mutex);
    std::vector<double> flat;
    for (const Note& note : notes) {
      flat.insert(flat.end(),
                  {static_cast<double>(note.step), static_cast<double>(note.kind),
                   static_cast<double>(note.bucket), static_cast<double>(note.holds_last_layer),
                   static_cast<double>(note.holds_first_layer)});
    }
    return flat;
  }
  static std::vector<Note> from_flattened(const std::vector<double>& flat) {
    std::vector<Note> notes;
    for (size_t i = 0; i + 4 < flat.size(); i += 5) {
      notes.push_back({static_cast<int64_t>(flat[i]), static_cast<Kind>(flat[i + 1]),
                       static_cast<int64_t>(flat[i + 2]), flat[i + 3] != 0.0, flat[i + 4] != 0.0});
    }
    return notes;
  }

  std::mutex mutex;
  std::atomic<int64_t> step{0};  // the training step under way, from 1
  at::Tensor first_weight, last_weight;
  std::vector<Note> notes;
};

// Tells OverlapNotes which step is under way.
class StepNotes : public Callback {
 public:
  explicit StepNotes(std::shared_ptr<OverlapNotes> notes) : notes_(std::move(notes)) {}
  void on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) override {
    notes_->step = trainer.global_step() + 1;
  }

 private:
  std::shared_ptr<OverlapNotes> notes_;
};

}  // namespace

// One rank of the overlap mode: LayeredModule (DDP's default buckets: 1 MiB first, then 25 MiB),
// and a comm hook that notes each bucket's launch and then all-reduces it as the Reducer would
// (distributed::allreduce_average). The hook copies what it notes of the bucket during the call.
TEST_CASE("ddp child rank, overlap", "[.ddp-child]") {
  const std::string mode = std::getenv("TRAINBUS_TEST_DDP_MODE");
  if (mode != "overlap") return;
  const std::string dir = testing::test_child_dir();
  auto notes = std::make_shared<OverlapNotes>();
  auto strategy = std::make_shared<distributed::DDPStrategy>(
      distributed::environment_from_variables(),
      distributed::DDPOptions()
          .timeout(std::chrono::seconds(60))
          .comm_hook([notes](c10d::ProcessGroup& group, c10d::GradBucket& bucket) {
            notes->launched(bucket);
            return distributed::allreduce_average(group, bucket);
          }));
  const int rank = strategy->global_rank();
  LayeredModule module;
  notes->first_weight = module.hidden->weight;
  notes->last_weight = module.out->weight;
  module.hidden->weight.register_hook(
      [notes](const at::Tensor&) { notes->first_layer_gradient(); });
  const RankResult result = fit_and_collect(module, 4, quiet_options(1).strategy(strategy),
                                            {std::make_shared<StepNotes>(notes)});
  const distributed::DDPStatistics& statistics = strategy->statistics();
  Extras extras;
  extras["notes"] = notes->flattened();
  extras["statistics"] = {static_cast<double>(statistics.buckets),
                          static_cast<double>(statistics.backward_compute_ns),
                          static_cast<double>(statistics.backward_comm_ns),
                          static_cast<double>(statistics.backward_compute_comm_overlap_ns)};
  // The hook's name in the Reducer's Logger: a user's is "user".
  extras["comm_hook_user"] = {statistics.comm_hook_name == distributed::kUserCommHookName ? 1.0
                                                                                          : 0.0};
  write_extras(dir + "/extra" + std::to_string(rank) + ".txt", extras);
  write_result(dir + "/rank" + std::to_string(rank) + ".txt", result);
}

TEST_CASE(
    "after the buckets' rebuild, the last layer's bucket starts its all-reduce before backward "
    "computes the first layer's gradient",
    "[ddp]") {
  // The issue's "overlapped with the rest of backward where LibTorch allows", shown by order, not
  // by time: in every step after the first (the Reducer rebuilds its buckets before the
  // second), the bucket that holds the last layer's gradients starts its all-reduce before
  // backward has computed the first layer's weight gradient, and the gradients travel in at
  // least two buckets. A model whose gradients fit DDP's first bucket of 1 MiB (the "buckets"
  // test's after its rebuild, the main job's MLP) has one bucket, sent after the last gradient:
  // nothing overlaps there.
  testing::TempDir dir;
  run_ranks_cleanly("overlap", dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  // The hook's all-reduce averages as the Reducer's own: the ranks step alike, as one process
  // with their two batches.
  LayeredModule single_module;
  const RankResult single = fit_and_collect(single_module, 8, quiet_options(1));
  REQUIRE(single.error.empty());
  CHECK(rank0.weights == rank1.weights);
  const double largest = largest_difference(rank0.weights, single.weights);
  CHECK(largest < 1e-5);

  for (int rank = 0; rank < kWorld; ++rank) {
    const Extras extras = read_extras(dir.file("extra" + std::to_string(rank) + ".txt"));
    CHECK(extras.at("comm_hook_user") == std::vector<double>{1.0});
    const auto notes = OverlapNotes::from_flattened(extras.at("notes"));
    std::map<int64_t, std::vector<OverlapNotes::Note>> steps;
    for (const auto& note : notes) steps[note.step].push_back(note);
    // What happened, step by step, for a failure to show: "L0*" the launch of bucket 0, which
    // holds the last layer's weight (*) or the first's (^); "G" the first layer's gradient.
    std::ostringstream timeline;
    for (const auto& [step, in_step] : steps) {
      timeline << "step " << step << ":";
      for (const auto& note : in_step) {
        if (note.kind == OverlapNotes::kFirstLayerGradient) {
          timeline << " G";
        } else {
          timeline << " L" << note.bucket << (note.holds_last_layer ? "*" : "")
                   << (note.holds_first_layer ? "^" : "");
        }
      }
      timeline << "\n";
    }
    INFO("rank " << rank << ":\n" << timeline.str());
    REQUIRE(steps.size() == 16);  // 2 epochs of 8 steps, each averaged
    // The steps after the rebuild whose gradients travelled in one bucket, and those whose last
    // layer's bucket started after the first layer's gradient: none of either.
    std::vector<int64_t> one_bucket, not_overlapped;
    for (const auto& [step, in_step] : steps) {
      int64_t launches = 0, gradient_at = -1, last_layer_launched_at = -1;
      for (size_t i = 0; i < in_step.size(); ++i) {
        const auto& note = in_step[i];
        if (note.kind == OverlapNotes::kFirstLayerGradient) {
          gradient_at = static_cast<int64_t>(i);
          continue;
        }
        CHECK(note.bucket == launches);  // every bucket once, in their order
        ++launches;
        if (note.holds_last_layer) last_layer_launched_at = static_cast<int64_t>(i);
      }
      REQUIRE(gradient_at >= 0);
      REQUIRE(last_layer_launched_at >= 0);
      if (step == 1) {
        // Before the rebuild the last layer's gradients share the first layer's bucket: the
        // notes tell the two orders apart.
        CHECK(launches == 2);
        CHECK(last_layer_launched_at > gradient_at);
        continue;
      }
      if (launches < 2) one_bucket.push_back(step);
      if (last_layer_launched_at > gradient_at) not_overlapped.push_back(step);
    }
    CHECK(one_bucket == std::vector<int64_t>{});
    CHECK(not_overlapped == std::vector<int64_t>{});
    // DDPStatistics for this model. buckets: the rebuilt ones. The times are c10d's Logger's
    // averages over the steps its Reducer samples (LibTorch 1.13: should_collect_runtime_stats,
    // the first 10, then every 100th; so steps 1 to 10 of these 16, step 1's buckets being the
    // ones before the rebuild), each a difference of wall-clock stamps: backward's compute
    // from prepare_for_backward (just before backward) to the callback at the end of backward,
    // the communication from the first bucket's launch to the end of the wait for every
    // bucket, and the "overlap" from the first bucket's launch to the end of backward's
    // compute. That overlap is above 0 with one bucket too (its launch, at the last gradient,
    // precedes the end of backward by the engine's last steps: about 0.09 ms here with a first
    // bucket of 64 MiB, against 0.43 ms with these two), and it is a time: the order above is
    // what shows that an all-reduce runs beside the compute of earlier layers.
    const std::vector<double>& statistics = extras.at("statistics");
    REQUIRE(statistics.size() == 4);
    CHECK(statistics[0] == 2);
    CHECK(statistics[1] > 0);
    CHECK(statistics[2] > 0);
    CHECK(statistics[3] > 0);
    UNSCOPED_INFO("rank " << rank << " DDPStatistics: buckets " << statistics[0]
                          << ", backward_compute_ns " << statistics[1] << ", backward_comm_ns "
                          << statistics[2] << ", backward_compute_comm_overlap_ns "
                          << statistics[3]);
  }
}

TEST_CASE("DDPOptions refuses a comm hook beside a gradient compression, which is a hook itself",
          "[ddp]") {
  CHECK_THROWS_MATCHES(
      distributed::DDPStrategy(
          rank_of_two(0, 29500),
          distributed::DDPOptions()
              .gradient_compression(distributed::DDPOptions::GradientCompression::kFp16)
              .comm_hook(distributed::allreduce_average)),
      MisconfigurationError,
      Catch::Message("DDPOptions: comm_hook and a gradient_compression are both communication "
                     "hooks, and DDP takes one: compress the bucket in your hook, or leave one of "
                     "them out"));
}

// One rank of a "bad_hook_KIND" mode: a comm hook that breaks its contract in the way KIND says,
// at every bucket, without a collective (each rank fails on its own, in its first backward).
TEST_CASE("ddp child rank, bad hook", "[.ddp-child]") {
  const std::string mode = std::getenv("TRAINBUS_TEST_DDP_MODE");
  if (mode.rfind("bad_hook_", 0) != 0) return;
  const std::string kind = mode.substr(9);
  REQUIRE((kind == "throws" || kind == "misconfigured" || kind == "empty" || kind == "wrong_size" ||
           kind == "wrong_dtype"));
  const std::string dir = testing::test_child_dir();
  const auto completed = [](c10::TypePtr type, c10::IValue value) {
    auto future = c10::make_intrusive<c10::ivalue::Future>(std::move(type));
    future->markCompleted(std::move(value));
    return future;
  };
  distributed::CommHook hook = [kind, completed](c10d::ProcessGroup&, c10d::GradBucket& bucket) {
    const at::Tensor buffer = bucket.getBufferRef();
    if (kind == "throws") throw std::runtime_error("the hook failed on purpose");
    if (kind == "misconfigured") throw MisconfigurationError("the hook refuses on purpose");
    if (kind == "empty")
      return completed(c10::ListType::ofTensors(), c10::IValue(std::vector<at::Tensor>{}));
    if (kind == "wrong_size")
      return completed(c10::TensorType::get(), at::zeros({buffer.numel() + 1}, buffer.options()));
    return completed(c10::TensorType::get(), buffer.to(at::kDouble));  // wrong_dtype
  };
  auto strategy = std::make_shared<distributed::DDPStrategy>(
      distributed::environment_from_variables(),
      distributed::DDPOptions().timeout(std::chrono::seconds(60)).comm_hook(hook));
  const int rank = strategy->global_rank();
  RegressionModule module;
  module.sync_train_loss = false;
  const RankResult result = fit_and_collect(module, 4, quiet_options(1).strategy(strategy));
  write_result(dir + "/rank" + std::to_string(rank) + ".txt", result);
}

TEST_CASE("a comm hook that breaks its contract fails naming DDPOptions::comm_hook and the bucket",
          "[ddp]") {
  // What each rank's fit fails with, by how the hook breaks its contract. Each hook is wrong at
  // bucket 0, which the Reducer launches and reads first.
  const std::vector<std::pair<std::string, std::string>> expected{
      {"empty",
       "DDPOptions::comm_hook's future for gradient bucket 0 holds an empty list of tensors"},
      {"wrong_size", "DDPOptions::comm_hook's future for gradient bucket 0 holds a tensor of "},
      {"wrong_dtype", "DDPOptions::comm_hook's future for gradient bucket 0 holds a tensor of "},
      {"throws", "DDPOptions::comm_hook failed for gradient bucket 0: the hook failed on purpose"},
  };
  std::map<std::string, std::string> errors;
  for (const auto& [kind, text] : expected) {
    testing::TempDir dir;
    const std::vector<int> statuses = run_ranks("bad_hook_" + kind, dir.path().string());
    for (int rank = 0; rank < kWorld; ++rank) {
      INFO(kind << ", rank " << rank << ": wait status " << statuses[rank]);
      REQUIRE((WIFEXITED(statuses[rank]) && WEXITSTATUS(statuses[rank]) == 0));
      const RankResult result = read_result(dir.file("rank" + std::to_string(rank) + ".txt"));
      INFO("error: " << result.error);
      CHECK_THAT(result.error, Catch::Contains(text));
      CHECK(result.global_step == 0);
      errors[kind] = result.error;
    }
  }
  // The tensor's and the bucket's elements, types and devices are named.
  CHECK_THAT(errors["wrong_dtype"], Catch::Contains("of type Double") &&
                                        Catch::Contains("of type Float") && Catch::Contains("cpu"));
  // An error the hook means for the user (a MisconfigurationError, a DistributedError) passes
  // as it is.
  testing::TempDir misconfigured;
  run_ranks_cleanly("bad_hook_misconfigured", misconfigured);
  const RankResult refused = read_result(misconfigured.file("rank1.txt"));
  CHECK_THAT(refused.error, Catch::Contains("the hook refuses on purpose") &&
                                !Catch::Contains("comm_hook failed"));
}

namespace {

// The steps at which a comm hook was handed gradient bucket 0, by fit (1, 2): one per step of a
// fit, if the Reducer of that fit has the hook once.
struct BucketZeroLaunches {
  void launched(const c10d::GradBucket& bucket) {
    if (bucket.getIndex() != 0) return;
    const std::lock_guard<std::mutex> lock(mutex);
    steps[fit].push_back(static_cast<double>(step.load()));
  }
  std::mutex mutex;
  int fit = 0;                   // set between fits
  std::atomic<int64_t> step{0};  // the training step under way, from 1
  std::map<int, std::vector<double>> steps;
};

// At the start of each training step, tells BucketZeroLaunches which one it is; at the start of
// training (after DDPStrategy::setup_module), notes the statistics of the Reducer just built.
class RefitNotes : public Callback {
 public:
  RefitNotes(std::shared_ptr<BucketZeroLaunches> launches,
             std::shared_ptr<distributed::DDPStrategy> strategy)
      : launches_(std::move(launches)), strategy_(std::move(strategy)) {}
  void on_train_start(Trainer&, Module&) override {
    hook_at_start = strategy_->statistics().comm_hook_name;
    fp16_buckets_at_start = strategy_->statistics().fp16_all_gather_buckets;
  }
  void on_train_batch_start(Trainer& trainer, Module&, const Batch&, int64_t) override {
    launches_->step = trainer.global_step() + 1;
  }
  std::string hook_at_start;
  int64_t fp16_buckets_at_start = -1;

 private:
  std::shared_ptr<BucketZeroLaunches> launches_;
  std::shared_ptr<distributed::DDPStrategy> strategy_;
};

}  // namespace

// One rank of a "refit_KIND" mode: two fits of one module, each by a Trainer of its own, on one
// DDPStrategy (so two Reducers, each built by setup_module) whose comm hook KIND says:
// "refit_fp16", --ddp-fp16-gradients (GradientCompression::kFp16: Fp16AllGatherHook on Gloo with
// two ranks); "refit_hook", a DDPOptions::comm_hook that notes bucket 0's launches and averages
// as the Reducer would (distributed::allreduce_average). Extras: "fitN" = {global_step, the
// statistics' comm_hook_name is KIND's (1/0) and fp16_all_gather_buckets at the start of
// training, then after the fit}; "bucket0_fitN" = the steps at which the user hook got bucket 0.
TEST_CASE("ddp child rank, refit", "[.ddp-child]") {
  const std::string mode = std::getenv("TRAINBUS_TEST_DDP_MODE");
  if (mode.rfind("refit_", 0) != 0) return;
  const bool user_hook = mode == "refit_hook";
  REQUIRE((user_hook || mode == "refit_fp16"));
  const std::string dir = testing::test_child_dir();
  auto launches = std::make_shared<BucketZeroLaunches>();
  distributed::DDPOptions ddp_options = distributed::DDPOptions().timeout(std::chrono::seconds(60));
  if (user_hook) {
    ddp_options.comm_hook([launches](c10d::ProcessGroup& group, c10d::GradBucket& bucket) {
      launches->launched(bucket);
      return distributed::allreduce_average(group, bucket);
    });
  } else {
    ddp_options.gradient_compression(distributed::DDPOptions::GradientCompression::kFp16);
  }
  auto strategy = std::make_shared<distributed::DDPStrategy>(
      distributed::environment_from_variables(), std::move(ddp_options));
  const int rank = strategy->global_rank();
  const std::string expected_hook(
      user_hook ? distributed::kUserCommHookName
                : distributed::gradient_hook_name(distributed::GradientHook::kFp16AllGather));
  RegressionModule module;
  Extras extras;
  RankResult result;
  for (int fit = 1; fit <= 2 && result.error.empty(); ++fit) {
    {
      const std::lock_guard<std::mutex> lock(launches->mutex);
      launches->fit = fit;
    }
    const auto notes = std::make_shared<RefitNotes>(launches, strategy);
    result = fit_and_collect(module, 4, quiet_options(1).strategy(strategy), {notes});
    if (!result.error.empty()) result.error = "fit " + std::to_string(fit) + ": " + result.error;
    const distributed::DDPStatistics& statistics = strategy->statistics();
    extras["fit" + std::to_string(fit)] = {static_cast<double>(result.global_step),
                                           notes->hook_at_start == expected_hook ? 1.0 : 0.0,
                                           static_cast<double>(notes->fp16_buckets_at_start),
                                           statistics.comm_hook_name == expected_hook ? 1.0 : 0.0,
                                           static_cast<double>(statistics.fp16_all_gather_buckets)};
    const std::lock_guard<std::mutex> lock(launches->mutex);
    extras["bucket0_fit" + std::to_string(fit)] = launches->steps[fit];
  }
  write_extras(dir + "/extra" + std::to_string(rank) + ".txt", extras);
  write_result(dir + "/rank" + std::to_string(rank) + ".txt", result);
}

TEST_CASE(
    "a second fit on one DDPStrategy gives its new Reducer the comm hook once, and counts anew",
    "[ddp]") {
  // setup_module builds a Reducer for every fit (and again when the trainable parameters change
  // mid-fit), registering the hook each time: the second fit's Reducer has the hook once (one
  // launch of bucket 0 a step), is named in the statistics, and fp16_all_gather_buckets counts
  // that Reducer's buckets only (0 once it is built, one a step at the end: the model's
  // gradients fit one bucket).
  const std::string mode = GENERATE("refit_fp16", "refit_hook");
  INFO(mode);
  testing::TempDir dir;
  run_ranks_cleanly(mode, dir);
  const auto [rank0, rank1] = read_clean_ranks(dir);
  CHECK(rank0.weights == rank1.weights);
  for (int rank = 0; rank < kWorld; ++rank) {
    INFO("rank " << rank);
    Extras extras = read_extras(dir.file("extra" + std::to_string(rank) + ".txt"));
    for (int fit = 1; fit <= 2; ++fit) {
      INFO("fit " << fit);
      const std::vector<double>& seen = extras["fit" + std::to_string(fit)];
      REQUIRE(seen.size() == 5);
      const double steps = seen[0];
      CHECK(steps == 16);     // 2 epochs of 8 steps
      CHECK(seen[1] == 1.0);  // the hook's name once the Reducer is built
      CHECK(seen[2] == 0.0);  // no bucket averaged yet by this Reducer's hook
      CHECK(seen[3] == 1.0);  // and after the fit
      CHECK(seen[4] == (mode == "refit_fp16" ? steps : 0.0));
      std::vector<double> every_step;
      if (mode == "refit_hook") {
        for (int step = 1; step <= static_cast<int>(steps); ++step) every_step.push_back(step);
      }
      CHECK(extras["bucket0_fit" + std::to_string(fit)] == every_step);
    }
  }
}

namespace {

// How many of this process's threads have the nice value `nice`.
int threads_niced(int nice) {
  int count = 0;
  DIR* tasks = ::opendir("/proc/self/task");
  REQUIRE(tasks != nullptr);
  while (const dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] != '.' &&
        ::getpriority(PRIO_PROCESS, static_cast<id_t>(std::atoi(entry->d_name))) == nice)
      ++count;
  }
  ::closedir(tasks);
  return count;
}

}  // namespace

TEST_CASE("Gloo's event loop thread gets the lowest priority, unless DDPOptions says otherwise",
          "[ddp]") {
  const ReservedPort reserved;
  distributed::DistributedEnvironment environment;  // a job of one rank, on loopback
  environment.master_port = reserved.port();
  const int nice = GENERATE(19, 0);
  CAPTURE(nice);
  const int before = threads_niced(19);
  {
    distributed::DDPStrategy strategy(environment,
                                      distributed::DDPOptions().gloo_event_loop_nice(nice));
    strategy.connect(c10::Device("cpu"));
    CHECK(strategy.statistics().gloo_event_loop_niced == (nice == 19));
    CHECK(threads_niced(19) == before + (nice == 19 ? 1 : 0));
    std::vector<double> values{2.0};
    strategy.all_reduce(values, distributed::ReduceOp::kSum);  // the loop still serves it
    CHECK(values[0] == 2.0);
  }
  CHECK(threads_niced(19) == before);  // the loop ended with the strategy
  CHECK_THROWS_WITH(
      distributed::DDPStrategy(environment, distributed::DDPOptions().gloo_event_loop_nice(20)),
      Catch::Contains("gloo_event_loop_nice (--ddp-gloo-loop-nice) must be 0 (as PyTorch leaves "
                      "it) to 19 (the lowest priority), got 20"));
}

namespace {

// One rank's connect in a settings handshake (the "[.ddp-handshake-child]" below).
struct JoinOutcome {
  int exit_code = 0;  // distributed::rank_exit_code of its error, 0 when it joined
  double seconds = 0.0;
  std::string error;
};

// Starts a rank for each of `world_sizes` (its WORLD_SIZE; fewer than rank 0's: a rank that
// never comes), rank `odd_rank` alone with --ddp-find-unused-parameters (-1: none), each
// connecting with `timeout`; what each one's connect did.
std::vector<JoinOutcome> join_ranks(const std::vector<int>& world_sizes, int odd_rank,
                                    std::chrono::seconds timeout) {
  const testing::TempDir dir;
  const ReservedPort reserved;
  testing::ScopedEnvironment variables;
  variables.set("MASTER_ADDR", "127.0.0.1");
  variables.set("MASTER_PORT", std::to_string(reserved.port()));
  variables.set("TRAINBUS_TEST_ODD_RANK", std::to_string(odd_rank));
  variables.set("TRAINBUS_TEST_TIMEOUT_S", std::to_string(timeout.count()));
  std::vector<pid_t> children;
  for (std::size_t rank = 0; rank < world_sizes.size(); ++rank) {
    variables.set("RANK", std::to_string(rank));
    variables.set("LOCAL_RANK", std::to_string(rank));
    variables.set("WORLD_SIZE", std::to_string(world_sizes[rank]));
    children.push_back(testing::spawn_test_child("[.ddp-handshake-child]", dir.path().string()));
  }
  std::vector<JoinOutcome> outcomes;
  for (std::size_t rank = 0; rank < children.size(); ++rank) {
    const int status = testing::wait_for_child(children[rank]);
    REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    std::ifstream in(dir.file("rank" + std::to_string(rank) + ".txt"));
    JoinOutcome outcome;
    in >> outcome.exit_code >> outcome.seconds;
    in.ignore();
    std::getline(in, outcome.error);
    outcomes.push_back(outcome);
  }
  return outcomes;
}

}  // namespace

TEST_CASE("ddp handshake child rank", "[.ddp-handshake-child]") {
  const distributed::DistributedEnvironment environment = distributed::environment_from_variables();
  distributed::DDPStrategy strategy(
      environment,
      distributed::DDPOptions()
          .timeout(std::chrono::seconds(std::stoi(std::getenv("TRAINBUS_TEST_TIMEOUT_S"))))
          .find_unused_parameters(std::stoi(std::getenv("TRAINBUS_TEST_ODD_RANK")) ==
                                  environment.rank));
  JoinOutcome outcome;
  const auto start = std::chrono::steady_clock::now();
  try {
    strategy.connect(c10::Device("cpu"));
  } catch (const std::exception& error) {
    outcome.exit_code = distributed::rank_exit_code(error);
    outcome.error = error.what();
    std::replace(outcome.error.begin(), outcome.error.end(), '\n', ' ');
  }
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::ofstream(testing::test_child_dir() + "/rank" + std::to_string(environment.rank) + ".txt")
      << outcome.exit_code << " " << outcome.seconds << "\n"
      << outcome.error << "\n";
}

TEST_CASE("with four ranks, the ranks that agree with rank 0 name the one that differs",
          "[ddp][ddp_settings]") {
  // Each agreeing rank must read the verdict before rank 0, throwing, takes its store away:
  // else it fails with "Broken pipe" (a lost peer) instead of the setting's name.
  for (int attempt = 1; attempt <= 12; ++attempt) {
    const std::vector<JoinOutcome> ranks = join_ranks({4, 4, 4, 4}, 3, std::chrono::seconds(20));
    for (int rank = 0; rank < 4; ++rank) {
      CAPTURE(attempt, rank, ranks[rank].error);
      CHECK_THAT(ranks[rank].error, Catch::Contains("`find_unused_parameters` is true on rank 3 "
                                                    "but false on rank 0"));
      CHECK(ranks[rank].exit_code == (rank == 3 ? 1 : distributed::kAnotherRankFailedExitCode));
    }
  }
}

TEST_CASE("when rank 0 alone differs from every other rank, rank 0 is the one that fails",
          "[ddp][ddp_settings]") {
  const std::vector<JoinOutcome> ranks = join_ranks({3, 3, 3}, 0, std::chrono::seconds(20));
  INFO("rank 0: " << ranks[0].error << "\nrank 1: " << ranks[1].error
                  << "\nrank 2: " << ranks[2].error);
  CHECK_THAT(ranks[0].error,
             Catch::StartsWith("rank 0 of 3: this rank's DDP settings differ from every other "
                               "rank's: `find_unused_parameters` is true on rank 0 but false on "
                               "every other rank: set --ddp-find-unused-parameters"));
  CHECK(ranks[0].exit_code == 1);
  for (int rank : {1, 2}) {
    CHECK_THAT(ranks[rank].error,
               Catch::Contains("rank 0's DDP settings differ from every other rank's: "
                               "`find_unused_parameters` is true on rank 0"));
    CHECK(ranks[rank].exit_code == distributed::kAnotherRankFailedExitCode);
  }
}

TEST_CASE("a rank 0 that counts a larger world than the others says so at once",
          "[ddp][ddp_settings]") {
  // Rank 0 has WORLD_SIZE 3, rank 1 (the whole job) 2: no rank 2 ever comes.
  const std::vector<JoinOutcome> ranks = join_ranks({3, 2}, -1, std::chrono::seconds(20));
  INFO("rank 0: " << ranks[0].error << "\nrank 1: " << ranks[1].error);
  CHECK_THAT(ranks[1].error, Catch::StartsWith("rank 1 of 2: this rank's DDP settings differ "
                                               "from rank 0's: `world_size` is 2 on rank 1 but "
                                               "3 on rank 0: set WORLD_SIZE"));
  CHECK(ranks[1].exit_code == 1);
  CHECK_THAT(ranks[0].error, Catch::Contains("`world_size` is 2 on rank 1 but 3 on rank 0"));
  CHECK(ranks[0].exit_code == distributed::kAnotherRankFailedExitCode);
  for (const JoinOutcome& rank : ranks) CHECK(rank.seconds < 10.0);  // not the 20 s timeout
}

TEST_CASE("rank 0 names the ranks that did not answer within the timeout", "[ddp][ddp_settings]") {
  // WORLD_SIZE 3 on both, but rank 2 never starts.
  const std::vector<JoinOutcome> ranks = join_ranks({3, 3}, -1, std::chrono::seconds(2));
  INFO("rank 0: " << ranks[0].error << "\nrank 1: " << ranks[1].error);
  CHECK_THAT(ranks[0].error,
             Catch::StartsWith("rank 0 of 3: rank 2 did not answer rank 0's DDP settings within "
                               "the timeout (2 s)"));
  CHECK(ranks[0].exit_code == distributed::kAnotherRankFailedExitCode);
  CHECK_THAT(ranks[1].error, Catch::Contains("rank 2 did not answer"));
  CHECK(ranks[1].exit_code == distributed::kAnotherRankFailedExitCode);
}

TEST_CASE("DDPOptions refuses a timeout below 1 s, a rank that never joins is named as such",
          "[ddp]") {
  const ReservedPort reserved;
  const distributed::DistributedEnvironment environment = rank_of_two(0, reserved.port());
  CHECK_THROWS_MATCHES(
      distributed::DDPStrategy(environment,
                               distributed::DDPOptions().timeout(std::chrono::milliseconds(999))),
      MisconfigurationError,
      Catch::Message("DDPOptions: timeout (--ddp-timeout) must be at least 1 s, got 999 ms"));
  // Rank 1 of 2 comes to the rendezvous (the store) and stays silent: rank 0 times out joining
  // (in the settings handshake, which is the rendezvous), and its hint is about starting and
  // joining, not about a call made on some ranks only.
  const auto timeout = std::chrono::seconds(3);
  distributed::DDPStrategy rank0(environment, distributed::DDPOptions().timeout(timeout));
  std::string error;
  std::atomic<bool> rank0_done{false};
  const auto started = std::chrono::steady_clock::now();  // rank 0's deadline comes later
  std::thread joining([&] {
    try {
      rank0.connect(c10::Device("cpu"));
    } catch (const distributed::AnotherRankFailedError& e) {
      error = e.what();
    } catch (const std::exception& e) {
      error = std::string("not an AnotherRankFailedError: ") + e.what();
    }
    rank0_done = true;
  });
  // Rank 0 listening first, so that c10d's connect succeeds at its first try (it waits 1 s
  // between its tries).
  while (!listening_at(reserved.port()) && !rank0_done)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  c10d::TCPStoreOptions client;
  client.port = reserved.port();
  client.isServer = false;
  client.numWorkers = 2;
  client.waitWorkers = true;  // a client only counts itself in
  client.timeout = std::chrono::seconds(2);
  c10::intrusive_ptr<c10d::TCPStore> store;
  while (!store && !rank0_done) {
    try {
      store = c10::make_intrusive<c10d::TCPStore>(environment.master_addr, client);
    } catch (const std::exception&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  const auto connected = std::chrono::steady_clock::now();
  joining.join();
  // Otherwise this ran as a rank that never came (which the words below cover too), not the case
  // this test is for.
  CHECK(store);
  CHECK(connected < started + timeout);
  CHECK_THAT(error, Catch::StartsWith("rank 0 of 2: rank 1 did not answer rank 0's DDP settings "
                                      "within the timeout (3 s): it did not start, started more "
                                      "than that after rank 0, looked for the rendezvous "
                                      "elsewhere than rank 0's MASTER_ADDR:MASTER_PORT "
                                      "(127.0.0.1:" +
                                      std::to_string(environment.master_port) +
                                      "), or failed before joining. Rank 0 waited for rank "
                                      "1, as its WORLD_SIZE 2 says") &&
                        !Catch::Contains("some ranks only"));
}

TEST_CASE("a rank that finds no rendezvous says where it looked, and that rank 0 may have stopped",
          "[ddp]") {
  // Nothing listens at MASTER_PORT: rank 0 never started there, or it stopped already (as it does
  // when a rank has not answered within its timeout: a rank that comes later finds no store).
  const ReservedPort reserved;
  const distributed::DistributedEnvironment environment = rank_of_two(1, reserved.port());
  distributed::DDPStrategy rank1(environment,
                                 distributed::DDPOptions().timeout(std::chrono::seconds(1)));
  CHECK_THROWS_MATCHES(
      rank1.connect(c10::Device("cpu")), distributed::DistributedError,
      Catch::Predicate<distributed::DistributedError>(
          [](const distributed::DistributedError& error) {
            return dynamic_cast<const distributed::AnotherRankFailedError*>(&error) == nullptr;
          },
          "not an AnotherRankFailedError"));
  try {
    rank1.connect(c10::Device("cpu"));
  } catch (const distributed::DistributedError& error) {
    CHECK_THAT(error.what(),
               Catch::StartsWith("rank 1 of 2: the rendezvous at 127.0.0.1:" +
                                 std::to_string(reserved.port()) + " failed (waited up to 1 s)") &&
                   Catch::Contains("or rank 0 stopped already: it stops when the ranks' DDP "
                                   "settings differ or a rank has not answered within its "
                                   "timeout, and its error says which"));
  }
}

TEST_CASE("a rank that agreed on the DDP settings and never joins the process group is named",
          "[ddp]") {
  // Rank 1 answers the settings handshake (the rendezvous) and goes no further: rank 0 times out
  // joining the Gloo group, and its hint is about what comes between the two, not about a rank
  // that did not start (every rank answered) nor about a call made on some ranks only.
  const ReservedPort reserved;
  const distributed::DistributedEnvironment environment = rank_of_two(0, reserved.port());
  // Long enough for this thread to find rank 0 and answer on a busy machine.
  const auto options = distributed::DDPOptions().timeout(std::chrono::seconds(5));
  distributed::DDPStrategy rank0(environment, options);
  std::string error;
  std::thread joining([&] {
    try {
      rank0.connect(c10::Device("cpu"));
      error = "joined";
    } catch (const distributed::PeerTimedOutError& e) {
      error = e.what();
    } catch (const std::exception& e) {
      error = std::string("not a PeerTimedOutError: ") + e.what();
    }
  });
  c10d::TCPStoreOptions client;
  client.port = reserved.port();
  client.isServer = false;
  client.waitWorkers = false;
  client.timeout = std::chrono::seconds(20);  // connecting waits for rank 0 to listen
  const auto store = c10::make_intrusive<c10d::TCPStore>(environment.master_addr, client);
  CHECK_NOTHROW(distributed::agree_on_ddp_settings(
      *store, distributed::shared_ddp_settings(options, "gloo", 2),
      rank_of_two(1, reserved.port())));
  joining.join();  // rank 1's store stays until rank 0 has given up
  CHECK_THAT(error, Catch::StartsWith("rank 0 of 2: joining the process group failed after ") &&
                        Catch::Contains(
                            "Another rank (rank 1, the only other one) did not reach this point "
                            "within the timeout (5 "
                            "s): every rank answered the DDP settings just before, so it "
                            "failed or hangs between that and the process group") &&
                        !Catch::Contains("did not start") && !Catch::Contains("some ranks only"));
}
