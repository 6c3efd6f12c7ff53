#include "apps/epoch_printer.h"

#include <iomanip>
#include <sstream>

#include "core/trainer.h"

namespace trainbus::apps {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void EpochPrinter::on_train_epoch_start(Trainer& trainer, Module& module) {
  epoch_start_ = std::chrono::steady_clock::now();
}

void EpochPrinter::on_train_epoch_end(Trainer& trainer, Module& module) {
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start_).count();
  std::ostringstream line;
  line << "epoch " << trainer.current_epoch() + 1;
  if (trainer.max_epochs() > 0) line << '/' << trainer.max_epochs();
  line << std::fixed << std::setprecision(4);
  for (const auto& [name, value] : trainer.callback_metrics()) {
    // Epoch means of training values ("train_loss_epoch" shown as "train_loss") and validation values.
    if (ends_with(name, "_epoch")) {
      line << "  " << name.substr(0, name.size() - 6) << ' ' << value;
    } else if (name.rfind("val_", 0) == 0) {
      line << "  " << name << ' ' << value;
    }
  }
  line << std::setprecision(1) << "  " << seconds << 's';
  out_ << line.str() << std::endl;
}

}  // namespace trainbus::apps
