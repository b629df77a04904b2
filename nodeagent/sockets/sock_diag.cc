#include "nodeagent/sockets/sock_diag.h"

#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace onebox {

namespace {

struct DiagRequest {
  nlmsghdr header;
  inet_diag_req_v2 body;
};

DiagRequest Request(uint16_t type, uint16_t flags, int family) {
  DiagRequest req{};
  req.header.nlmsg_len = sizeof req;
  req.header.nlmsg_type = type;
  req.header.nlmsg_flags = flags;
  req.body.sdiag_family = static_cast<uint8_t>(family);
  req.body.sdiag_protocol = IPPROTO_TCP;
  req.body.idiag_states = ~(1u << TCP_LISTEN);
  return req;
}

// Every connection of family whose far end is addr (4 or 16 bytes) and port.
Result<std::vector<inet_diag_sockid>> Find(int nl, int family, const void* addr, size_t addr_bytes, uint16_t port) {
  DiagRequest dump = Request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, family);
  if (send(nl, &dump, sizeof dump, 0) != static_cast<ssize_t>(sizeof dump))
    return Status::IOError(fmt::format("sock_diag dump: {}", strerror(errno)));
  std::vector<inet_diag_sockid> found;
  alignas(nlmsghdr) char buf[32768];
  for (;;) {
    ssize_t n = recv(nl, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IOError(fmt::format("sock_diag dump: {}", n < 0 ? strerror(errno) : "ended"));
    int left = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return found;
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) return Status::IOError("sock_diag dump: a short error");
        const int err = -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
        return Status::IOError(fmt::format("sock_diag dump: {}", strerror(err)));
      }
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) continue;
      const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
      if (m->id.idiag_dport == htons(port) && std::memcmp(m->id.idiag_dst, addr, addr_bytes) == 0)
        found.push_back(m->id);
    }
  }
}

// SOCK_DESTROY of one connection: 0 or the kernel's errno.
int Destroy(int nl, int family, const inet_diag_sockid& id) {
  DiagRequest destroy = Request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, family);
  destroy.body.id = id;
  if (send(nl, &destroy, sizeof destroy, 0) != static_cast<ssize_t>(sizeof destroy)) return errno;
  alignas(nlmsghdr) char ack[512];
  ssize_t n;
  do n = recv(nl, ack, sizeof ack, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  const auto* h = reinterpret_cast<const nlmsghdr*>(ack);
  if (n < static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr))) || h->nlmsg_type != NLMSG_ERROR) return EPROTO;
  return -static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
}

}  // namespace

Result<size_t> AbortConnectionsTo(const sockaddr& to) {
  const void* addr;
  size_t addr_bytes;
  uint16_t port;
  if (to.sa_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(to);
    addr = &in.sin_addr;
    addr_bytes = sizeof in.sin_addr;
    port = ntohs(in.sin_port);
  } else if (to.sa_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(to);
    addr = &in6.sin6_addr;
    addr_bytes = sizeof in6.sin6_addr;
    port = ntohs(in6.sin6_port);
  } else {
    return Status::InvalidArgument("not an IPv4 or IPv6 address");
  }
  int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return Status::IOError(fmt::format("sock_diag: {}", strerror(errno)));
  timeval tv{1, 0};
  setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  Result<std::vector<inet_diag_sockid>> found = Find(nl, to.sa_family, addr, addr_bytes, port);
  size_t aborted = 0;
  Status failed = found.ok() ? Status::Ok() : found.status();
  for (const inet_diag_sockid& id : found.ok() ? *found : std::vector<inet_diag_sockid>{}) {
    const int err = Destroy(nl, to.sa_family, id);
    if (err == 0) ++aborted;
    else if (err != ENOENT && failed.ok())  // ENOENT: it closed meanwhile
      failed = Status::IOError(fmt::format("sock_diag destroy: {}", strerror(err)));
  }
  close(nl);
  if (!failed.ok() && aborted == 0) return failed;
  return aborted;
}

namespace {

// addr's address bytes into out (16), its port into *port, and its family
// (an IPv4-mapped IPv6 address as IPv4); 0 for another family.
int AddressOf(const sockaddr_storage& addr, uint32_t out[4], uint16_t* port) {
  std::memset(out, 0, 16);
  if (addr.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(addr);
    std::memcpy(out, &in.sin_addr, 4);
    *port = in.sin_port;
    return AF_INET;
  }
  if (addr.ss_family != AF_INET6) return 0;
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(addr);
  *port = in6.sin6_port;
  if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
    std::memcpy(out, in6.sin6_addr.s6_addr + 12, 4);
    return AF_INET;
  }
  std::memcpy(out, &in6.sin6_addr, 16);
  return AF_INET6;
}

}  // namespace

uint64_t TcpSocketInode(const sockaddr_storage& self, const sockaddr_storage& peer) {
  DiagRequest req = Request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, AF_INET);
  const int family = AddressOf(self, req.body.id.idiag_src, &req.body.id.idiag_sport);
  if (family == 0 || AddressOf(peer, req.body.id.idiag_dst, &req.body.id.idiag_dport) != family) return 0;
  req.body.sdiag_family = static_cast<uint8_t>(family);
  req.body.id.idiag_cookie[0] = req.body.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl < 0) return 0;
  timeval tv{1, 0};
  setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  uint64_t inode = 0;
  alignas(nlmsghdr) char buf[1024];
  ssize_t n = send(nl, &req, sizeof req, 0) == static_cast<ssize_t>(sizeof req) ? recv(nl, buf, sizeof buf, 0) : -1;
  const auto* h = reinterpret_cast<const nlmsghdr*>(buf);
  if (n >= static_cast<ssize_t>(NLMSG_LENGTH(sizeof(inet_diag_msg))) && h->nlmsg_type == SOCK_DIAG_BY_FAMILY &&
      h->nlmsg_len >= NLMSG_LENGTH(sizeof(inet_diag_msg))) {
    // The kernel looks the addresses up as an arriving packet's: with no
    // such connection it answers the listener on self. Only the connection counts.
    const auto* m = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
    if (m->idiag_state != TCP_LISTEN && m->id.idiag_dport == req.body.id.idiag_dport) inode = m->idiag_inode;
  }
  close(nl);
  return inode;
}

}  // namespace onebox
