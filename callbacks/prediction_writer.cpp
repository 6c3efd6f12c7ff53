#include "callbacks/prediction_writer.h"

#include "base/errors.h"
#include "core/callback_order.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

WriteInterval parse_interval(const std::string& text) {
  if (text == "batch") return WriteInterval::kBatch;
  if (text == "epoch") return WriteInterval::kEpoch;
  if (text == "batch_and_epoch") return WriteInterval::kBatchAndEpoch;
  throw MisconfigurationError(
      "BasePredictionWriter: `write_interval` should be one of batch, "
      "epoch, batch_and_epoch; got '" +
      text + "'");
}

}  // namespace

BasePredictionWriter::BasePredictionWriter(WriteInterval interval) : interval_(interval) {}

BasePredictionWriter::BasePredictionWriter(const std::string& write_interval)
    : interval_(parse_interval(write_interval)) {}

void BasePredictionWriter::write_on_batch_end(Trainer&, Module&, const at::Tensor&, const Batch&,
                                              int64_t) {
  throw MisconfigurationError(callback_name(*this) +
                              " writes on batch end (write_interval batch or batch_and_epoch) but "
                              "does not override write_on_batch_end");
}

void BasePredictionWriter::write_on_epoch_end(Trainer&, Module&, const std::vector<at::Tensor>&) {
  throw MisconfigurationError(callback_name(*this) +
                              " writes on epoch end (write_interval epoch or batch_and_epoch) but "
                              "does not override write_on_epoch_end");
}

void BasePredictionWriter::on_predict_batch_end(Trainer& trainer, Module& module,
                                                const at::Tensor& outputs, const Batch& batch,
                                                int64_t batch_idx) {
  if (interval_ == WriteInterval::kEpoch) return;
  write_on_batch_end(trainer, module, outputs, batch, batch_idx);
}

void BasePredictionWriter::on_predict_epoch_end(Trainer& trainer, Module& module) {
  if (interval_ == WriteInterval::kBatch) return;
  write_on_epoch_end(trainer, module, trainer.predictions());
}

}  // namespace trainbus::callbacks
