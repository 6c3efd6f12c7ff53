#pragma once
/// hparams.yaml: the hyper-parameters a logger keeps, in Lightning's file (save_hparams_to_yaml).

#include <map>
#include <string>

namespace trainbus::observers {

/// Writes `hparams` (each a typed YAML scalar) to `path`, replacing it, one `name: value` line
/// each in name order, `{}` when there are none. Throws std::runtime_error naming the file when
/// it cannot be written.
void write_hparams_yaml(const std::string& path, const std::map<std::string, std::string>& hparams);

}  // namespace trainbus::observers
