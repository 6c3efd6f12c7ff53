#pragma once
// The guide's prediction saver: collects every predict batch's output and saves them all.

#include <ostream>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/callback.h"

namespace trainbus::examples {

class PredictionSaver : public Callback {
 public:
  PredictionSaver(std::string save_path, std::ostream& out)
      : save_path_(std::move(save_path)), out_(out) {}

  void on_predict_batch_end(Trainer& trainer, Module& module, const at::Tensor& outputs,
                            const Batch& batch, int64_t batch_idx) override;
  /// Writes the predictions with torch::save (readable with torch::load into a vector of tensors).
  void on_predict_end(Trainer& trainer, Module& module) override;

  std::vector<at::Tensor> predictions;

 private:
  std::string save_path_;
  std::ostream& out_;
};

}  // namespace trainbus::examples
