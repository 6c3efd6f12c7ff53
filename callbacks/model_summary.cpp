#include "callbacks/model_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <set>
#include <sstream>

#include <ATen/ops/allclose.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/pooling.h>
#include <torch/utils.h>

#include "base/errors.h"
#include "core/trainer.h"

namespace trainbus::callbacks {
namespace {

// "torch::nn::LinearImpl" -> "Linear", "my::Net" -> "Net", "my::Wrap<my::Inner>" -> "Wrap".
std::string layer_type(const torch::nn::Module& module) {
  std::string name = module.name();
  name = name.substr(0, name.find('<'));
  const std::size_t scope = name.rfind("::");
  if (scope != std::string::npos) name = name.substr(scope + 2);
  const std::string impl = "Impl";
  if (name.size() > impl.size() && name.compare(name.size() - impl.size(), impl.size(), impl) == 0)
    name.resize(name.size() - impl.size());
  return name;
}

// The parameters of `module` and its submodules, each once: LibTorch lists a parameter once per
// path to it (a shared submodule, tied weights), Python once.
std::vector<at::Tensor> unique_parameters(const torch::nn::Module& module) {
  std::vector<at::Tensor> unique;
  std::set<const void*> seen;
  for (const auto& parameter : module.parameters(/*recurse=*/true)) {
    if (seen.insert(parameter.unsafeGetTensorImpl()).second) unique.push_back(parameter);
  }
  return unique;
}

int64_t count_params(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const auto& parameter : unique_parameters(module)) count += parameter.numel();
  return count;
}

// Python's "," format option: thousands separators in the whole part of a non-negative number
// ("1234567" -> "1,234,567", "1234.568" -> "1,234.568").
std::string with_thousands(std::string number) {
  const std::size_t whole = std::min(number.find('.'), number.size());
  for (int i = static_cast<int>(whole) - 3; i > 0; i -= 3) number.insert(i, ",");
  return number;
}

// Python's "{:<width}".
std::string left(const std::string& text, std::size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

// A shape as Python prints a list: "[10, 256]".
std::string shape_text(const at::Tensor& tensor) {
  std::string text = "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    if (d > 0) text += ", ";
    text += std::to_string(tensor.size(d));
  }
  return text + "]";
}

// `x` through `module` when it is of type Impl, as its forward.
template <class Impl>
bool forward_as(torch::nn::Module& module, at::Tensor& x) {
  auto* typed = dynamic_cast<Impl*>(&module);
  if (typed == nullptr) return false;
  x = typed->forward(x);
  return true;
}

// `x` through a layer whose forward takes and returns one tensor, for the types known here.
bool forward_known_layer(torch::nn::Module& m, at::Tensor& x) {
  namespace nn = torch::nn;
  return forward_as<nn::LinearImpl>(m, x) || forward_as<nn::Conv1dImpl>(m, x) ||
         forward_as<nn::Conv2dImpl>(m, x) || forward_as<nn::Conv3dImpl>(m, x) ||
         forward_as<nn::ConvTranspose1dImpl>(m, x) || forward_as<nn::ConvTranspose2dImpl>(m, x) ||
         forward_as<nn::ConvTranspose3dImpl>(m, x) || forward_as<nn::ReLUImpl>(m, x) ||
         forward_as<nn::LeakyReLUImpl>(m, x) || forward_as<nn::GELUImpl>(m, x) ||
         forward_as<nn::SiLUImpl>(m, x) || forward_as<nn::SigmoidImpl>(m, x) ||
         forward_as<nn::TanhImpl>(m, x) || forward_as<nn::SoftmaxImpl>(m, x) ||
         forward_as<nn::LogSoftmaxImpl>(m, x) || forward_as<nn::DropoutImpl>(m, x) ||
         forward_as<nn::BatchNorm1dImpl>(m, x) || forward_as<nn::BatchNorm2dImpl>(m, x) ||
         forward_as<nn::BatchNorm3dImpl>(m, x) || forward_as<nn::LayerNormImpl>(m, x) ||
         forward_as<nn::FlattenImpl>(m, x) || forward_as<nn::MaxPool1dImpl>(m, x) ||
         forward_as<nn::MaxPool2dImpl>(m, x) || forward_as<nn::AvgPool1dImpl>(m, x) ||
         forward_as<nn::AvgPool2dImpl>(m, x) || forward_as<nn::AdaptiveAvgPool1dImpl>(m, x) ||
         forward_as<nn::AdaptiveAvgPool2dImpl>(m, x) || forward_as<nn::IdentityImpl>(m, x);
}

// Runs `x` through `module` (named `path`) as its forward does, recording its sizes and those of
// its submodules in `sizes`; false (x then undefined) when that cannot be done: a type whose
// forward cannot be called here, or a forward that fails or returns something else than a tensor.
bool run_sized(torch::nn::Module& module, const std::string& path, at::Tensor& x,
               std::map<std::string, LayerSizes>& sizes, torch::nn::AnyModule* any = nullptr) {
  const at::Tensor in = x;
  try {
    if (auto* sequential = dynamic_cast<torch::nn::SequentialImpl*>(&module)) {
      // SequentialImpl::forward: each child's output is the next one's input.
      const auto children = sequential->named_children();
      std::size_t i = 0;
      for (torch::nn::AnyModule& child : *sequential) {
        if (!run_sized(*child.ptr(), path + "." + children[i++].key(), x, sizes, &child))
          return false;
      }
    } else if (any != nullptr) {
      x = any->forward(x);
    } else if (!forward_known_layer(module, x)) {
      return false;
    }
  } catch (const std::exception&) {
    x = at::Tensor();
    return false;
  }
  sizes[path] = {shape_text(in), shape_text(x)};
  return true;
}

// Whether `a` is what `b` is: same shape and close values.
bool same_output(const at::Tensor& a, const at::Tensor& b) {
  return a.defined() && a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         (!a.is_floating_point() ? a.equal(b) : at::allclose(a, b));
}

}  // namespace

