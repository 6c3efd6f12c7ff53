#include "core/trainer_options.h"

#include <cmath>
#include <sstream>

#include "base/errors.h"

namespace trainbus {

void BatchLimit::validate(std::string_view option) const {
  if (is_fraction_) {
    TRAINBUS_CHECK(std::isfinite(fraction_) && fraction_ >= 0.0 && fraction_ <= 1.0, "`", option,
                   "` as a fraction must be in [0.0, 1.0], got ", fraction_,
                   "; pass an integer for a number of batches");
  } else {
    TRAINBUS_CHECK(batches_ >= 0, "`", option, "` must be >= 0 batches, got ", batches_);
  }
}

int64_t BatchLimit::apply(int64_t available, std::string_view option) const {
  if (!is_fraction_) return std::min(batches_, available);
  const auto batches = static_cast<int64_t>(static_cast<double>(available) * fraction_);
  TRAINBUS_CHECK(!(fraction_ > 0.0 && batches == 0 && available > 0), "You requested to check ",
                 fraction_, " of the loader through `", option, "` but ", fraction_, " * ",
                 available, " batches < 1; increase `", option,
                 "` or pass an integer number of batches");
  return batches;
}

std::string BatchLimit::to_string() const {
  std::ostringstream out;
  if (is_fraction_) {
    out << fraction_;
  } else {
    out << batches_;
  }
  return out.str();
}

}  // namespace trainbus
