#pragma once
/// Fashion-MNIST as a DataModule, read from the IDX files of Debian's dataset-fashion-mnist.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "base/arg.h"
#include "data/data_module.h"

namespace trainbus::data {

/// Where Debian's `dataset-fashion-mnist` package puts the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// One split of Fashion-MNIST: images [N, 1, 28, 28] uint8 and labels [N] int64 (0..9).
struct FashionMnistSplit {
  at::Tensor images;
  at::Tensor labels;
};

/// Reads `train` (60000 images) or, with train=false, `t10k` (10000) from `dir`, accepting
/// `NAME` or `NAME.gz`. Throws DataError naming the missing or damaged file and the package.
FashionMnistSplit read_fashion_mnist(const std::string& dir, bool train);

struct FashionMnistOptions {
  TRAINBUS_ARG(std::string, root) = kFashionMnistDir;
  TRAINBUS_ARG(int64_t, batch_size) = 64;
  /// Batch size of the val/test/predict loaders (no gradients there, so larger is faster).
  TRAINBUS_ARG(int64_t, eval_batch_size) = 1000;
  /// Images held out of the 60000 training images for validation (Lightning's MNIST example: 5000).
  TRAINBUS_ARG(int64_t, val_size) = 5000;
  /// Seed of the train/val split; fixed so that every run validates on the same images.
  TRAINBUS_ARG(uint64_t, split_seed) = 42;
  /// Seed of the training shuffle; unset: from the trainer's seed (see DataLoaderOptions).
  TRAINBUS_ARG(std::optional<uint64_t>, shuffle_seed);
};

/// Train/val from the training file (split by `split_seed`), test and predict from t10k.
/// Pixels are scaled to [0, 1] and normalised with the training set's mean 0.2860 and std 0.3530.
class FashionMnistDataModule : public DataModule {
 public:
  explicit FashionMnistDataModule(FashionMnistOptions options = {});

  void prepare_data() override;
  void setup(Stage stage) override;
  std::shared_ptr<DataLoader> train_dataloader() override;
  std::shared_ptr<DataLoader> val_dataloader() override;
  std::shared_ptr<DataLoader> test_dataloader() override;
  std::shared_ptr<DataLoader> predict_dataloader() override;

  const FashionMnistOptions& options() const noexcept { return options_; }
  /// "batch_size" (training) and "eval_batch_size" (val/test/predict).
  std::optional<int64_t> batch_arg(const std::string& name) const override;
  bool set_batch_arg(const std::string& name, int64_t value) override;

 private:
  FashionMnistOptions options_;
  at::Tensor train_images_, train_labels_, val_images_, val_labels_, test_images_, test_labels_;
};

}  // namespace trainbus::data
