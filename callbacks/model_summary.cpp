#include "callbacks/model_summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <set>
#include <sstream>

#include <torch/nn/module.h>

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

}  // namespace

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
  const auto add_row = [&](const std::vector<std::string>& row) {
    for (std::size_t c = 0; c < table.size(); ++c) table[c].cells.push_back(row[c]);
  };
  for (std::size_t i = 0; i < layers.size(); ++i) {
    add_row({std::to_string(i), layers[i].name, layers[i].type,
             human_readable_count(layers[i].params), layers[i].training ? "train" : "eval"});
  }
  if (leftover_params() > 0) {
    add_row({" ", "other params", "n/a", human_readable_count(leftover_params()), "n/a"});
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
  std::ostream& out = options_.out() ? *options_.out() : std::cerr;
  print(*last_summary_, out);
}

void ModelSummary::print(const ModelSummaryData& summary, std::ostream& out) const {
  out << summary.to_string() << '\n' << std::flush;
}

}  // namespace trainbus::callbacks
