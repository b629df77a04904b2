// Where the pieces installed beside this binary are: onebox and onebox-core
// (each hands commands to the other), and libonebox.so, for the programs the
// agent and the CLI start under the shim (`onebox exec`, `onebox run`):
// $ONEBOX_SHIM, else next to this binary (build/bin -> build/lib,
// /usr/local/bin -> /usr/local/lib), else the system library directories.
#pragma once

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace onebox {

// relative (a name, "../lib/x") to the directory of this binary; "" when
// this binary cannot be found (/proc/self/exe).
inline std::string BesideThisBinary(const std::string& relative) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "";
  std::string path(exe, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1) + relative;
}

// libonebox.so; "" when there is none.
inline std::string FindShimLibrary() {
  if (const char* s = std::getenv("ONEBOX_SHIM"); s != nullptr && *s != '\0') return s;
  std::vector<std::string> candidates;
  if (std::string beside = BesideThisBinary("../lib/libonebox.so"); !beside.empty()) candidates.push_back(beside);
  candidates.push_back("/usr/local/lib/libonebox.so");
  candidates.push_back("/usr/lib/libonebox.so");
  for (const std::string& c : candidates) {
    char real[PATH_MAX];
    if (realpath(c.c_str(), real) != nullptr && access(real, R_OK) == 0) return real;
  }
  return "";
}

}  // namespace onebox
