#include "nodeagent/daemon/listen_address.h"

#include <netdb.h>
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
