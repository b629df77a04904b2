// Interposed: bind and connect. A TCP socket bound to a port on the any
// address or on loopback (0.0.0.0, 127.0.0.1, ::, ::1, ::ffff:127.0.0.1)
// takes a cluster port: the agent claims it across the cluster before the
// kernel binds it (nodeagent/sockets/port_table.h), so a port another
// node's program holds fails with EADDRINUSE, and every other node's agent
// then listens on it for its own programs and relays their connections
// here (nodeagent/sockets/port_relay.h). connect() to a port needs nothing
// of the shim: a remote port is a local listener. But under the shim a
// connect to another node's port (its bit in the agent's state page) skips
// that listener: the agent opens the link to the owner and hands it over,
// and the program's socket becomes the link (one TCP connection and one
// relay fewer). getpeername and getsockname of such a socket answer the
// loopback addresses the program connected to, as on one machine.
//
// A Unix socket bound at a path under the cluster root is made in the view
// (through its directory's /proc fd entry, SeenFdLink: the view's real path may
// be longer than sun_path), and a stream socket is claimed as a port is.
// connect() to such a path connects in the view; when this node's view has
// no socket there (another node's program bound it), it connects to the
// abstract name on which this node's agent relays that socket
// (naming/unix_relay_name.h). Port 0, UDP and other addresses go straight
// to libc.
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include <sys/un.h>
#include <unistd.h>

#include "naming/unix_relay_name.h"
#include "preload/link.h"
#include "preload/native_path.h"
#include "preload/shim.h"

using namespace onebox::shim;
using onebox::kMaxPathBytes;

