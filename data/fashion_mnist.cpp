#include "data/fashion_mnist.h"

#include <filesystem>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Functions.h>

#include "base/errors.h"
#include "data/idx_file.h"

namespace trainbus::data {
namespace {

constexpr double kMean = 0.2860;
constexpr double kStd = 0.3530;
constexpr const char* kInstallHint =
    "install Debian's package with `apt-get install dataset-fashion-mnist`, or point --data / "
    "FashionMnistOptions::root at a directory holding the four IDX files";

std::string find_file(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  for (const std::string& candidate : {name + ".gz", name}) {
    const fs::path path = fs::path(dir) / candidate;
    if (fs::is_regular_file(path)) return path.string();
  }
  throw DataError(::trainbus::detail::concat("Fashion-MNIST file ",
                                             (fs::path(dir) / (name + ".gz")).string(),
                                             " not found; ", kInstallHint));
}

at::Tensor normalise(const at::Tensor& images) {
  return images.to(at::kFloat).div_(255.0).sub_(kMean).div_(kStd);
}

}  // namespace

FashionMnistSplit read_fashion_mnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  at::Tensor images = read_idx_file(images_path);
  at::Tensor labels = read_idx_file(labels_path);
  TRAINBUS_CHECK_AS(DataError, images.dim() == 3 && images.size(1) == 28 && images.size(2) == 28,
                    images_path, ": expected images of 28x28 pixels, got shape ", images.sizes());
  TRAINBUS_CHECK_AS(DataError, labels.dim() == 1 && labels.size(0) == images.size(0), labels_path,
                    ": holds ", labels.dim() == 1 ? labels.size(0) : -1, " labels but ",
                    images_path, " holds ", images.size(0), " images");
  TRAINBUS_CHECK_AS(DataError, labels.numel() == 0 || labels.max().item<int64_t>() <= 9,
                    labels_path, ": labels must be classes 0..9, found ",
                    labels.max().item<int64_t>());
  return {images.unsqueeze(1), labels.to(at::kLong)};
}

FashionMnistDataModule::FashionMnistDataModule(FashionMnistOptions options)
    : options_(std::move(options)) {
  TRAINBUS_CHECK(options_.batch_size() >= 1, "FashionMnistOptions::batch_size must be >= 1, got ",
                 options_.batch_size());
  TRAINBUS_CHECK(options_.eval_batch_size() >= 1,
                 "FashionMnistOptions::eval_batch_size must be >= 1, got ",
                 options_.eval_batch_size());
  TRAINBUS_CHECK(options_.val_size() >= 0 && options_.val_size() < 60000,
                 "FashionMnistOptions::val_size must be in [0, 60000), got ", options_.val_size());
}

void FashionMnistDataModule::prepare_data() {
  // Nothing to download: fail here, before any model is built, if the files are missing.
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    find_file(options_.root(), name);
  }
}

void FashionMnistDataModule::setup(Stage stage) {
  if ((stage == Stage::kFit || stage == Stage::kValidate) && !train_images_.defined()) {
    FashionMnistSplit train = read_fashion_mnist(options_.root(), /*train=*/true);
    auto generator = at::detail::createCPUGenerator(options_.split_seed());
    const at::Tensor order =
        at::randperm(train.images.size(0), generator, at::TensorOptions().dtype(at::kLong));
    const int64_t n_train = train.images.size(0) - options_.val_size();
    const at::Tensor train_rows = order.slice(0, 0, n_train);
    const at::Tensor val_rows = order.slice(0, n_train);
    train_images_ = normalise(train.images.index_select(0, train_rows));
    train_labels_ = train.labels.index_select(0, train_rows);
    val_images_ = normalise(train.images.index_select(0, val_rows));
    val_labels_ = train.labels.index_select(0, val_rows);
  }
  if ((stage == Stage::kTest || stage == Stage::kPredict) && !test_images_.defined()) {
    FashionMnistSplit test = read_fashion_mnist(options_.root(), /*train=*/false);
    test_images_ = normalise(test.images);
    test_labels_ = test.labels;
  }
}

std::optional<int64_t> FashionMnistDataModule::batch_arg(const std::string& name) const {
  if (name == "batch_size") return options_.batch_size();
  if (name == "eval_batch_size") return options_.eval_batch_size();
  return std::nullopt;
}

bool FashionMnistDataModule::set_batch_arg(const std::string& name, int64_t value) {
  if (name != "batch_size" && name != "eval_batch_size") return false;
  TRAINBUS_CHECK(value >= 1, "FashionMnistDataModule: ", name, " must be >= 1, got ", value);
  if (name == "batch_size") {
    options_.batch_size(value);
  } else {
    options_.eval_batch_size(value);
  }
  return true;
}

std::shared_ptr<DataLoader> FashionMnistDataModule::train_dataloader() {
  TRAINBUS_CHECK(train_images_.defined(), "FashionMnistDataModule: call setup(Stage::kFit) first");
  return std::make_shared<TensorDataLoader>(train_images_, train_labels_,
                                            DataLoaderOptions()
                                                .batch_size(options_.batch_size())
                                                .shuffle(true)
                                                .drop_last(false)
                                                .seed(options_.shuffle_seed()));
}

std::shared_ptr<DataLoader> FashionMnistDataModule::val_dataloader() {
  if (options_.val_size() == 0) return nullptr;
  TRAINBUS_CHECK(val_images_.defined(), "FashionMnistDataModule: call setup(Stage::kFit) first");
  return std::make_shared<TensorDataLoader>(
      val_images_, val_labels_, DataLoaderOptions().batch_size(options_.eval_batch_size()));
}

std::shared_ptr<DataLoader> FashionMnistDataModule::test_dataloader() {
  TRAINBUS_CHECK(test_images_.defined(), "FashionMnistDataModule: call setup(Stage::kTest) first");
  return std::make_shared<TensorDataLoader>(
      test_images_, test_labels_, DataLoaderOptions().batch_size(options_.eval_batch_size()));
}

std::shared_ptr<DataLoader> FashionMnistDataModule::predict_dataloader() {
  TRAINBUS_CHECK(test_images_.defined(),
                 "FashionMnistDataModule: call setup(Stage::kPredict) first");
  return std::make_shared<TensorDataLoader>(
      test_images_, at::Tensor(), DataLoaderOptions().batch_size(options_.eval_batch_size()));
}

}  // namespace trainbus::data
