// The agent's --listen address: parsed (HOST:PORT, [V6]:PORT), and tried
// before gRPC binds it, because gRPC reports a failed bind only as "could
// not start": a taken port gets its real reason. Also the TCP listeners the
// agent opens itself (the port relay's, --metrics) and an address's port.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "consistency/status.h"

namespace onebox {

struct ListenAddress {
  std::string host;  // without the brackets of an IPv6 literal
  int port = 0;      // 0: the kernel picks one
  // HOST:PORT as gRPC and peers write it, with another port (the one bound).
  std::string WithPort(int bound_port) const;
};

Result<ListenAddress> ParseListenAddress(const std::string& addr);
// Whether host is the any address (0.0.0.0, ::): one to listen on, and no
// address another machine can dial.
bool IsAnyAddress(const std::string& host);
// Whether every address host resolves to is a loopback one (127.0.0.0/8,
// ::1): only such a host is reached by this machine alone.
bool OnlyLoopback(const std::string& host);
// Binds every address host resolves to, and lets go again.
Status CheckCanListen(const ListenAddress& address);

// An IPv4 or IPv6 address's port, in host order; and setting it.
uint16_t PortOf(const sockaddr_storage& a);
void SetPort(sockaddr_storage* a, uint16_t port);
// host (an address, or a name: its first address of family, any family by
// default) and port as a socket address; 0, or -errno when host does not
// resolve (to an address of that family).
int SocketAddressOf(const std::string& host, uint32_t port, sockaddr_storage* addr, socklen_t* len,
                    int family = AF_UNSPEC);
// A non-blocking TCP listener (SO_REUSEADDR) on host (an address, or a
// name: its first address) and port (0: the kernel picks); -errno when it
// cannot. An IPv6 one takes IPv6 only unless v6_only is false ("::" then
// takes IPv4 too).
int ListenTcp(const std::string& host, uint32_t port, bool v6_only = true);

}  // namespace onebox
