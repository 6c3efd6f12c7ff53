#include "bench/raw_ddp_loop.h"

#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace trainbus::bench {

void run_raw_ddp_loop(BenchMlp& module, DataLoader& loader, int64_t steps,
                      const distributed::DistributedEnvironment& environment) {
  c10d::TCPStoreOptions store_options;
  store_options.port = environment.master_port;
  store_options.isServer = environment.rank == 0;
  store_options.numWorkers = static_cast<size_t>(environment.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = std::chrono::minutes(5);  // a peer that died ends the bench, not 30 min
  auto store = c10::make_intrusive<c10d::TCPStore>(environment.master_addr, store_options);
  auto group_options = c10d::ProcessGroupGloo::Options::create(std::chrono::minutes(5));
  group_options->devices.push_back(
      c10d::ProcessGroupGloo::createDeviceForHostname(environment.master_addr));
  auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, environment.rank,
                                                           environment.world_size, group_options);

  // Every rank starts from rank 0's weights, as DDP does.
  std::vector<at::Tensor> parameters = module.parameters();
  {
    torch::NoGradGuard no_grad;
    for (at::Tensor& parameter : parameters) {
      std::vector<at::Tensor> one{parameter};
      group->broadcast(one)->wait();
    }
  }
  torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(1e-3));
  module.train();
  const int64_t batches = loader.num_batches();
  std::vector<double> accuracies;
  int64_t index = environment.rank;
  for (int64_t step = 0; step < steps; ++step, index += environment.world_size) {
    if (index >= batches) index = environment.rank;
    module.step_starts.push_back(Clock::now());
    const Batch batch = loader.batch(index);
    optimizer.zero_grad();
    // The work of BenchMlp's training_step with log_metrics: the loss and the accuracy, read out.
    const at::Tensor logits = module.net->forward(batch.data);
    at::Tensor loss = torch::nn::functional::cross_entropy(logits, batch.target);
    module.losses.push_back(loss.item<double>());
    accuracies.push_back((logits.argmax(1) == batch.target).to(at::kFloat).mean().item<double>());
    loss.backward();
    std::vector<at::Tensor> gradients;
    gradients.reserve(parameters.size());
    for (const at::Tensor& parameter : parameters) gradients.push_back(parameter.grad().view(-1));
    std::vector<at::Tensor> flat{at::cat(gradients)};
    group->allreduce(flat)->wait();
    flat[0].div_(environment.world_size);
    int64_t offset = 0;
    for (const at::Tensor& parameter : parameters) {
      const int64_t count = parameter.numel();
      parameter.grad().view(-1).copy_(flat[0].narrow(0, offset, count));
      offset += count;
    }
    optimizer.step();
  }
  group->barrier()->wait();  // no rank tears down the group while another still reduces
}

}  // namespace trainbus::bench
