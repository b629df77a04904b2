#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include <fmt/format.h>

#include "nodeagent/cli/commands.h"

namespace onebox {

namespace {
// libonebox.so: $ONEBOX_SHIM, else next to this binary (build/bin -> build/lib,
// /usr/local/bin -> /usr/local/lib), else the system library directories.
std::string FindShim() {
  if (const char* s = std::getenv("ONEBOX_SHIM"); s != nullptr && *s != '\0') return s;
  std::vector<std::string> candidates;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(dir + "/../lib/libonebox.so");
  }
  candidates.push_back("/usr/local/lib/libonebox.so");
  candidates.push_back("/usr/lib/libonebox.so");
  for (const std::string& c : candidates) {
    char real[4096];
    if (realpath(c.c_str(), real) != nullptr && access(real, R_OK) == 0) return real;
  }
  return "";
}
}  // namespace

int CmdExec(const std::string& socket, const std::vector<std::string>& argv) {
  std::string shim = FindShim();
  if (shim.empty()) {
    std::cerr << "onebox: cannot find libonebox.so (set ONEBOX_SHIM to its path)\n";
    return 127;
  }
  const char* preload = std::getenv("LD_PRELOAD");
  std::string value = shim;
  if (preload != nullptr && *preload != '\0' && std::string_view(preload).find(shim) == std::string_view::npos)
    value = shim + " " + preload;
  setenv("LD_PRELOAD", value.c_str(), 1);
  if (!socket.empty()) setenv("ONEBOX_SOCKET", socket.c_str(), 1);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  std::cerr << fmt::format("onebox: cannot run {}: {}\n", argv[0], strerror(errno));
  return 127;
}

}  // namespace onebox
