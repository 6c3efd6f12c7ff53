#include "core/detail/hparams_text.h"

#include <sstream>

#include <ATen/core/ivalue.h>

#include "base/yaml_scalar.h"

namespace trainbus::detail {
namespace {

// One hyper-parameter as a YAML scalar that keeps its type (hparams.yaml reads back in PyYAML
// and Lightning's load_hparams_from_yaml as what the module saved): 'text', 64, 0.001, true, null,
// [0.1, 0.2]; anything else as quoted text.
std::string render_hparam(const c10::IValue& value) {
  if (value.isString()) return yaml_quoted(value.toStringRef());
  if (value.isDouble()) return yaml_float(value.toDouble());
  if (value.isInt()) return std::to_string(value.toInt());
  if (value.isBool()) return value.toBool() ? "true" : "false";
  if (value.isNone()) return "null";
  if (value.isList()) {
    std::string text = "[";
    for (const c10::IValue& item : value.toListRef()) {
      if (text.size() > 1) text += ", ";
      text += render_hparam(item);
    }
    return text + "]";
  }
  std::ostringstream out;
  out << value;
  return yaml_quoted(out.str());
}

}  // namespace

std::map<std::string, std::string> hparams_text(const StateDict& hparams) {
  std::map<std::string, std::string> text;
  for (const auto& [name, value] : hparams) text[name] = render_hparam(value);
  return text;
}

}  // namespace trainbus::detail
