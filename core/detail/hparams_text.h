#pragma once
/// Private to core/: hyper-parameters as the typed YAML scalars events carry (FitStart,
/// HyperparamsLogged) and loggers write to hparams.yaml. Not installed.

#include <map>
#include <string>

#include "checkpoint/state_dict.h"

namespace trainbus::detail {

/// Each value of `hparams` as a YAML scalar that keeps its type when read back ('mlp', 64, 0.001,
/// 1.0e-05, true, null, [0.1, 0.2]); anything else as quoted text.
std::map<std::string, std::string> hparams_text(const StateDict& hparams);

}  // namespace trainbus::detail
