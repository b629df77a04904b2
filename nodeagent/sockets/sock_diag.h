// The kernel's sock_diag, for two things about this network namespace's
// TCP connections. Ending those to one address: the links to a cut-off node's
// relay that this agent handed to programs (a shim's direct connect,
// sockets/port_relay.h) and no longer holds, so it cannot reset them
// itself (SOCK_DESTROY, as `ss -K`: the program's next call on it fails
// with ECONNABORTED; needs CONFIG_INET_DIAG_DESTROY and CAP_NET_ADMIN,
// without them the links end by their TCP keepalive instead, ETIMEDOUT).
// And finding the socket of one exact connection (its inode), to check
// that a server holds the other end of a connection the agent made
// (sockets/handover.h; no privilege needed). Hand-written netlink (a dump
// and single requests): libmnl would add a dependency for three messages.
#pragma once

#include <sys/socket.h>

#include <cstddef>

#include "consistency/status.h"

namespace onebox {

// Aborts every TCP connection here whose far end is `to` (IPv4 or IPv6,
// with its port). Returns how many.
Result<size_t> AbortConnectionsTo(const sockaddr& to);

// The inode of the TCP socket here whose own address is `self` and far
// address `peer` (IPv4, or IPv6 with IPv4-mapped ones taken as IPv4); 0
// when there is none.
uint64_t TcpSocketInode(const sockaddr_storage& self, const sockaddr_storage& peer);

}  // namespace onebox
