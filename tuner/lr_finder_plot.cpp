// LRFinder::write_plot: the range test as an SVG line chart, drawn by hand (no plotting library in
// Debian's C++ world worth a dependency for one chart): loss over learning rate, a log axis in
// exponential mode, the suggestion as a red point, as Lightning's matplotlib plot.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tuner/lr_finder.h"

namespace trainbus::tuner {

namespace {

constexpr double kWidth = 640, kHeight = 440;
constexpr double kLeft = 80, kRight = 24, kTop = 40, kBottom = 56;

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.4g", value);
  return text;
}

// Evenly spaced "nice" ticks (1, 2 or 5 x 10^k apart) covering [low, high].
std::vector<double> nice_ticks(double low, double high, int wanted) {
  const double raw = (high - low) / std::max(1, wanted);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double factor : {1.0, 2.0, 5.0, 10.0}) {
    step = factor * magnitude;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  const double first = std::ceil(low / step) * step;
  // By index, never by accumulation: a step below the rounding of `first` would never advance.
  for (int i = 0; i <= 4 * wanted; ++i) {
    const double tick = first + i * step;
    if (tick > high + step * 1e-9) break;
    ticks.push_back(std::abs(tick) < step * 1e-9 ? 0.0 : tick);
  }
  return ticks;
}

}  // namespace

void LRFinder::write_plot(const std::string& path, bool suggest) const {
  const bool log_x = mode_ == LRFinderMode::kExponential;
  const auto x_of = [&](double lr) { return log_x ? std::log10(lr) : lr; };
  double x_low = x_of(min_lr_), x_high = x_of(max_lr_);
  double y_low = INFINITY, y_high = -INFINITY;
  for (std::size_t i = 0; i < losses_.size(); ++i) {
    if (!std::isfinite(losses_[i])) continue;
    y_low = std::min(y_low, losses_[i]);
    y_high = std::max(y_high, losses_[i]);
    x_low = std::min(x_low, x_of(lrs_[i]));
    x_high = std::max(x_high, x_of(lrs_[i]));
  }
  if (!std::isfinite(y_low)) y_low = 0, y_high = 1;  // no finite loss: empty axes
  // Flat (or flat to the last bits) losses: an axis a little around them.
  const double spread = std::max(1e-12, 1e-6 * std::max(std::abs(y_low), std::abs(y_high)));
  if (y_high - y_low < spread) {
    const double half = std::max(0.5 * spread, 0.05 * std::abs(y_low));
    y_low -= half, y_high += half;
  }
  const double pad = 0.05 * (y_high - y_low);
  y_low -= pad;
  y_high += pad;
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  const auto px = [&](double lr) { return kLeft + (x_of(lr) - x_low) / (x_high - x_low) * plot_w; };
  const auto py = [&](double loss) { return kTop + (y_high - loss) / (y_high - y_low) * plot_h; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">"
      << "Learning rate finder (" << (log_x ? "exponential" : "linear") << ", " << lrs_.size()
      << " steps)</text>\n";
  // Axes, ticks and grid.
  svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << plot_w << "\" height=\""
      << plot_h << "\" fill=\"none\" stroke=\"black\"/>\n";
  std::vector<std::pair<double, std::string>> x_ticks;
  if (log_x && std::floor(x_high) - std::ceil(x_low) >= 1) {
    for (double k = std::ceil(x_low); k <= std::floor(x_high); ++k) {
      x_ticks.emplace_back(std::pow(10.0, k), "1e" + std::to_string(static_cast<int>(k)));
    }
  } else if (log_x) {  // within a decade or two: both ends
    x_ticks.emplace_back(std::pow(10.0, x_low), number(std::pow(10.0, x_low)));
    x_ticks.emplace_back(std::pow(10.0, x_high), number(std::pow(10.0, x_high)));
  } else {
    for (double tick : nice_ticks(x_low, x_high, 6)) x_ticks.emplace_back(tick, number(tick));
  }
  for (const auto& [lr, label] : x_ticks) {
    const double x = px(lr);
    svg << "<line x1=\"" << x << "\" y1=\"" << kTop << "\" x2=\"" << x << "\" y2=\""
        << kTop + plot_h << "\" stroke=\"#ddd\"/>\n"
        << "<text x=\"" << x << "\" y=\"" << kTop + plot_h + 18 << "\" text-anchor=\"middle\">"
        << label << "</text>\n";
  }
  for (double tick : nice_ticks(y_low, y_high, 6)) {
    const double y = py(tick);
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << y << "\" x2=\"" << kLeft + plot_w << "\" y2=\""
        << y << "\" stroke=\"#ddd\"/>\n"
        << "<text x=\"" << kLeft - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
        << number(tick) << "</text>\n";
  }
  svg << "<text x=\"" << kLeft + plot_w / 2 << "\" y=\"" << kHeight - 14
      << "\" text-anchor=\"middle\">Learning rate" << (log_x ? " (log scale)" : "") << "</text>\n"
      << "<text transform=\"translate(20," << kTop + plot_h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">Loss</text>\n";
  // The curve, broken where a loss is missing.
  std::string points;
  const auto flush = [&] {
    if (!points.empty()) {
      svg << "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"" << points
          << "\"/>\n";
    }
    points.clear();
  };
  for (std::size_t i = 0; i < losses_.size(); ++i) {
    if (!std::isfinite(losses_[i])) {
      flush();
      continue;
    }
    points += number(px(lrs_[i])) + "," + number(py(losses_[i])) + " ";
  }
  flush();
  if (suggest) {
    if (const std::optional<double> lr = suggestion()) {
      const double loss = losses_[*optimal_index_];
      svg << "<circle cx=\"" << px(*lr) << "\" cy=\"" << py(loss) << "\" r=\"6\" fill=\"red\"/>\n"
          << "<text x=\"" << kLeft + plot_w - 8 << "\" y=\"" << kTop + 18
          << "\" text-anchor=\"end\" fill=\"red\">suggested lr " << number(*lr) << "</text>\n";
    }
  }
  svg << "</svg>\n";

  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << svg.str();
  file.close();
  if (!file) {
    throw std::runtime_error("LRFinder::write_plot: cannot write " + path +
                             "; check that its directory exists and is writable");
  }
}

}  // namespace trainbus::tuner
