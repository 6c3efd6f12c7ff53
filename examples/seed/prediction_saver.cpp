#include "examples/seed/prediction_saver.h"

#include <torch/serialize.h>

namespace trainbus::examples {

void PredictionSaver::on_predict_batch_end(Trainer& trainer, Module& module,
                                           const at::Tensor& outputs, const Batch& batch,
                                           int64_t batch_idx) {
  predictions.push_back(outputs);
}

void PredictionSaver::on_predict_end(Trainer& trainer, Module& module) {
  // Save all predictions
  torch::save(predictions, save_path_);
  out_ << "Predictions saved to " << save_path_ << '\n';
}

}  // namespace trainbus::examples
