// Where libonebox.so is, for the programs the agent and the CLI start under
// the shim (`onebox exec`, `onebox run`): $ONEBOX_SHIM, else next to this
// binary (build/bin -> build/lib, /usr/local/bin -> /usr/local/lib), else the
// system library directories. "" when there is none.
#pragma once

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace onebox {

inline std::string FindShimLibrary() {
  if (const char* s = std::getenv("ONEBOX_SHIM"); s != nullptr && *s != '\0') return s;
  std::vector<std::string> candidates;
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(dir + "/../lib/libonebox.so");
  }
  candidates.push_back("/usr/local/lib/libonebox.so");
  candidates.push_back("/usr/lib/libonebox.so");
  for (const std::string& c : candidates) {
    char real[PATH_MAX];
    if (realpath(c.c_str(), real) != nullptr && access(real, R_OK) == 0) return real;
  }
  return "";
}

}  // namespace onebox
