#include "callbacks/batch_size_finder.h"

#include <boost/core/demangle.hpp>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus::callbacks {

BatchSizeFinder::BatchSizeFinder(tuner::BatchSizeFinderOptions options)
    : options_(std::move(options)), optimal_batch_size_(options_.init_val()) {
  tuner::check_batch_size_finder_options(options_);
}

void BatchSizeFinder::setup(Trainer& trainer, Module&, Stage stage) {
  if (stage != Stage::kFit) return;
  DataModule& data = *trainer.datamodule();
  TRAINBUS_CHECK(data.batch_arg(options_.batch_arg_name()).has_value(), "BatchSizeFinder: field `",
                 options_.batch_arg_name(), "` not found in the data module (",
                 boost::core::demangle(typeid(data).name()),
                 "): override DataModule::batch_arg and set_batch_arg to hand out the batch "
                 "size its train_dataloader uses, or name yours with batch_arg_name (loaders "
                 "passed directly, as LoaderDataModule, cannot be resized)");
}

void BatchSizeFinder::on_fit_start(Trainer& trainer, Module& module) {
  scale_batch_size(trainer, module);
}

void BatchSizeFinder::scale_batch_size(Trainer& trainer, Module& module) {
  result_ = tuner::scale_batch_size(trainer.options(), module, *trainer.datamodule(), options_);
  optimal_batch_size_ = result_->batch_size;
  trainer.reload_dataloaders();
}

}  // namespace trainbus::callbacks
