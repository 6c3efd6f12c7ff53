#include "callbacks/rich_model_summary.h"

#include <unistd.h>

#include <iostream>
#include <map>
#include <sstream>
#include <vector>

#include "base/errors.h"

namespace trainbus::callbacks {
namespace {

// The ANSI escape of a rich style such as "bold magenta"; throws naming an unknown word.
std::string ansi_of(const std::string& style) {
  static const std::map<std::string, std::string> codes{
      {"bold", "1"},   {"dim", "2"},      {"italic", "3"}, {"underline", "4"},
      {"black", "30"}, {"red", "31"},     {"green", "32"}, {"yellow", "33"},
      {"blue", "34"},  {"magenta", "35"}, {"cyan", "36"},  {"white", "37"}};
  std::istringstream words(style);
  std::string word, sequence;
  while (words >> word) {
    const auto code = codes.find(word);
    TRAINBUS_CHECK(code != codes.end(), "RichModelSummary: header_style '", style,
                   "' has the unknown word '", word,
                   "'; use bold, dim, italic, underline and black, red, green, yellow, blue, "
                   "magenta, cyan, white");
    sequence += (sequence.empty() ? "" : ";") + code->second;
  }
  return sequence.empty() ? std::string() : "\x1b[" + sequence + "m";
}

std::string repeat(const std::string& piece, std::size_t times) {
  std::string out;
  for (std::size_t i = 0; i < times; ++i) out += piece;
  return out;
}

// rich strips a cell's trailing spaces before justifying it: "66  " right-aligned is "    66".
std::string pad(std::string text, std::size_t width, bool right_aligned) {
  if (right_aligned) text.erase(text.find_last_not_of(' ') + 1);
  const std::string fill(width > text.size() ? width - text.size() : 0, ' ');
  return right_aligned ? fill + text : text + fill;
}

}  // namespace

RichModelSummary::RichModelSummary(RichModelSummaryOptions options)
    : ModelSummary(ModelSummaryOptions().max_depth(options.max_depth()).out(options.out())),
      rich_options_(std::move(options)) {
  (void)ansi_of(rich_options_.header_style());  // refuse a bad style now, not at fit start
}

std::string RichModelSummary::render(const ModelSummaryData& summary,
                                     const std::string& header_style, bool styled) {
  const std::string header_on = styled ? ansi_of(header_style) : "";
  const std::string bold = styled ? "\x1b[1m" : "";
  const std::string dim = styled ? "\x1b[2m" : "";
  const std::string off = styled ? "\x1b[0m" : "";
  const std::vector<SummaryColumn> columns = summary.columns();
  std::vector<std::size_t> widths;
  for (const SummaryColumn& column : columns) widths.push_back(column.width());
  // As Lightning's rich table: Params right-aligned, the others left.
  const auto right = [&](std::size_t c) { return columns[c].header == "Params"; };
  // rich's box.HEAVY_HEAD: heavy lines around the header, light ones around the rows.
  auto rule = [&](const char* left_corner, const char* line, const char* cross,
                  const char* right_corner) {
    std::string text = left_corner;
    for (std::size_t c = 0; c < widths.size(); ++c)
      text += repeat(line, widths[c] + 2) + (c + 1 < widths.size() ? cross : right_corner);
    return text + "\n";
  };
  std::ostringstream out;
  out << rule("┏", "━", "┳", "┓") << "┃";
  for (std::size_t c = 0; c < columns.size(); ++c) {
    out << ' ' << header_on << pad(columns[c].header, widths[c], right(c)) << off << " ┃";
  }
  out << '\n' << rule("┡", "━", "╇", "┩");
  for (std::size_t r = 0; r < columns[0].cells.size(); ++r) {
    out << "│";
    for (std::size_t c = 0; c < columns.size(); ++c) {
      const std::string cell = pad(columns[c].cells[r], widths[c], right(c));
      out << ' ' << (c == 0 ? dim + cell + off : cell) << " │";  // the index column is dim
    }
    out << '\n';
  }
  out << rule("└", "─", "┴", "┘");
  auto total = [&](const std::string& label, const std::string& value) {
    out << bold << label << off << ": " << pad(value, 10, false) << '\n';
  };
  // As Lightning's: counts through get_human_readable_count, the size in MB as a whole count.
  total("Trainable params", human_readable_count(summary.trainable_params));
  total("Non-trainable params",
        human_readable_count(summary.total_params - summary.trainable_params));
  total("Total params", human_readable_count(summary.total_params));
  total("Total estimated model params size (MB)",
        human_readable_count(static_cast<int64_t>(summary.model_size_mb)));
  total("Modules in train mode", std::to_string(summary.modules_in_train_mode));
  total("Modules in eval mode", std::to_string(summary.modules_in_eval_mode));
  return out.str();
}

void RichModelSummary::print(const ModelSummaryData& summary, std::ostream& out) const {
  bool styled = false;
  if (rich_options_.styled()) {
    styled = *rich_options_.styled();
  } else if (&out == &std::cerr) {
    styled = ::isatty(2) == 1;
  } else if (&out == &std::cout) {
    styled = ::isatty(1) == 1;
  }
  out << render(summary, rich_options_.header_style(), styled) << std::flush;
}

}  // namespace trainbus::callbacks
