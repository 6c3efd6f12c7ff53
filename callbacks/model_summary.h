#pragma once
/// ModelSummary: the table of a module's layers and parameter counts printed when fit starts
/// (Lightning's ModelSummary callback and its summarize()).

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "base/arg.h"
#include "core/callback.h"

namespace torch::nn {
class Module;
}

namespace trainbus::callbacks {

/// One row of the table: a submodule, named by its path ("net.0").
struct LayerSummary {
  std::string name;
  std::string type;    ///< the class name without namespace or LibTorch's "Impl": "Linear"
  int64_t params = 0;  ///< parameters of the submodule and everything inside it
  bool training = true;
  /// Shapes of its input and output in forward(example_input_array), as Python lists
  /// ("[10, 256]"); "?" where they are not known (see layer_sizes).
  std::string in_size = "?";
  std::string out_size = "?";
};

/// A layer's input and output shapes, as Python prints lists: "[10, 256]".
struct LayerSizes {
  std::string in_size;
  std::string out_size;
};

/// One column of the summary table: its header and a cell per row.
struct SummaryColumn {
  std::string header;
  std::vector<std::string> cells;
  /// The widest of the header and the cells, in bytes.
  std::size_t width() const;
};

/// What Lightning's summarize() computes.
struct ModelSummaryData {
  std::vector<LayerSummary> layers;
  int64_t total_params = 0;
  int64_t trainable_params = 0;  ///< parameters that require grad
  double model_size_mb = 0;      ///< parameter bytes (each at its dtype's size) / 1e6
  int64_t modules_in_train_mode = 0;
  int64_t modules_in_eval_mode = 0;
  /// Whether the module had an example_input_array: the table then has Lightning's "In sizes" and
  /// "Out sizes" columns.
  bool has_sizes = false;
  /// Sets has_sizes and each row's sizes from `sizes` (by layer name; "?" for the others).
  void set_sizes(const std::map<std::string, LayerSizes>& sizes);
  /// Parameters not in any row (the root's own), shown as an "other params" row.
  int64_t leftover_params() const;
  /// The table's columns (Lightning's _get_summary_data without FLOPs): index, Name, Type, Params,
  /// Mode (and In sizes, Out sizes with has_sizes), a row per layer and the "other params" row when
  /// there are such; what ModelSummary and RichModelSummary both draw.
  std::vector<SummaryColumn> columns() const;
  /// Lightning's text table: index, Name, Type, Params, Mode, then the totals.
  std::string to_string() const;
};

/// The rows to `max_depth` levels below the root: 1 its children, -1 every level, 0 none. Throws
/// MisconfigurationError for max_depth < -1.
ModelSummaryData summarize(const torch::nn::Module& module, int64_t max_depth = 1);

/// The In and Out sizes of `module`'s layers for forward(example_input_array), by layer name, as
/// far as they can be known without forward hooks, which LibTorch's C++ modules lack. The example
/// runs (in eval mode, without grad; modes restored) through forward, and through runs of the
/// module's consecutive children in registration order: the longest run from the first start whose
/// chained output equals forward's (same shape, allclose) is sized, the children outside it are
/// not (Lightning shows "?" for layers forward does not use), and with no such run none is (the
/// summary then says so under the table). A heuristic: an example that many layers leave
/// unchanged (zeros through ReLU) can make a layer forward skips look used. A child is run through
/// when it is a torch::nn::Sequential (its children in order, nested ones too), or a Linear,
/// Conv1d/2d/3d, ConvTranspose1d/2d/3d, ReLU, LeakyReLU, GELU, SiLU, Sigmoid, Tanh, Softmax,
/// LogSoftmax, Dropout, BatchNorm1d/2d/3d, LayerNorm, Flatten, MaxPool1d/2d, AvgPool1d/2d,
/// AdaptiveAvgPool1d/2d or Identity; the chain stops at any other (its layers, and those after it,
/// stay "?"). Empty without an example. Throws MisconfigurationError when an example is set but
/// forward is not overridden.
std::map<std::string, LayerSizes> layer_sizes(Module& module);

/// Lightning's get_human_readable_count: "123  ", "1.2 K", "2.0 M", "400 T", "5,000 T".
std::string human_readable_count(int64_t number);

/// Lightning's ModelSummary arguments and defaults.
struct ModelSummaryOptions {
  /// Levels of submodules shown: 1 (default) the module's children, -1 all, 0 no summary.
  TRAINBUS_ARG(int64_t, max_depth) = 1;
  /// Where the table is printed; std::cerr by default (where Lightning's log.info goes).
  TRAINBUS_ARG(std::ostream*, out) = nullptr;
};

/// Prints the summary at on_fit_start on global rank 0 (not in a replay, whose module is a
/// stand-in), with In/Out sizes when the module has an example_input_array (layer_sizes). The
/// Trainer adds one unless enable_model_summary is false or one is given. Unlike Lightning 2.6 it
/// has no FLOPs column: LibTorch's C++ modules have no FLOP counter.
class ModelSummary : public Callback {
 public:
  explicit ModelSummary(ModelSummaryOptions options = {});

  void on_fit_start(Trainer& trainer, Module& module) override;

  /// What the last on_fit_start printed.
  const std::optional<ModelSummaryData>& last_summary() const noexcept { return last_summary_; }
  const ModelSummaryOptions& options() const noexcept { return options_; }

 protected:
  /// Writes `summary` to `out`; RichModelSummary draws it as a box table.
  virtual void print(const ModelSummaryData& summary, std::ostream& out) const;

 private:
  ModelSummaryOptions options_;
  std::optional<ModelSummaryData> last_summary_;
};

}  // namespace trainbus::callbacks
