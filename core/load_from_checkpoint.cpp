#include "core/load_from_checkpoint.h"

#include "base/errors.h"
#include "checkpoint/format.h"
#include "checkpoint/module_state.h"

namespace trainbus {

std::shared_ptr<Module> load_module_from_checkpoint(const std::string& path,
                                                    const ModuleFactory& make,
                                                    const LoadFromCheckpointOptions& options) {
  checkpoint::LoadedCheckpoint checkpoint = checkpoint::read_checkpoint(path);
  for (const auto& [name, value] : options.hparams())
    checkpoint.data.hyper_parameters.insert(name, value);
  std::shared_ptr<Module> module = make(checkpoint.data.hyper_parameters);
  TRAINBUS_CHECK(module != nullptr, "load_from_checkpoint(", path,
                 "): the factory built no module");
  module->configure_model();  // layers built there must exist before their weights are loaded
  if (options.map_location()) module->to(*options.map_location());
  module->on_load_checkpoint(checkpoint.data);  // may change the checkpoint first
  checkpoint::load_module_state(*module, checkpoint.data.state_dict, path, options.strict());
  module->eval();
  return module;
}

}  // namespace trainbus
