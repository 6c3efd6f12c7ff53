// The module's hyper-parameters in a fit: hparams.yaml keeps each one's type, as Lightning's does,
// so that PyYAML and Lightning's load_hparams_from_yaml read back what the module saved.

#include "core/trainer.h"
#include "observers/csv_logger.h"
#include "tests/support/boring.h"
#include "tests/support/catch.h"
#include "tests/support/log_files.h"
#include "tests/support/temp_dir.h"
#include "tests/support/trainer_options.h"

using namespace trainbus;
using trainbus::testing::read_text_file;
using trainbus::testing::TempDir;

namespace {

class WithHyperParameters : public testing::BoringModule {
 public:
  WithHyperParameters() {
    StateDict hparams;
    hparams.insert("lr", 1e-4);
    hparams.insert("eps", 1e-8);
    hparams.insert("batch_size", int64_t{64});
    hparams.insert("model", "mlp");
    hparams.insert("a: b", 0.5);
    hparams.insert("amsgrad", false);
    hparams.insert("betas", std::vector<double>{0.9, 0.999});
    hparams.insert("note", "it's");
    save_hyperparameters(hparams);
  }
};

}  // namespace

TEST_CASE("hparams.yaml keeps the hyper-parameters' types and quotes keys that need it",
          "[observers][csv][hparams]") {
  TempDir dir;
  Trainer trainer(
      testing::trainer_options().max_epochs(1).limit_train_batches(1).limit_val_batches(0));
  trainer.add_observer(std::make_shared<observers::CsvLogger>(
      observers::CsvLoggerOptions().log_dir(dir.file("run"))));
  WithHyperParameters module;
  testing::RandomDataModule data;
  trainer.fit(module, data);

  // Lightning (save_hparams_to_yaml, PyYAML 6.0.3's yaml.dump) writes the same mapping as
  //   'a: b': 0.5 / amsgrad: false / batch_size: 64 / betas: [0.9, 0.999] / eps: 1.0e-08 /
  //   lr: 0.0001 / model: mlp / note: it's
  // trainbus quotes every string ('mlp'), which PyYAML reads back as the same str. Before typed
  // hparams, eps was written `1e-08`, which PyYAML reads as the string '1e-08', and the key
  // `a: b` unquoted broke the file.
  CHECK(read_text_file(dir.file("run/hparams.yaml")) ==
        "'a: b': 0.5\n"
        "amsgrad: false\n"
        "batch_size: 64\n"
        "betas: [0.9, 0.999]\n"
        "eps: 1.0e-08\n"
        "lr: 0.0001\n"
        "model: 'mlp'\n"
        "note: 'it''s'\n");
}
