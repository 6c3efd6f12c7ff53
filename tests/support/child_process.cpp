#include "tests/support/child_process.h"

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace trainbus::testing {

pid_t spawn_test_child(const std::string& tag, const std::string& dir) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::string variable = std::string(kChildDirVariable) + "=" + dir;
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  env.push_back(variable.data());
  env.push_back(nullptr);
  std::string tag_argument = tag;
  char* argv[] = {const_cast<char*>(self.c_str()), tag_argument.data(), nullptr};
  pid_t pid = 0;
  const int error = posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, env.data());
  if (error != 0)
    throw std::runtime_error("cannot start " + self + " " + tag + ": error " +
                             std::to_string(error));
  return pid;
}

int wait_for_child(pid_t child) {
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR)
      throw std::runtime_error("waitpid failed for child " + std::to_string(child));
  }
  return status;
}

bool run_test_child(const std::string& tag, const std::string& dir) {
  const int status = wait_for_child(spawn_test_child(tag, dir));
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::string test_child_dir() {
  const char* dir = std::getenv(kChildDirVariable);
  return dir == nullptr ? std::string() : std::string(dir);
}

}  // namespace trainbus::testing
