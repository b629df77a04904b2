// The abstract Unix socket name (Linux's namespace of names that are not
// files) on which a node's agent listens for a Unix socket bound under
// /cluster on another node (nodeagent/sockets/port_relay.h), and to which the
// shim's connect() turns when the path has no socket in this node's view
// (preload/socket.cc). Both sides make it from the agent's view root and the
// socket's path below it, written once here: "\0onebox-VIEW-PATH", each an
// FNV-1a hash in hex (abstract names are per network namespace; two agents
// sharing one, as in tests, differ by their views).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

namespace onebox {

inline uint64_t Fnv1a64(std::string_view s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// Writes the name (starting with its NUL) to out (at least kUnixRelayNameBytes) and returns its length.
constexpr size_t kUnixRelayNameBytes = 48;
inline size_t UnixRelayName(std::string_view view_root, std::string_view rel, char* out) {
  out[0] = '\0';
  int n = std::snprintf(out + 1, kUnixRelayNameBytes - 1, "onebox-%016llx-%016llx",
                        static_cast<unsigned long long>(Fnv1a64(view_root)),
                        static_cast<unsigned long long>(Fnv1a64(rel)));
  return 1 + static_cast<size_t>(n);
}

}  // namespace onebox
