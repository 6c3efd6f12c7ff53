#pragma once
/// The batch size finder (Lightning's Tuner.scale_batch_size and tuner/batch_size_scaling.py):
/// trials of a few training steps at growing batch sizes until one runs out of memory, then the
/// largest that did not, written into the data module.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/arg.h"
#include "base/stage.h"

namespace trainbus {
class Module;
struct TrainerOptions;
namespace data {
class DataModule;
}
}  // namespace trainbus

namespace trainbus::tuner {

/// How the batch size moves from one trial to the next.
enum class BatchSizeMode {
  kPower,     ///< doubles until a trial runs out of memory; the last size that fit
  kBinsearch  ///< doubles until one fails, then bisects between the last success and the failure
};

/// "power" or "binsearch"; throws MisconfigurationError naming both otherwise.
BatchSizeMode parse_batch_size_mode(const std::string& text);
std::string to_string(BatchSizeMode mode);

/// Lightning's BatchSizeFinder / scale_batch_size arguments and defaults, and the CPU's budget.
struct BatchSizeFinderOptions {
  TRAINBUS_ARG(BatchSizeMode, mode) = BatchSizeMode::kPower;
  /// Training steps (optimizer steps) of each trial.
  TRAINBUS_ARG(int64_t, steps_per_trial) = 3;
  /// The first batch size tried.
  TRAINBUS_ARG(int64_t, init_val) = 2;
  /// power: trials in all; binsearch: successful trials.
  TRAINBUS_ARG(int64_t, max_trials) = 25;
  /// What the data module calls its batch size (DataModule::batch_arg / set_batch_arg); also
  /// updated in the module's hyper-parameters when they hold it.
  TRAINBUS_ARG(std::string, batch_arg_name) = "batch_size";
  /// binsearch only, as Lightning: the size found is lowered by this fraction,
  /// max(1, int(size x (1 - margin))), room for batches that need more than the trials' did.
  TRAINBUS_ARG(double, margin) = 0.05;
  /// No batch size above this is tried.
  TRAINBUS_ARG(int64_t, max_val) = 8192;
  /// The CPU's out-of-memory signal, in bytes: a trial fails as if out of memory at the end of
  /// the first batch by which the CPU memory its training allocated on the training thread and
  /// still held, counted from its on_fit_start (batches, activations, gradients, optimizer state;
  /// not the weights, nor the data set up before), peaked above this. Unset: only a real
  /// allocation failure counts (CUDA's out-of-memory error). Counts CPU allocations only: on CUDA
  /// leave it unset.
  TRAINBUS_ARG(std::optional<int64_t>, memory_budget);
};

/// Checks every option; throws MisconfigurationError naming the option and its valid range.
void check_batch_size_finder_options(const BatchSizeFinderOptions& options);

/// One trial: its batch size, whether it fit, and what it measured.
struct BatchSizeTrial {
  int64_t batch_size = 0;
  bool fits = false;
  /// The largest live CPU allocation count in the trial (with a memory budget), else unset.
  std::optional<int64_t> peak_bytes;
  /// The out-of-memory error's message, when it did not fit.
  std::string error;
  /// Samples in the training loader the trial saw; -1 when unknown.
  int64_t num_samples = -1;
};

/// The finder's result: the batch size (after the margin) and every trial in order.
struct BatchSizeResult {
  int64_t batch_size = 0;
  /// The largest size that fit, before the margin.
  int64_t largest_fitting = 0;
  std::vector<BatchSizeTrial> trials;
  /// The trials as a table: batch size, fits or not, peak CPU memory (with a budget), the error
  /// (without one).
  std::string table() const;
};

/// Runs one trial at the given batch size.
using BatchSizeTrialRunner = std::function<BatchSizeTrial(int64_t batch_size)>;

/// The search alone (Lightning's _run_power_scaling / _run_binary_scaling), over any trial
/// runner. As Lightning: a size holding the whole training set is not doubled; max_val caps the
/// sizes; power counts every trial against max_trials and ends at the last size that fit,
/// binsearch counts successful ones. Where it differs: after a failure with nothing fitted yet
/// power halves (Lightning too) but stops at 1, and binsearch bisects down from the failure
/// instead of assuming 1 fits. Throws MisconfigurationError when no size tried fits.
BatchSizeResult search_batch_size(const BatchSizeFinderOptions& options,
                                  const BatchSizeTrialRunner& run_trial);

/// Lightning's Tuner(trainer).scale_batch_size: each trial is a Trainer with `options` that runs
/// steps_per_trial training steps (no validation, no sanity check, no callbacks or observers but
/// the finder's) with the data module's batch size set to the trial's; with `stage` validate, test
/// or predict (Lightning's method), steps_per_trial batches of that stage's loader instead (one
/// loader only: several are a MisconfigurationError, as Lightning's). An out-of-memory error
/// (is_out_of_memory) or, with memory_budget, a batch that needs more fails the trial; any other
/// error leaves. The module's weights and buffers and the CPU random generator are restored
/// afterwards (also on error); the size found is written into the data module (and the module's
/// hyper-parameters, if they hold batch_arg_name). Throws MisconfigurationError for bad options or
/// a data module without batch_arg_name.
BatchSizeResult scale_batch_size(const TrainerOptions& options, Module& module,
                                 data::DataModule& data, const BatchSizeFinderOptions& finder = {},
                                 Stage stage = Stage::kFit);

}  // namespace trainbus::tuner