namespace {

struct ClusterPort {
  unsigned port = 0;
  bool ipv6 = false;  // other nodes' connections come in over ::1
};

int SocketType(int fd) {
  int type = 0;
  socklen_t len = sizeof type;
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 ? type : -1;
}

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

// Whether fd's peer is one of the agents' abstract relay names.
bool PeerIsRelay(int fd) {
  sockaddr_un peer{};
  socklen_t len = sizeof peer;
  static constexpr char kPrefix[] = "onebox-";
  return getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0 && peer.sun_family == AF_UNIX &&
         len > offsetof(sockaddr_un, sun_path) + sizeof kPrefix && peer.sun_path[0] == '\0' &&
         std::memcmp(peer.sun_path + 1, kPrefix, sizeof kPrefix - 1) == 0;
}

// The sockets that are links handed over by the agent (ConnectDirect), by
// fd, each checked by its inode (a closed fd's number reused is no link):
// what the program connected to. A dup of one, or one kept across exec,
// answers the link's real addresses.
enum class Loopback : uint8_t { kV4, kV6, kV4Mapped };
struct DirectLink {
  std::atomic<uint64_t> inode{0};
  std::atomic<uint32_t> to{0};    // the peer's port << 8 | Loopback
  std::atomic<uint32_t> self{0};  // the socket's own port; 0: the link's own
};
constexpr int kDirectLinks = 65536;  // fds beyond: the real addresses
DirectLink direct_links[kDirectLinks];
std::atomic<bool> any_direct_link{false};

// An IPv4 or IPv6 address's port, in host order.
unsigned PortOf(const sockaddr_storage& a) {
  return ntohs(a.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6&>(a).sin6_port
                                       : reinterpret_cast<const sockaddr_in&>(a).sin_port);
}

// Whether fd is a direct link; then the loopback address it answers, its
// peer's port, and its own (0: the link's own).
bool DirectLinkOf(int fd, Loopback* kind, unsigned* port, unsigned* self_port = nullptr) {
  if (!any_direct_link.load(std::memory_order_relaxed) || fd < 0 || fd >= kDirectLinks) return false;
  struct stat st;
  const uint64_t inode = direct_links[fd].inode.load(std::memory_order_acquire);
  if (inode == 0 || fstat(fd, &st) != 0 || st.st_ino != inode) return false;
  const uint32_t to = direct_links[fd].to.load(std::memory_order_relaxed);
  *kind = static_cast<Loopback>(to & 0xff);
  *port = to >> 8;
  if (self_port != nullptr) *self_port = direct_links[fd].self.load(std::memory_order_relaxed);
  return true;
}

// The socket options a program may set before connect that the link must
// carry as its own socket would have.
void CarryOptions(int from, int to) {
  struct Option {
    int level, name;
  };
  for (Option o : {Option{IPPROTO_TCP, TCP_NODELAY}, Option{SOL_SOCKET, SO_KEEPALIVE}}) {
    int value = 0;
    socklen_t len = sizeof value;
    if (getsockopt(from, o.level, o.name, &value, &len) != 0) continue;
    if (o.name == SO_KEEPALIVE && value == 0) continue;  // the link's own keepalive finds a dead node
    setsockopt(to, o.level, o.name, &value, len);
  }
  for (int name : {SO_RCVTIMEO, SO_SNDTIMEO}) {
    timeval tv{};
    socklen_t len = sizeof tv;
    if (getsockopt(from, SOL_SOCKET, name, &tv, &len) == 0) setsockopt(to, SOL_SOCKET, name, &tv, len);
  }
  linger l{};
  socklen_t len = sizeof l;
  if (getsockopt(from, SOL_SOCKET, SO_LINGER, &l, &len) == 0 && l.l_onoff) setsockopt(to, SOL_SOCKET, SO_LINGER, &l, len);
}

// Remembers fd, now the link of inode, as connected from loopback port
// self_port (0: the link's own) to loopback port peer_port.
void RememberDirectLink(int fd, ino_t inode, Loopback kind, unsigned peer_port, unsigned self_port) {
  if (fd >= kDirectLinks) return;
  direct_links[fd].inode.store(0, std::memory_order_relaxed);
  direct_links[fd].to.store(peer_port << 8 | static_cast<uint32_t>(kind), std::memory_order_relaxed);
  direct_links[fd].self.store(self_port, std::memory_order_relaxed);
  direct_links[fd].inode.store(inode, std::memory_order_release);
  any_direct_link.store(true, std::memory_order_relaxed);
}

// Puts link in fd's place (dup3), with the options, status flags and
// close-on-exec fd has. False when it could not (link is closed then).
bool StandIn(int link, int fd, ino_t* inode) {
  const int status = fcntl(fd, F_GETFL), fd_flags = fcntl(fd, F_GETFD);
  CarryOptions(fd, link);
  if (status >= 0 && (status & O_NONBLOCK) != 0) fcntl(link, F_SETFL, fcntl(link, F_GETFL) | O_NONBLOCK);
  struct stat st;
  const bool ok = fd_flags >= 0 && fstat(link, &st) == 0 &&
                  dup3(link, fd, (fd_flags & FD_CLOEXEC) != 0 ? O_CLOEXEC : 0) >= 0;
  close(link);
  if (ok) *inode = st.st_ino;
  return ok;
}

// The loopback address a names (kind, port); false for any other.
bool LoopbackOf(const sockaddr_storage& a, Loopback* kind, unsigned* port) {
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    *kind = Loopback::kV4;
    *port = ntohs(in.sin_port);
    return ntohl(in.sin_addr.s_addr) >> 24 == 127;
  }
  if (a.ss_family != AF_INET6) return false;
  const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
  const uint8_t* b = in6.sin6_addr.s6_addr;
  *port = ntohs(in6.sin6_port);
  if (IN6_IS_ADDR_LOOPBACK(&in6.sin6_addr)) {
    *kind = Loopback::kV6;
    return true;
  }
  *kind = Loopback::kV4Mapped;
  return IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr) && b[12] == 127;
}

// accept() returned fd: if it is a connection the agent made for another
// node's client and is waiting to hand over (sockets/handover.h), the link
// from that node takes its place, answering the same loopback addresses.
void TakeHandedOver(int fd) {
  ONEBOX_REAL(getpeername);
  ONEBOX_REAL(getsockname);
  sockaddr_storage peer{}, self{};
  socklen_t peer_len = sizeof peer, self_len = sizeof self;
  Loopback kind, self_kind;
  unsigned agent_port = 0, port = 0;
  if (real_getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 || !LoopbackOf(peer, &kind, &agent_port) ||
      real_getsockname(fd, reinterpret_cast<sockaddr*>(&self), &self_len) != 0 || !LoopbackOf(self, &self_kind, &port) ||
      !MayBeHandedOver(agent_port))
    return;
  const int link = TakeLink(port, agent_port, fd);
  ino_t inode;
  if (link >= 0 && StandIn(link, fd, &inode)) RememberDirectLink(fd, inode, kind, agent_port, port);
}

