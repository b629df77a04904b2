// Ends this network namespace's TCP connections to one address: the links to
// a dead node's relay that this agent handed to programs (a shim's direct
// connect, sockets/port_relay.h) and no longer holds, so it cannot reset
// them itself. Through the kernel's sock_diag (SOCK_DESTROY, as `ss -K`):
// the kernel aborts each one, and the program's next call on it fails with
// ECONNABORTED. Needs CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN; without
// them the links end by their TCP keepalive instead (ETIMEDOUT).
// Hand-written netlink (one dump, one request per connection): libmnl
// would add a dependency for two messages.
#pragma once

#include <sys/socket.h>

#include <cstddef>

#include "consistency/status.h"

namespace onebox {

// Aborts every TCP connection here whose far end is `to` (IPv4 or IPv6,
// with its port). Returns how many.
Result<size_t> AbortConnectionsTo(const sockaddr& to);

}  // namespace onebox
