#include "callbacks/learning_rate_finder.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <torch/optim/optimizer.h>

#include "base/diagnostics.h"
#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

tuner::LRFinderOptions range_test_options(const LearningRateFinderOptions& o) {
  return tuner::LRFinderOptions()
      .min_lr(o.min_lr())
      .max_lr(o.max_lr())
      .num_training(o.num_training_steps())
      .mode(o.mode())
      .early_stop_threshold(o.early_stop_threshold())
      .update_attr(o.update_attr())
      .attr_name(o.attr_name());
}

}  // namespace

LearningRateFinder::LearningRateFinder(LearningRateFinderOptions options)
    : options_(std::move(options)) {
  tuner::check_lr_finder_options(range_test_options(options_));
}

void LearningRateFinder::on_fit_start(Trainer& trainer, Module& module) {
  lr_find(trainer, module);
}

void LearningRateFinder::lr_find(Trainer& trainer, Module& module) {
  lr_finder_ = tuner::lr_find(trainer.options(), module, *trainer.datamodule(),
                              range_test_options(options_));
  optimal_lr_ = lr_finder_->suggestion();

  const std::filesystem::path dir = trainer.log_dir();
  plot_path_ = (dir / "lr_find.svg").string();
  table_path_ = (dir / "lr_find.txt").string();
  try {
    std::filesystem::create_directories(dir);
    lr_finder_->write_plot(plot_path_);
    std::ofstream table(table_path_);
    table << lr_finder_->table();
    if (!table.flush()) throw std::runtime_error("cannot write " + table_path_);
  } catch (const std::exception& e) {
    warn(std::string("LearningRateFinder: the results were not written: ") + e.what());
  }

  std::ostringstream message;
  if (optimal_lr_) {
    message << "LearningRateFinder: suggested lr " << *optimal_lr_;
    if (options_.update_attr()) {
      // The fit's optimizer was built with the old lr before on_fit_start: it takes the new one
      // here (Lightning sets the module attribute and the optimizers' param groups).
      for (const auto& optimizer : trainer.optimizers()) {
        for (auto& group : optimizer->param_groups()) group.options().set_lr(*optimal_lr_);
      }
      message << ", set as the learning rate";
    }
  } else {
    message << "LearningRateFinder: no suggestion (too few finite losses); the learning rate "
               "stays";
  }
  message << "; plot: " << plot_path_;
  info(message.str());
}

}  // namespace trainbus::callbacks