// What accept and accept4 return: c, after TakeHandedOver, errno as libc left it.
int Accepted(int c) {
  if (c >= 0) {
    const int saved = errno;
    TakeHandedOver(c);
    errno = saved;
  }
  return c;
}

// Writes a loopback address of kind with port to addr, truncated to room
// (the caller's *len before the kernel's answer) as the kernel does, and
// sets *len to its full size.
void AnswerLoopback(Loopback kind, unsigned port, sockaddr* addr, socklen_t room, socklen_t* len) {
  sockaddr_storage a{};
  socklen_t n;
  if (kind == Loopback::kV4) {
    auto* in = reinterpret_cast<sockaddr_in*>(&a);
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    n = sizeof *in;
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    uint8_t* b = in6->sin6_addr.s6_addr;
    if (kind == Loopback::kV4Mapped) {  // ::ffff:127.0.0.1, else ::1
      b[10] = b[11] = 0xff;
      b[12] = 127;
    }
    b[15] = 1;
    n = sizeof *in6;
  }
  std::memcpy(addr, &a, std::min(room, n));
  *len = n;
}

// Whether fd's family fits addr's, as the kernel would connect it: an
// AF_INET socket to a sockaddr_in, an AF_INET6 one to a sockaddr_in6 (a
// v4-mapped address not on an IPV6_V6ONLY socket). Others are libc's, for
// its errno.
bool FamilyFits(int fd, const sockaddr* addr, const ClusterPort& port) {
  int domain = 0, v6only = 0;
  socklen_t len = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != addr->sa_family) return false;
  if (domain != AF_INET6 || port.ipv6) return true;
  len = sizeof v6only;
  return getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) == 0 && v6only == 0;
}

// connect() of a TCP socket to another node's port (its bit in the state
// page): the agent's link to the owner, connected there, put in the
// program's socket's place with what the program set on it. 1: taken (0
// to return); 0: not taken, libc's connect then (a socket already bound
// or connected; the port no longer another node's; no agent), to whatever
// listens here (the agent's own listener for it, if any); -1: the owner's
// node refused or did not answer (errno ECONNREFUSED, as when nothing
// listens).
int ConnectDirect(int fd, const sockaddr* addr, const ClusterPort& port) {
  ONEBOX_REAL(getsockname);
  const int saved = errno;
  if (!IsTcpStream(fd) || !FamilyFits(fd, addr, port) || !PortIsRemote(port.port)) {
    errno = saved;
    return 0;
  }
  sockaddr_storage self{};
  socklen_t self_len = sizeof self;
  if (real_getsockname(fd, reinterpret_cast<sockaddr*>(&self), &self_len) != 0 || PortOf(self) != 0) {
    errno = saved;
    return 0;
  }
  const int link = DialPort(port.port);
  if (link < 0) {
    errno = saved;
    // Asked and answered: the port was not another node's after all, or
    // the shim could not ask. Anything else is the owner's node's answer.
    if (link == -ENOENT || link == -ENOTCONN || link == -EIO) return 0;
    errno = ECONNREFUSED;
    return -1;
  }
  ino_t inode;
  if (!StandIn(link, fd, &inode)) {
    errno = saved;
    return 0;
  }
  RememberDirectLink(fd, inode, addr->sa_family == AF_INET ? Loopback::kV4 : port.ipv6 ? Loopback::kV6 : Loopback::kV4Mapped,
                     port.port, 0);
  errno = saved;
  return 1;
}

bool CarriesDescriptors(const msghdr* msg) {
  const char* m = reinterpret_cast<const char*>(msg);
  if (msg == nullptr || !MayReadPage(m) || !MayReadPage(m + sizeof(msghdr) - 1) || msg->msg_control == nullptr ||
      msg->msg_controllen < sizeof(cmsghdr) || !MayReadPage(static_cast<const char*>(msg->msg_control)) ||
      !MayReadPage(static_cast<const char*>(msg->msg_control) + msg->msg_controllen - 1))
    return false;  // no descriptors, or the kernel answers (EFAULT)
  for (const cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(msg), const_cast<cmsghdr*>(c)))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) return true;
  return false;
}

