#pragma once
// A fresh directory under the system temp dir, removed with everything in it at scope exit.

#include <filesystem>
#include <set>
#include <string>

namespace trainbus::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const noexcept { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

/// The names of the entries of `dir` (files, directories, links), sorted.
std::set<std::string> names_in(const std::string& dir);

}  // namespace trainbus::testing