std::map<std::string, LayerSizes> layer_sizes(Module& module) {
  std::map<std::string, LayerSizes> sizes;
  if (!module.example_input_array().defined()) return sizes;
  const at::Tensor example = module.example_input_array().to(module.device());
  // Lightning's _forward_example_input: eval mode, no grad, each module's mode restored after.
  std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>> modes;
  for (const auto& each : module.modules(/*include_self=*/false))
    modes.emplace_back(each, each->is_training());
  const bool root_training = module.is_training();
  struct RestoreModes {
    Module& root;
    bool root_training;
    std::vector<std::pair<std::shared_ptr<torch::nn::Module>, bool>>& modes;
    ~RestoreModes() {
      root.train(root_training);  // sets every submodule too; then each its own again
      for (auto& [each, training] : modes) each->train(training);  // parents first
    }
  } restore{module, root_training, modes};
  module.eval();
  torch::NoGradGuard no_grad;
  const at::Tensor expected = module.example_forward()(example);
  // The longest run of consecutive children (in registration order) from the first start whose
  // chain computes forward's output; the children outside it are not used by forward, as far as
  // can be told. The longest, not the first: layers that leave a value as it is (Dropout in eval
  // mode, a ReLU of positive values) would otherwise end the run early and show "?".
  const auto children = module.named_children();
  for (std::size_t start = 0; start < children.size(); ++start) {
    std::map<std::string, LayerSizes> chained;
    at::Tensor x = example;
    for (std::size_t k = start; k < children.size(); ++k) {
      if (!run_sized(*children[k].value(), children[k].key(), x, chained)) break;
      if (same_output(x, expected)) sizes = chained;
    }
    if (!sizes.empty()) return sizes;
  }
  return sizes;
}

void ModelSummaryData::set_sizes(const std::map<std::string, LayerSizes>& sizes) {
  has_sizes = true;
  for (LayerSummary& layer : layers) {
    const auto found = sizes.find(layer.name);
    layer.in_size = found == sizes.end() ? "?" : found->second.in_size;
    layer.out_size = found == sizes.end() ? "?" : found->second.out_size;
  }
}