// The cluster path a sockaddr_un names, resolved into t (rel in buf); false
// when it names none (another family, abstract, unnamed, a native path:
// libc's; t.native then says whether a relative one needs rewriting).
bool UnixClusterPath(const sockaddr* addr, socklen_t len, Target* t, char* buf, size_t cap) {
  const char* bytes = reinterpret_cast<const char*>(addr);
  constexpr size_t kPathAt = offsetof(sockaddr_un, sun_path);
  if (addr == nullptr || len <= kPathAt || !MayReadPage(bytes) || !MayReadPage(bytes + std::min<size_t>(len, sizeof(sockaddr_un)) - 1))
    return false;
  if (addr->sa_family != AF_UNIX || bytes[kPathAt] == '\0') return false;
  char path[sizeof(sockaddr_un::sun_path) + 1];
  const size_t n = strnlen(bytes + kPathAt, std::min<size_t>(len - kPathAt, sizeof path - 1));
  std::memcpy(path, bytes + kPathAt, n);
  path[n] = '\0';
  *t = Resolve(path, buf, cap);
  if (t->beneath && !t->err) t->err = ENAMETOOLONG;  // a socket is known to the agents by its cluster name
  return t->cluster;
}

// A relative path from a cwd in the cluster that leads out of it: the
// absolute path libc must get (the kernel would resolve it from the view's
// real place). False when t has none, or it does not fit.
bool NativeUnixPath(const Target& t, sockaddr_un* out) {
  if (t.cluster || t.native == nullptr || strlen(t.native) >= sizeof out->sun_path) return false;
  out->sun_family = AF_UNIX;
  std::memcpy(out->sun_path, t.native, strlen(t.native) + 1);
  return true;
}

int BindUnix(int fd, const Target& t) {
  ONEBOX_REAL(bind);
  if (t.err) return Fail(t.err);
  struct stat st;
  const bool claimed = SocketType(fd) == SOCK_STREAM && fstat(fd, &st) == 0;
  if (claimed) {
    if (int err = BindPort(0, false, t.rel, st.st_ino, /*release=*/false); err != 0) return Fail(err);
  }
  // Through its directory's /proc entry (SeenFdLink): the view's real path may
  // not fit sun_path.
  int bound = AtParent(t, [&](int parent, const char* base) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    char dir[kFdLinkBytes];
    SeenFdLink(dir, parent);
    int n = snprintf(a.sun_path, sizeof a.sun_path, "%s/%s", dir, base);
    if (n < 0 || static_cast<size_t>(n) >= sizeof a.sun_path) return Fail(ENAMETOOLONG);
    return real_bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a);
  });
  if (bound != 0 && claimed) {
    const int why = errno;
    BindPort(0, false, t.rel, st.st_ino, /*release=*/true);
    errno = why;
  }
  return bound;
}

int ConnectUnix(int fd, const Target& t) {
  ONEBOX_REAL(connect);
  if (t.err) return Fail(t.err);
  const int saved = errno;
  // The socket file opened as any cluster file is (a symlink resolves inside
  // the view, never out of it), then connected through its /proc entry.
  int r = -1;
  if (int file = OpenInView(t, O_PATH | O_CLOEXEC, 0); file >= 0) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    FdLink(a.sun_path, file);
    r = real_connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a);
    const int err = errno;
    close(file);
    errno = err;
  }
  if (r == 0 || (errno != ENOENT && errno != ECONNREFUSED) || SocketType(fd) != SOCK_STREAM) return r;
  // No socket in this node's view: another node's, through this node's agent?
  const int native = errno;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const size_t n = onebox::UnixRelayName(AgentViewRoot(), t.rel, a.sun_path);
  int relayed = real_connect(fd, reinterpret_cast<const sockaddr*>(&a), static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n));
  if (relayed != 0 && errno != EAGAIN) return Fail(native);  // (EAGAIN: a full backlog, non-blocking)
  // The name is the agent's only if the agent listens on it: anyone on the
  // node could have bound it first.
  if (!PeerIsAgent(fd)) return Fail(ECONNREFUSED);
  if (relayed != 0) return Fail(EAGAIN);
  errno = saved;
  return 0;
}

}  // namespace

