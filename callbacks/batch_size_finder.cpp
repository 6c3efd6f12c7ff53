#include "callbacks/batch_size_finder.h"

#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <boost/core/demangle.hpp>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus::callbacks {

BatchSizeFinder::BatchSizeFinder(tuner::BatchSizeFinderOptions options)
    : options_(std::move(options)), optimal_batch_size_(options_.init_val()) {
  tuner::check_batch_size_finder_options(options_);
}

void BatchSizeFinder::setup(Trainer& trainer, Module& module, Stage stage) {
  if (trainer.replaying()) return;  // a replay has no data module, and searches nothing
  DataModule& data = *trainer.datamodule();
  TRAINBUS_CHECK(data.batch_arg(options_.batch_arg_name()).has_value(), "BatchSizeFinder: field `",
                 options_.batch_arg_name(), "` not found in the data module (",
                 boost::core::demangle(typeid(data).name()),
                 "): override DataModule::batch_arg and set_batch_arg to hand out the batch "
                 "size its train_dataloader uses, or name yours with batch_arg_name (loaders "
                 "passed directly, as LoaderDataModule, cannot be resized)");
  // validate, test, predict: searched now, before the Trainer takes the stage's loaders, which
  // then have the size found (Lightning searches at on_validation_start and so on, then has the
  // loop take its loaders again).
  if (stage != Stage::kFit) {
    result_ = tuner::scale_batch_size(trainer.options(), module, data, options_, stage);
    optimal_batch_size_ = result_->batch_size;
  }
}

void BatchSizeFinder::on_fit_start(Trainer& trainer, Module& module) {
  scale_batch_size(trainer, module);
}

void BatchSizeFinder::scale_batch_size(Trainer& trainer, Module& module) {
  if (trainer.fit_progress().resume_batch_idx > 0) {
    // The resumed position is counted in batches of the checkpoint's size: another size would
    // skip or repeat samples of the epoch.
    warn(::trainbus::detail::concat(
        "BatchSizeFinder: the fit resumes in the middle of an epoch (batch ",
        trainer.fit_progress().resume_batch_idx,
        "), whose position is counted in batches of the size it was saved "
        "with; the search is skipped"));
    return;
  }
  result_ = tuner::scale_batch_size(trainer.options(), module, *trainer.datamodule(), options_);
  optimal_batch_size_ = result_->batch_size;
  // New loaders may draw their seeds from the default generator: the fit's random stream must not
  // depend on whether the finder ran.
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  at::Tensor rng_state;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    rng_state = generator.get_state();
  }
  trainer.reload_dataloaders();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(rng_state);
}

}  // namespace trainbus::callbacks
