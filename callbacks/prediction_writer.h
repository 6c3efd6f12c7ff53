#pragma once
/// BasePredictionWriter: a callback to subclass that writes predictions as Trainer::predict makes
/// them (Lightning's).

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/callback.h"

namespace trainbus::callbacks {

/// When a BasePredictionWriter writes (Lightning's WriteInterval).
enum class WriteInterval { kBatch, kEpoch, kBatchAndEpoch };

/// Override write_on_batch_end (every batch) and/or write_on_epoch_end (once, with every
/// prediction, on the CPU). To write predictions that would not fit in memory, write them per batch
/// and call `trainer.predict(module, data, PredictOptions().return_predictions(false))`: nothing is
/// kept or returned. An epoch writer gets every prediction also then (predict keeps them for it, as
/// Lightning's, and returns none).
///
///   class NpyWriter : public BasePredictionWriter {
///     void write_on_batch_end(Trainer&, Module&, const at::Tensor& prediction, const Batch&,
///                             int64_t batch_idx) override { save(prediction, batch_idx); }
///   };
///
/// Unlike Lightning's, the hooks get no batch_indices (trainbus loaders do not report sample
/// indices) and no dataloader_idx (one predict loader).
class BasePredictionWriter : public Callback {
 public:
  explicit BasePredictionWriter(WriteInterval interval = WriteInterval::kBatch);
  /// "batch", "epoch" or "batch_and_epoch"; throws MisconfigurationError for anything else.
  explicit BasePredictionWriter(const std::string& write_interval);

  /// After each predict batch (kBatch, kBatchAndEpoch). Throws MisconfigurationError unless
  /// overridden.
  virtual void write_on_batch_end(Trainer& trainer, Module& module, const at::Tensor& prediction,
                                  const Batch& batch, int64_t batch_idx);
  /// At the end of the predict epoch (kEpoch, kBatchAndEpoch), with trainer.predictions().
  /// Throws MisconfigurationError unless overridden.
  virtual void write_on_epoch_end(Trainer& trainer, Module& module,
                                  const std::vector<at::Tensor>& predictions);

  void on_predict_batch_end(Trainer& trainer, Module& module, const at::Tensor& outputs,
                            const Batch& batch, int64_t batch_idx) override;
  void on_predict_epoch_end(Trainer& trainer, Module& module) override;

  bool wants_epoch_predictions() const override { return interval_ != WriteInterval::kBatch; }
  WriteInterval interval() const noexcept { return interval_; }

 private:
  WriteInterval interval_;
};

}  // namespace trainbus::callbacks