std::string human_readable_count(int64_t number) {
  static const char* const kLabels[] = {" ", "K", "M", "B", "T"};
  const int digits =
      number > 0 ? static_cast<int>(std::floor(std::log10(static_cast<double>(number)))) + 1 : 1;
  const int groups = std::min((digits + 2) / 3, 5);
  const double scaled = static_cast<double>(number) * std::pow(10.0, -3 * (groups - 1));
  const int index = groups - 1;
  if (index < 1 || scaled >= 100) {
    return with_thousands(std::to_string(static_cast<long long>(scaled))) + " " + kLabels[index];
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", scaled, kLabels[index]);
  return text;
}

int64_t ModelSummaryData::leftover_params() const {
  int64_t in_rows = 0;
  for (const auto& layer : layers) in_rows += layer.params;
  return std::max<int64_t>(total_params - in_rows, 0);
}

ModelSummaryData summarize(const torch::nn::Module& module, int64_t max_depth) {
  TRAINBUS_CHECK(max_depth >= -1, "ModelSummary: max_depth can be -1, 0 or > 0, got ", max_depth);
  ModelSummaryData summary;
  for (const auto& parameter : unique_parameters(module)) {
    summary.total_params += parameter.numel();
    if (parameter.requires_grad()) summary.trainable_params += parameter.numel();
    summary.model_size_mb +=
        static_cast<double>(parameter.numel() * parameter.element_size()) / 1e6;
  }
  std::set<const torch::nn::Module*> seen;  // a submodule registered twice is listed once (Python)
  for (const auto& item : module.named_modules("", /*include_self=*/false)) {
    if (!seen.insert(item.value().get()).second) continue;
    (item.value()->is_training() ? summary.modules_in_train_mode : summary.modules_in_eval_mode)++;
    if (max_depth == 0) continue;
    const auto depth = std::count(item.key().begin(), item.key().end(), '.');
    if (max_depth >= 1 && depth >= max_depth) continue;
    summary.layers.push_back({item.key(), layer_type(*item.value()), count_params(*item.value()),
                              item.value()->is_training()});
  }
  return summary;
}

std::size_t SummaryColumn::width() const {
  std::size_t widest = header.size();
  for (const auto& cell : cells) widest = std::max(widest, cell.size());
  return widest;
}

std::vector<SummaryColumn> ModelSummaryData::columns() const {
  std::vector<SummaryColumn> table{
      {" ", {}}, {"Name", {}}, {"Type", {}}, {"Params", {}}, {"Mode", {}}};
  if (has_sizes) table.insert(table.end(), {{"In sizes", {}}, {"Out sizes", {}}});
  const auto add_row = [&](std::vector<std::string> row, const std::string& in_size,
                           const std::string& out_size) {
    if (has_sizes) row.insert(row.end(), {in_size, out_size});
    for (std::size_t c = 0; c < table.size(); ++c) table[c].cells.push_back(row[c]);
  };
  for (std::size_t i = 0; i < layers.size(); ++i) {
    add_row({std::to_string(i), layers[i].name, layers[i].type,
             human_readable_count(layers[i].params), layers[i].training ? "train" : "eval"},
            layers[i].in_size, layers[i].out_size);
  }
  if (leftover_params() > 0) {
    add_row({" ", "other params", "n/a", human_readable_count(leftover_params()), "n/a"}, "n/a",
            "n/a");
  }
  return table;
}

std::string ModelSummaryData::to_string() const {
  // Lightning's _format_summary_table, without its FLOPs column.
  const std::vector<SummaryColumn> table = columns();
  std::vector<std::size_t> widths;
  std::size_t total_width = 3 * (table.size() + 1);
  for (const SummaryColumn& column : table) {
    widths.push_back(column.width());
    total_width += widths.back();
  }
  std::ostringstream out;
  for (std::size_t c = 0; c < table.size(); ++c)
    out << (c ? " | " : "") << left(table[c].header, widths[c]);
  out << '\n' << std::string(total_width, '-');
  for (std::size_t r = 0; r < table[0].cells.size(); ++r) {
    out << '\n';
    for (std::size_t c = 0; c < table.size(); ++c)
      out << (c ? " | " : "") << left(table[c].cells[r], widths[c]);
  }
  out << '\n' << std::string(total_width, '-');
  // Python's f"{size:,.3f}".
  char fixed[64];
  std::snprintf(fixed, sizeof fixed, "%.3f", model_size_mb);
  const std::string size = with_thousands(fixed);
  out << '\n' << left(human_readable_count(trainable_params), 10) << "Trainable params";
  out << '\n'
      << left(human_readable_count(total_params - trainable_params), 10) << "Non-trainable params";
  out << '\n' << left(human_readable_count(total_params), 10) << "Total params";
  out << '\n' << left(size, 10) << "Total estimated model params size (MB)";
  out << '\n' << left(std::to_string(modules_in_train_mode), 10) << "Modules in train mode";
  out << '\n' << left(std::to_string(modules_in_eval_mode), 10) << "Modules in eval mode";
  return out.str();
}

ModelSummary::ModelSummary(ModelSummaryOptions options) : options_(std::move(options)) {
  TRAINBUS_CHECK(options_.max_depth() >= -1, "ModelSummary: max_depth can be -1, 0 or > 0, got ",
                 options_.max_depth());
}

void ModelSummary::on_fit_start(Trainer& trainer, Module& module) {
  if (options_.max_depth() == 0 || !trainer.is_global_zero() || trainer.replaying()) return;
  last_summary_ = summarize(module, options_.max_depth());
  bool sizes_unknown = false;
  if (module.example_input_array().defined()) {
    const std::map<std::string, LayerSizes> sizes = layer_sizes(module);
    sizes_unknown = sizes.empty();
    last_summary_->set_sizes(sizes);
  }
  std::ostream& out = options_.out() ? *options_.out() : std::cerr;
  print(*last_summary_, out);
  if (sizes_unknown) {
    out << "In sizes and Out sizes are unknown (?): no run of the module's children, in the order "
           "they were registered, computes what example_input_array's function returns (LibTorch "
           "has no forward hooks to see inside forward; see callbacks::layer_sizes)\n"
        << std::flush;
  }
}

void ModelSummary::print(const ModelSummaryData& summary, std::ostream& out) const {
  out << summary.to_string() << '\n' << std::flush;
}

}  // namespace trainbus::callbacks
