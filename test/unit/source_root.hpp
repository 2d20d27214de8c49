// The repository root for unit tests that read the shipped files (eventd.jsonc, schemas/).
#pragma once

#include <filesystem>
#include <system_error>
#include <vector>

namespace eventd::test {

// Found from this file's path (relative to the build directory when meson compiles it)
// and the running executable; empty if not found.
inline std::filesystem::path source_root() {
  namespace fs = std::filesystem;
  const fs::path file = __FILE__;
  std::vector<fs::path> candidates;
  if (file.is_absolute()) {
    candidates.push_back(file);
  } else {
    std::error_code ec;
    candidates.push_back(fs::current_path(ec) / file);
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec)
      for (fs::path dir = exe.parent_path(); dir.has_relative_path(); dir = dir.parent_path())
        candidates.push_back(dir / file);
  }
  for (const auto& c : candidates) {
    std::error_code ec;
    if (!fs::exists(c, ec)) continue;
    for (fs::path dir = c.parent_path(); dir.has_relative_path(); dir = dir.parent_path())
      if (fs::exists(dir / "eventd.jsonc", ec) && fs::is_directory(dir / "schemas", ec)) return dir;
  }
  return {};
}

}  // namespace eventd::test
