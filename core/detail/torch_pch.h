// Precompiled header of the torch-heavy targets: the LibTorch headers trainbus's own sources use
// (not <torch/torch.h>, which costs more to load than it saves). Not installed.
#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <torch/data/example.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
