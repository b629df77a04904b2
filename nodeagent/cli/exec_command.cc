#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include <fmt/format.h>

#include "nodeagent/cli/commands.h"
#include "nodeagent/local/shim_library.h"

namespace onebox {


int CmdExec(const std::string& socket, const std::string& place, const std::vector<std::string>& argv) {
  if (!place.empty() && place[0] == '-') {
    std::cerr << "onebox: --place takes auto, off, or node names separated by commas\n";
    return 2;
  }
  std::string shim = FindShimLibrary();
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
  if (!place.empty()) setenv("ONEBOX_PLACE", place.c_str(), 1);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  std::cerr << fmt::format("onebox: cannot run {}: {}\n", argv[0], strerror(errno));
  return 127;
}

}  // namespace onebox
