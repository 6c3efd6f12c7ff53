#include "observers/hparams_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/yaml_scalar.h"

namespace trainbus::observers {

void write_hparams_yaml(const std::string& path,
                        const std::map<std::string, std::string>& hparams) {
  const auto fail = [&] {
    throw std::runtime_error(path + ": cannot write the hyper-parameters (" + std::strerror(errno) +
                             ")");
  };
  // Written aside and renamed over the file: a reader, a crash or a second logger writing the
  // same hparams.yaml (CSV and TensorBoard share a run directory) never sees a torn file; the
  // last writer wins. The temporary's name is unique per process and thread.
  std::ostringstream unique;
  unique << path << ".tmp-" << ::getpid() << '-' << std::this_thread::get_id();
  const std::string temporary = unique.str();
  {
    std::ofstream out(temporary, std::ios::trunc);
    if (!out) fail();
    if (hparams.empty()) out << "{}\n";
    for (const auto& [name, value] : hparams)
      out << yaml_key(name) << ": " << yaml_scalar_or_quoted(value) << '\n';
    out.flush();
    if (!out) {
      std::remove(temporary.c_str());
      fail();
    }
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(temporary.c_str());
    errno = error;
    fail();
  }
}

}  // namespace trainbus::observers
