#pragma once
/// RichModelSummary: ModelSummary drawn as a box table, as Lightning's (which uses rich).

#include <ostream>
#include <string>

#include "callbacks/model_summary.h"

namespace trainbus::callbacks {

/// Lightning's RichModelSummary arguments and defaults.
struct RichModelSummaryOptions {
  /// Levels of submodules shown: 1 the module's children, -1 all, 0 no summary.
  TRAINBUS_ARG(int64_t, max_depth) = 1;
  /// Style of the header row, in rich's words: "bold", "dim", "italic", "underline" and the colour
  /// names black, red, green, yellow, blue, magenta, cyan, white; used when `out` is a terminal.
  TRAINBUS_ARG(std::string, header_style) = "bold magenta";
  /// Where the table is printed; std::cerr by default.
  TRAINBUS_ARG(std::ostream*, out) = nullptr;
  /// Use the terminal styles (ANSI escapes); unset: when `out` is std::cerr or std::cout on a
  /// terminal.
  TRAINBUS_ARG(std::optional<bool>, styled);
};

/// The same rows and totals as ModelSummary, in rich's heavy-headed box table, Params
/// right-aligned, then "Trainable params: ..." lines with bold labels. Throws MisconfigurationError
/// for an unknown word in header_style.
class RichModelSummary : public ModelSummary {
 public:
  explicit RichModelSummary(RichModelSummaryOptions options = {});

  /// The table as printed, with styles or without.
  static std::string render(const ModelSummaryData& summary, const std::string& header_style,
                            bool styled);

 protected:
  void print(const ModelSummaryData& summary, std::ostream& out) const override;

 private:
  RichModelSummaryOptions rich_options_;
};

}  // namespace trainbus::callbacks
