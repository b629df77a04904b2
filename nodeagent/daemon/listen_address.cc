#include "nodeagent/daemon/listen_address.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace onebox {

std::string ListenAddress::WithPort(int bound_port) const {
  return host.find(':') == std::string::npos ? fmt::format("{}:{}", host, bound_port)
                                             : fmt::format("[{}]:{}", host, bound_port);
}

Result<ListenAddress> ParseListenAddress(const std::string& addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == addr.size())
    return Status::InvalidArgument(fmt::format("listen address '{}' is not HOST:PORT", addr));
  ListenAddress out;
  out.host = addr.substr(0, colon);
  if (out.host.front() == '[' && out.host.back() == ']') out.host = out.host.substr(1, out.host.size() - 2);
  for (char c : addr.substr(colon + 1)) {
    if (c < '0' || c > '9' || out.port > 65535) return Status::InvalidArgument(fmt::format("bad port in '{}'", addr));
    out.port = out.port * 10 + (c - '0');
  }
  if (out.port > 65535) return Status::InvalidArgument(fmt::format("bad port in '{}'", addr));
  return out;
}

uint16_t PortOf(const sockaddr_storage& a) {
  return ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(a).sin6_port
                                       : reinterpret_cast<const sockaddr_in&>(a).sin_port);
}

void SetPort(sockaddr_storage* a, uint16_t port) {
  if (a->ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(a)->sin6_port = htons(port);
  else reinterpret_cast<sockaddr_in*>(a)->sin_port = htons(port);
}

int SocketAddressOf(const std::string& host, uint32_t port, sockaddr_storage* addr, socklen_t* len, int family) {
  *addr = {};
  if (auto* v4 = reinterpret_cast<sockaddr_in*>(addr); inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    if (family == AF_INET6) return -EAFNOSUPPORT;
    v4->sin_family = AF_INET;
    *len = sizeof *v4;
  } else if (auto* v6 = reinterpret_cast<sockaddr_in6*>(addr); inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    if (family == AF_INET) return -EAFNOSUPPORT;
    v6->sin6_family = AF_INET6;
    *len = sizeof *v6;
  } else {  // a host name (--listen localhost:7070): its first address
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) return -EADDRNOTAVAIL;
    std::memcpy(addr, found->ai_addr, found->ai_addrlen);
    *len = found->ai_addrlen;
    freeaddrinfo(found);
  }
  SetPort(addr, static_cast<uint16_t>(port));
  return 0;
}

int ListenTcp(const std::string& host, uint32_t port, bool v6_only) {
  sockaddr_storage addr;
  socklen_t len = 0;
  if (int err = SocketAddressOf(host, port, &addr, &len); err != 0) return err;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr.ss_family == AF_INET6 && v6_only) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

bool IsAnyAddress(const std::string& host) {
  in6_addr v6{};
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return v4.s_addr == htonl(INADDR_ANY);
  return inet_pton(AF_INET6, host.c_str(), &v6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&v6);
}

bool OnlyLoopback(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return false;
  bool loopback = res != nullptr;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      loopback &= (ntohl(reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr.s_addr) >> 24) == 127;
    } else if (ai->ai_family == AF_INET6) {
      const in6_addr& a = reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr;
      loopback &= IN6_IS_ADDR_LOOPBACK(&a) ||
                  (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
    } else {
      loopback = false;
    }
  }
  freeaddrinfo(res);
  return loopback;
}

Status CheckCanListen(const ListenAddress& address) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(address.port);
  int rc = getaddrinfo(address.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0)
    return Status::InvalidArgument(fmt::format("cannot resolve listen host '{}': {}", address.host, gai_strerror(rc)));
  Status result;
  for (addrinfo* ai = res; ai != nullptr && result.ok(); ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
      result = Status::Unavailable(fmt::format("cannot listen on {}:{}: {}", address.host, address.port, strerror(errno)));
    close(fd);
  }
  freeaddrinfo(res);
  return result;
}

}  // namespace onebox
