#pragma once
// The declarations of LibTorch 1.13's ProcessGroupNCCL.hpp that ddp_strategy.cpp uses, as
// that header declares them: the real one needs nccl.h and CUDA headers that Debian does not
// ship. Only the check in distributed/CMakeLists.txt compiles against it; nothing links it.
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
namespace c10d {
class TORCH_API ProcessGroupNCCL : public ProcessGroup {
 public:
  struct Options : ProcessGroup::Options {
    explicit Options(bool is_high_priority_stream = false);
    static c10::intrusive_ptr<Options> create(bool is_high_priority_stream = false) {
      return c10::make_intrusive<Options>(is_high_priority_stream);
    }
    bool is_high_priority_stream;
  };
  ProcessGroupNCCL(const c10::intrusive_ptr<Store>& store, int rank, int size,
                   c10::intrusive_ptr<Options> options = Options::create());
  virtual ~ProcessGroupNCCL();
};
}  // namespace c10d
#endif