extern "C" {
#pragma GCC visibility push(default)

int bind(int fd, const struct sockaddr* addr, socklen_t len) {
  ONEBOX_REAL(bind);
  char buf[kMaxPathBytes];
  Target t;
  sockaddr_un native{};
  if (UnixClusterPath(addr, len, &t, buf, sizeof buf)) return BindUnix(fd, t);
  if (NativeUnixPath(t, &native)) return real_bind(fd, reinterpret_cast<const sockaddr*>(&native), sizeof native);
  ClusterPort port;
  struct stat st;
  if (!ClusterPortOf(addr, len, &port) || !IsTcpStream(fd) || fstat(fd, &st) != 0) return real_bind(fd, addr, len);
  const int saved = errno;
  if (int err = BindPort(port.port, port.ipv6, nullptr, st.st_ino, /*release=*/false); err != 0) return Fail(err);
  errno = saved;
  int bound = real_bind(fd, addr, len);
  if (bound != 0) {  // refused here after all (EACCES below 1024, a local holder): the claim goes
    const int why = errno;
    BindPort(port.port, port.ipv6, nullptr, st.st_ino, /*release=*/true);
    errno = why;
  }
  return bound;
}

// Descriptors cannot cross nodes: a sendmsg with SCM_RIGHTS on a socket
// connected through the agents (its peer is a relay name) fails with
// EOPNOTSUPP (the relay moves bytes only, and would drop them silently).
// Every other sendmsg is libc's after a look at its control data.
ssize_t sendmsg(int fd, const struct msghdr* msg, int flags) {
  ONEBOX_REAL(sendmsg);
  if (__builtin_expect(CarriesDescriptors(msg), 0) && PeerIsRelay(fd)) {
    errno = EOPNOTSUPP;
    return -1;
  }
  return real_sendmsg(fd, msg, flags);
}

int connect(int fd, const struct sockaddr* addr, socklen_t len) {
  ONEBOX_REAL(connect);
  char buf[kMaxPathBytes];
  Target t;
  sockaddr_un native{};
  if (UnixClusterPath(addr, len, &t, buf, sizeof buf)) return ConnectUnix(fd, t);
  if (NativeUnixPath(t, &native)) return real_connect(fd, reinterpret_cast<const sockaddr*>(&native), sizeof native);
  ClusterPort port;
  if (ClusterPortOf(addr, len, &port)) {
    if (int direct = ConnectDirect(fd, addr, port); direct != 0) return direct > 0 ? 0 : -1;
  }
  return real_connect(fd, addr, len);
}

// A connection another node's client made to this server: the link from
// that node itself, when the agent has it waiting (TakeHandedOver). (Any
// server: one that bound its port before an exec has lost any mark of it.)
int accept(int fd, struct sockaddr* addr, socklen_t* len) {
  ONEBOX_REAL(accept);
  return Accepted(real_accept(fd, addr, len));
}

int accept4(int fd, struct sockaddr* addr, socklen_t* len, int flags) {
  ONEBOX_REAL(accept4);
  return Accepted(real_accept4(fd, addr, len, flags));
}

// A direct link (ConnectDirect) answers the loopback address the program
// connected to; every other socket, the kernel's answer.
int getpeername(int fd, struct sockaddr* addr, socklen_t* len) {
  ONEBOX_REAL(getpeername);
  Loopback kind;
  unsigned port;
  const socklen_t room = len != nullptr && MayReadPage(reinterpret_cast<const char*>(len)) ? *len : 0;
  int r = real_getpeername(fd, addr, len);
  if (r == 0 && DirectLinkOf(fd, &kind, &port)) AnswerLoopback(kind, port, addr, room, len);
  return r;
}

// A direct link's own address: loopback (of the family the program
// connected to), with the link's real local port.
int getsockname(int fd, struct sockaddr* addr, socklen_t* len) {
  ONEBOX_REAL(getsockname);
  Loopback kind;
  unsigned port, self_port;
  const socklen_t room = len != nullptr && MayReadPage(reinterpret_cast<const char*>(len)) ? *len : 0;
  int r = real_getsockname(fd, addr, len);
  if (r != 0 || !DirectLinkOf(fd, &kind, &port, &self_port)) return r;
  if (self_port != 0) {  // a server's: the port it listens on
    AnswerLoopback(kind, self_port, addr, room, len);
    return r;
  }
  sockaddr_storage real{};
  socklen_t real_len = sizeof real;
  if (real_getsockname(fd, reinterpret_cast<sockaddr*>(&real), &real_len) != 0) return r;
  AnswerLoopback(kind, PortOf(real), addr, room, len);
  return r;
}

#pragma GCC visibility pop
}
