#include "observers/hparams_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "base/yaml_scalar.h"

namespace trainbus::observers {

void write_hparams_yaml(const std::string& path,
                        const std::map<std::string, std::string>& hparams) {
  const auto fail = [&] {
    throw std::runtime_error(path + ": cannot write the hyper-parameters (" + std::strerror(errno) +
                             ")");
  };
  std::ofstream out(path, std::ios::trunc);
  if (!out) fail();
  if (hparams.empty()) out << "{}\n";
  for (const auto& [name, value] : hparams)
    out << yaml_key(name) << ": " << yaml_scalar_or_quoted(value) << '\n';
  out.flush();
  if (!out) fail();
}

}  // namespace trainbus::observers
