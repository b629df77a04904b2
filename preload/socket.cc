// Interposed: bind. A TCP socket bound to a port on the any address or on
// loopback (0.0.0.0, 127.0.0.1, ::, ::1, ::ffff:127.0.0.1) takes a cluster
// port: the agent claims it across the cluster before the kernel binds it
// (nodeagent/sockets/port_table.h), so a port another node's program holds
// fails with EADDRINUSE, and every other node's agent then listens on it
// for its own programs and relays their connections here
// (nodeagent/sockets/port_relay.h). connect() needs nothing of the shim:
// a remote port is a local listener. Port 0, UDP, Unix sockets and other
// addresses go straight to libc.
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "preload/link.h"
#include "preload/native_path.h"
#include "preload/shim.h"

using namespace onebox::shim;

namespace {

struct ClusterPort {
  unsigned port = 0;
  bool ipv6 = false;  // other nodes' connections come in over ::1
};

bool IsTcpStream(int fd) {
  int type = 0, protocol = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) return false;
  len = sizeof protocol;
  return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0 && protocol == IPPROTO_TCP;
}

// The cluster port addr names, if it names one.
bool ClusterPortOf(const sockaddr* addr, socklen_t len, ClusterPort* out) {
  const char* bytes = reinterpret_cast<const char*>(addr);
  const size_t read = std::min<size_t>(len, sizeof(sockaddr_in6));  // what is copied below, at most
  if (addr == nullptr || len < sizeof(sa_family_t) || !MayReadPage(bytes) || !MayReadPage(bytes + read - 1))
    return false;  // the kernel answers (EINVAL, EFAULT)
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    sockaddr_in in;
    std::memcpy(&in, addr, sizeof in);
    const uint32_t host = ntohl(in.sin_addr.s_addr);
    if (in.sin_port == 0 || (host != INADDR_ANY && host != INADDR_LOOPBACK)) return false;
    *out = {ntohs(in.sin_port), false};
    return true;
  }
  if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    sockaddr_in6 in6;
    std::memcpy(&in6, addr, sizeof in6);
    if (in6.sin6_port == 0) return false;
    const in6_addr& a = in6.sin6_addr;
    const bool mapped_loopback = IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127 && a.s6_addr[13] == 0 &&
                                 a.s6_addr[14] == 0 && a.s6_addr[15] == 1;
    if (!IN6_IS_ADDR_UNSPECIFIED(&a) && !IN6_IS_ADDR_LOOPBACK(&a) && !mapped_loopback) return false;
    *out = {ntohs(in6.sin6_port), !mapped_loopback};
    return true;
  }
  return false;
}

}  // namespace

extern "C" {
#pragma GCC visibility push(default)

int bind(int fd, const struct sockaddr* addr, socklen_t len) {
  ONEBOX_REAL(bind);
  ClusterPort port;
  struct stat st;
  if (!ClusterPortOf(addr, len, &port) || !IsTcpStream(fd) || fstat(fd, &st) != 0) return real_bind(fd, addr, len);
  const int saved = errno;
  if (int err = BindPort(port.port, port.ipv6, st.st_ino, /*release=*/false); err != 0) return Fail(err);
  errno = saved;
  int bound = real_bind(fd, addr, len);
  if (bound != 0) {  // refused here after all (EACCES below 1024, a local holder): the claim goes
    const int why = errno;
    BindPort(port.port, port.ipv6, st.st_ino, /*release=*/true);
    errno = why;
  }
  return bound;
}

#pragma GCC visibility pop
}
