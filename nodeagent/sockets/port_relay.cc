#include "nodeagent/sockets/port_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include <fmt/format.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "naming/unix_relay_name.h"
#include "nodeagent/daemon/listen_address.h"
#include "nodeagent/daemon/thread_name.h"
#include "nodeagent/metrics/metrics.h"
#include "nodeagent/sockets/link_request.h"
#include "nodeagent/sockets/sock_diag.h"
#include "nodeagent/view/view_fs.h"

namespace onebox {

namespace {


// Reads or writes exactly n bytes on a blocking socket with timeouts set.
bool ReadFull(int fd, void* buf, size_t n) {
  return recv(fd, buf, n, MSG_WAITALL) == static_cast<ssize_t>(n);
}
bool WriteFull(int fd, const void* buf, size_t n) {
  return send(fd, buf, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n);
}

// Counts a connection to or from another node's port in the metrics, by
// how it goes: "relayed_out" (a program here, through this agent's
// listener), "relayed_in" (another node's, to a server here, by this
// agent), "direct" (a link handed to a program here at connect),
// "handed_over" (a link handed to a server here at accept).
void CountConnection(const char* way) { metrics::counts().port_connections.Add(metrics::Labels({{"way", way}})); }

// A link between agents: a peer that vanishes (cut off, powered off) while
// the link is idle is found within about 6 s (no answer to keepalive
// probes), and the connections on it reset. (No TCP_USER_TIMEOUT: it would
// also end a link whose far reader merely paused, as a zero window.)
constexpr int kLinkKeepIdleS = 2;
// A program's own link (Dial) waits longer: its agent aborts it when the
// far node is cut off (ECONNABORTED, as the relay resets its own),
// and only an agent that cannot do that (no CAP_NET_ADMIN) leaves it to
// keepalive (ETIMEDOUT, after about 16 s).
constexpr int kDirectKeepIdleS = 12;
// Other agents' links awaiting their first bytes at once (a descriptor
// each, for kLinkHandshakeMs at most): past this, new ones are reset.
constexpr size_t kMaxGreetedLinks = 1024;
constexpr uint64_t kGreetedTag = 1;  // in the high half of a greeted link's epoll data
void KeepLinkAlive(int fd, int idle = kLinkKeepIdleS) {
  int on = 1, interval = 1, count = 4;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

// What a link to target asks for (sockets/link_request.h).
std::string Wanted(const v1::ClusterPort& target, uint32_t uid, uint32_t gid) {
  return EncodeWanted(target.path().empty() ? target.port() : 0, uid, gid, target.path());
}

void Timeouts(int fd, int ms);

// Whether uid (in gid) may connect to a socket file of this mode and owner:
// connect needs write permission on it, as the kernel checks it (root
// passes; supplementary groups are not known here and do not count).
bool MayConnect(const struct stat& st, uint32_t uid, uint32_t gid) {
  if (uid == 0) return true;
  if (st.st_uid == uid) return st.st_mode & S_IWUSR;
  if (st.st_gid == gid) return st.st_mode & S_IWGRP;
  return st.st_mode & S_IWOTH;
}

// A Unix stream socket connected, for a program of another node (uid, gid),
// to the socket at path below the view: opened beneath the view root with
// no symlink on the way or at the end (a user may have put one there), a
// socket, writable by that user; then connected through /proc/self/fd.
// -errno when none.
int ConnectUnixInView(int view_fd, const std::string& path, uint32_t uid, uint32_t gid) {
  int file = OpenBeneath(view_fd, path, O_PATH);
  if (file < 0) return -errno;
  struct stat st;
  int err = fstat(file, &st) != 0 ? errno : !S_ISSOCK(st.st_mode) ? ECONNREFUSED : !MayConnect(st, uid, gid) ? EACCES : 0;
  int fd = err == 0 ? socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
  if (err == 0 && fd < 0) err = errno;
  if (err == 0) {
    Timeouts(fd, kLinkHandshakeMs);  // a server whose backlog is full must not hold this thread
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d", file);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) err = errno;
    else Timeouts(fd, 0);
  }
  close(file);
  if (err != 0) {
    if (fd >= 0) close(fd);
    return -err;
  }
  return fd;
}

// A listener on an abstract Unix name (it starts with NUL); -errno when none.
int ListenAbstract(const char* name, size_t len) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, name, len);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len)) != 0 ||
      listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

void Timeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// A blocking TCP connection to host:port within timeout_ms; -errno when none.
// bound, when given, is told the local port first (bound before connect).
int ConnectTo(const std::string& host, const std::string& port, int timeout_ms,
              const std::function<void(uint16_t)>& bound = nullptr) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0 || found == nullptr) return -EHOSTUNREACH;
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0 && bound) {
    // From the address connected to (loopback), any free port: with
    // SO_REUSEADDR a port whose last connection is in TIME_WAIT may be
    // taken again, as connect's own choice would.
    sockaddr_storage from{};
    std::memcpy(&from, found->ai_addr, found->ai_addrlen);
    SetPort(&from, 0);
    socklen_t len = found->ai_addrlen;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, reinterpret_cast<sockaddr*>(&from), len) != 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&from), &len) != 0)
      err = errno;
    else
      bound(PortOf(from));
  }
  if (fd >= 0 && err == 0 && connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int ready = poll(&p, 1, timeout_ms);
      socklen_t len = sizeof err;
      if (ready == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      else err = ETIMEDOUT;
    }
  }
  freeaddrinfo(found);
  if (err != 0) {
    if (fd >= 0) close(fd);
    return -err;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  NoDelay(fd);
  return fd;
}

// HOST:PORT or [V6]:PORT into its parts.
bool SplitAddress(const std::string& address, std::string* host, std::string* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  *host = address.substr(0, colon);
  *port = address.substr(colon + 1);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') *host = host->substr(1, host->size() - 2);
  return true;
}

}  // namespace

Result<std::unique_ptr<PortRelay>> PortRelay::Start(PortTable& table, const AccessGate& gate, std::string join_token,
                                                    const std::string& host, std::string view_root,
                                                    PortMaps* maps, TlsLinks* tls) {
  std::unique_ptr<PortRelay> relay(new PortRelay(table, gate, std::move(join_token), std::move(view_root), maps, tls));
  relay->view_fd_ = ::open(relay->view_root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (relay->view_fd_ < 0)
    return Status::Unavailable(fmt::format("port relay: open the view {}: {}", relay->view_root_, strerror(errno)));
  Result<std::unique_ptr<SpliceRelay>> splice = SpliceRelay::Start();
  if (!splice.ok()) return splice.status();
  relay->splice_ = std::move(splice).value();
  relay->listener_ = ListenTcp(host, 0);
  if (relay->listener_ < 0)
    return Status::Unavailable(fmt::format("port relay: cannot listen on {}: {}", host, strerror(-relay->listener_)));
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  getsockname(relay->listener_, reinterpret_cast<sockaddr*>(&bound), &len);
  const uint16_t port = PortOf(bound);
  relay->address_ = host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
  relay->epoll_ = epoll_create1(EPOLL_CLOEXEC);
  relay->wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (relay->epoll_ < 0 || relay->wake_ < 0) return Status::Unavailable(fmt::format("port relay: {}", strerror(errno)));
  relay->Watch(relay->wake_);
  relay->Watch(relay->listener_);
  relay->outbound_ = std::make_unique<WorkPool>(8, "onebox-dial");
  relay->inbound_ = std::make_unique<WorkPool>(8, "onebox-answer");
  relay->thread_ = std::thread([r = relay.get()] { r->AcceptLoop(); });
  NameThread(relay->thread_, "onebox-ports");
  return relay;
}

PortRelay::~PortRelay() {
  {
    std::lock_guard lock(dial_mu_);  // the shims ask no more
    dial_targets_.clear();
    PublishRemotePorts();
  }
  stopping_ = true;
  uint64_t one = 1;
  if (wake_ >= 0) (void)!write(wake_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  outbound_.reset();  // handshakes under way end (each within kLinkHandshakeMs)
  inbound_.reset();
  for (auto& [link, greeted] : greeted_) CloseWithReset(link);
  for (Handovers::Pair pair : handovers_.TakeAll()) {
    CloseWithReset(pair.link);
    CloseWithReset(pair.local);
  }
  for (auto& [key, proxy] : proxies_)
    for (int fd : proxy.fds) close(fd);
  if (listener_ >= 0) close(listener_);
  if (view_fd_ >= 0) close(view_fd_);
  if (epoll_ >= 0) close(epoll_);
  if (wake_ >= 0) close(wake_);
  splice_.reset();
}

void PortRelay::Watch(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
}

void PortRelay::Unwatch(int fd) { epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr); }

void PortRelay::Reconcile() {
  std::set<std::string> gone_relays;  // of cut-off owners: the links programs here hold to them are aborted
  ReconcileLocked(&gone_relays);
  for (const std::string& relay : gone_relays) AbortDirectLinks(relay);
}

bool PortRelay::HoldsNothing() {
  {
    std::lock_guard lock(mu_);
    if (!proxies_.empty()) return false;
  }
  {
    std::lock_guard lock(dial_mu_);
    if (!dialed_.empty()) return false;
  }
  return splice_->Tags().empty();
}

void PortRelay::ReconcileLocked(std::set<std::string>* gone_relays) {
  // The table is read under mu_: two calls at once must not apply an older view after a newer one.
  std::lock_guard lock(mu_);
  // Each node asked once: at the 7 s mark two asks could differ, and the
  // listeners, resets and aborts below must agree.
  std::map<std::string, bool> cut_off;
  auto CutOff = [&](const std::string& node_id) {
    auto [it, fresh] = cut_off.try_emplace(node_id, false);
    if (fresh) it->second = table_.OwnerCutOff(node_id);
    return it->second;
  };
  std::map<std::string, v1::ClusterPort> want;
  const uint32_t unprivileged_start = UnprivilegedPortStart();
  for (v1::ClusterPort& port : table_.Live()) {
    if (port.node_id() == table_.self_id() || CutOff(port.node_id())) continue;
    if (port.path().empty() && (port.port() == 0 || port.port() >= PortBits::kPorts)) continue;  // no TCP port
    // This node's rule for its own ports: one below its unprivileged start
    // is root's here, whatever the owner's node allowed its user.
    if (port.path().empty() && port.port() < unprivileged_start && port.uid() != 0) {
      if (unbindable_.insert(PortTable::Key(port.port())).second)
        spdlog::warn("port {} of node {} (uid {}): not relayed from here, where ports below {} are root's",
                     port.port(), port.node(), port.uid(), unprivileged_start);
      continue;
    }
    want[port.path().empty() ? PortTable::Key(port.port()) : PortTable::UnixKey(port.path())] = std::move(port);
  }
  for (auto it = proxies_.begin(); it != proxies_.end();) {
    auto w = want.find(it->first);
    if (w != want.end() && w->second.node_id() == it->second.target.node_id() &&
        w->second.relay() == it->second.target.relay()) {
      ++it;
      continue;
    }
    for (int fd : it->second.fds) {
      Unwatch(fd);
      key_of_.erase(fd);
      close(fd);
    }
    spdlog::debug("{}: no longer relayed from here", it->first);
    it = proxies_.erase(it);  // its connections stay, as on one machine when a listener closes
  }
  // A cut-off node's connections are reset (their link may never say so),
  // whether or not this node still listens for a port of its: the server
  // may have closed its listener, or the port moved, and kept serving them;
  // and one made while its node was being cut off is reset at the next look.
  for (const std::string& node_id : splice_->Tags())
    if (CutOff(node_id)) splice_->Reset(node_id);
  for (auto& [key, port] : want) {
    if (proxies_.count(key)) continue;
    Proxy proxy{.target = port, .fds = {}};
    int err = 0;
    if (port.path().empty()) {
      int v4 = ListenTcp("127.0.0.1", port.port());
      int v6 = ListenTcp("::1", port.port());  // fails where the node has no IPv6 loopback: IPv4 only then
      if (v4 < 0) {
        if (v6 >= 0) close(v6);
        err = -v4;  // a program here holds the port outside the shim: it keeps it
      } else {
        proxy.fds = {v4};
        if (v6 >= 0) proxy.fds.push_back(v6);
      }
    } else {
      char name[kUnixRelayNameBytes];
      int fd = ListenAbstract(name, UnixRelayName(view_root_, port.path(), name));
      if (fd < 0) err = -fd;
      else proxy.fds = {fd};
    }
    if (err != 0) {
      if (unbindable_.insert(key).second)
        spdlog::warn("{} of node {}: cannot listen for it here: {}", key, port.node(), strerror(err));
      continue;
    }
    unbindable_.erase(key);
    for (int fd : proxy.fds) {
      key_of_[fd] = key;
      Watch(fd);
    }
    spdlog::debug("{} of node {}: relayed from here", key, port.node());
    proxies_[key] = std::move(proxy);
  }
  // What Dial may dial now, and the links handed out to owners now cut off.
  std::lock_guard dial_lock(dial_mu_);
  dial_targets_.clear();
  for (const auto& [key, proxy] : proxies_)
    if (proxy.target.path().empty()) dial_targets_[proxy.target.port()] = proxy.target;
  for (auto it = dialed_.begin(); it != dialed_.end();) {
    if (!CutOff(it->second)) {
      ++it;
      continue;
    }
    gone_relays->insert(it->first);
    it = dialed_.erase(it);
  }
  PublishRemotePorts();
}

void PortRelay::PublishRemotePorts() {
  if (remote_ports_ == nullptr) return;
  uint64_t words[PortBits::kPorts / 64] = {};
  for (const auto& [port, target] : dial_targets_) words[port / 64] |= uint64_t{1} << (port % 64);  // < kPorts
  for (size_t i = 0; i < std::size(words); ++i) remote_ports_->words[i].store(words[i], std::memory_order_relaxed);
}

void PortRelay::AbortDirectLinks(const std::string& relay) {
  std::string host, service;
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (!SplitAddress(relay, &host, &service) || getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0 ||
      found == nullptr) {
    spdlog::warn("links to {} (a cut-off node): not an address to abort connections to", relay);
    return;
  }
  Result<size_t> aborted = AbortConnectionsTo(*found->ai_addr);
  freeaddrinfo(found);
  if (!aborted.ok()) {
    static std::atomic<bool> said{false};
    if (!said.exchange(true))
      spdlog::info("programs' direct links to a cut-off node end by keepalive instead (about 16 s idle): {}",
                   aborted.status().message());
  } else if (*aborted > 0) {
    spdlog::info("{} direct links to {} (a cut-off node) aborted", *aborted, relay);
  }
}

void PortRelay::Dial(uint32_t port, std::function<void(int link)> done) {
  std::optional<v1::ClusterPort> target;
  {
    std::lock_guard lock(dial_mu_);  // not mu_: this runs on the shim server's thread
    if (auto it = dial_targets_.find(port); it != dial_targets_.end()) target = it->second;
  }
  if (!target || tls_ != nullptr) {  // (with TLS only agents hold links: the program connects through the relay)
    done(-ENOENT);
    return;
  }
  outbound_->Submit([this, target = std::move(*target), done = std::move(done)] {
    int link = OpenLink(target, 0, 0, kDirectKeepIdleS);
    if (link >= 0) {
      CountConnection("direct");
      {
        std::lock_guard lock(dial_mu_);
        dialed_[target.relay()] = target.node_id();
      }
      table_.WakeWatch();  // the table may have emptied meanwhile: the cut-off rule still ends the link
    }
    done(link);
  });
}

void PortRelay::AcceptLoop() {
  epoll_event events[32];
  while (!stopping_) {
    const int handover_ms = handovers_.NextWaitMs(Handovers::Clock::now());
    const int silent_ms = EndSilentLinks(std::chrono::steady_clock::now());
    const int wait_ms = handover_ms < 0 ? silent_ms : silent_ms < 0 ? handover_ms : std::min(handover_ms, silent_ms);
    int n = epoll_wait(epoll_, events, 32, wait_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("port relay: epoll_wait: {}", strerror(errno));
      return;
    }
    // Connections no server took over in time: relayed.
    for (Handovers::Pair pair : handovers_.Expired(Handovers::Clock::now())) Relay(pair.link, pair.local);
    for (int i = 0; i < n && !stopping_; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_) {
        uint64_t count;
        (void)!read(wake_, &count, sizeof count);
        continue;
      }
      if (events[i].data.u64 >> 32 == kGreetedTag) {  // a greeted link: its first bytes came
        const int link = static_cast<int>(events[i].data.u64 & 0xffffffff);
        auto greeted = greeted_.find(link);
        if (greeted == greeted_.end()) continue;
        if (tls_ == nullptr && (events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == 0) {
          // In the clear: only a whole head goes to a worker (a Unix socket's
          // path told in part would hold it). Short of it, wait for the rest.
          uint8_t first[kLinkHeadBytes + 10];
          const ssize_t have = recv(link, first, sizeof first, MSG_PEEK | MSG_DONTWAIT);
          const size_t whole = LinkHeadBytesFrom(first, have > 0 ? static_cast<size_t>(have) : 0);
          int queued = 0;
          if (have > 0 && whole <= kLinkHeadBytes + 10 + kLinkMaxPathBytes && ioctl(link, FIONREAD, &queued) == 0 &&
              static_cast<size_t>(queued) < whole) {
            const int rest = static_cast<int>(whole);
            setsockopt(link, SOL_SOCKET, SO_RCVLOWAT, &rest, sizeof rest);
            continue;
          }
        }
        Unwatch(link);
        const int one = 1;  // from here the link's reads wake for any byte
        setsockopt(link, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
        inbound_->Submit([this, link, g = greeted->second] { Inbound(link, g); });
        greeted_.erase(greeted);
        continue;
      }
      std::unique_lock lock(mu_);
      v1::ClusterPort target;
      if (fd != listener_) {
        auto it = key_of_.find(fd);
        if (it == key_of_.end()) continue;  // closed by a Reconcile meanwhile
        target = proxies_[it->second].target;
      }
      // Accepted under the lock: Reconcile cannot close the listener meanwhile.
      bool out_of_fds = false;
      for (int taken = 0; taken < 64; ++taken) {
        int conn = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
        if (conn < 0) {
          out_of_fds = errno == EMFILE || errno == ENFILE;
          break;
        }
        NoDelay(conn);
        if (fd == listener_) Greet(conn);
        else outbound_->Submit([this, conn, target] { Outbound(conn, target); });
      }
      lock.unlock();
      if (out_of_fds) {  // the connection waits in the backlog; the listener stays ready: do not spin
        spdlog::warn("port relay: out of descriptors; connections wait");
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
  }
}

int PortRelay::OpenLink(const v1::ClusterPort& target, uint32_t uid, uint32_t gid, int keep_idle_s) {
  const std::string& relay = target.relay();
  const std::string what = target.path().empty() ? fmt::format("port {}", target.port()) : "/" + target.path();
  std::string host, service;
  int link = SplitAddress(relay, &host, &service) ? ConnectTo(host, service, kLinkHandshakeMs) : -EINVAL;
  if (link < 0) {
    spdlog::debug("{}: cannot reach its node's relay {}: {}", what, relay, strerror(-link));
    return link;
  }
  Timeouts(link, kLinkHandshakeMs);
  KeepLinkAlive(link, keep_idle_s);
  if (tls_ != nullptr && (link = tls_->Connect(link)) < 0) return link;
  Timeouts(link, kLinkHandshakeMs);
  // The owner speaks first: its challenge. Then the port and the proof.
  char challenge[kLinkChallengeBytes];
  uint8_t answer[4];
  const std::string wanted = Wanted(target, uid, gid);
  std::string header(kLinkMagic, sizeof kLinkMagic);
  bool spoke = ReadFull(link, challenge, sizeof challenge);
  if (spoke) {
    header += JoinProof(join_token_, ProofInput(std::string_view(challenge, sizeof challenge), wanted));
    header += wanted;
    Timeouts(link, 2 * kLinkHandshakeMs);  // the owner's own connect may take kLinkHandshakeMs
    spoke = WriteFull(link, header.data(), header.size()) && ReadFull(link, answer, sizeof answer);
  }
  const uint32_t said = static_cast<uint32_t>(answer[0]) << 24 | answer[1] << 16 | answer[2] << 8 | answer[3];
  const int err = !spoke ? ECONNRESET : said > 4095 ? EPROTO : static_cast<int>(said);  // (an errno, or 0)
  if (err != 0) {  // nothing listens there now, or it refused the link
    spdlog::debug("{}: its node answered {}", what, strerror(err));
    CloseWithReset(link);
    return -err;
  }
  Timeouts(link, 0);
  return link;
}

void PortRelay::Outbound(int client, const v1::ClusterPort& target) {
  ucred client_cred{0, static_cast<uid_t>(-1), static_cast<gid_t>(-1)};  // nobody, if the kernel does not say
  socklen_t cred_len = sizeof client_cred;
  getsockopt(client, SOL_SOCKET, SO_PEERCRED, &client_cred, &cred_len);
  int link = OpenLink(target, client_cred.uid, client_cred.gid, kLinkKeepIdleS);
  if (link < 0) {
    CloseWithReset(client);
    return;
  }
  CountConnection("relayed_out");
  if (!splice_->Add(client, link, target.node_id()).ok())
    spdlog::warn("{}: cannot relay a connection", target.path().empty() ? fmt::format("port {}", target.port()) : target.path());
  table_.WakeWatch();  // as for a direct link
}

void PortRelay::Greet(int link) {
  Greeted greeted{std::chrono::steady_clock::now() + std::chrono::milliseconds(kLinkHandshakeMs), {}};
  if (greeted_.size() >= kMaxGreetedLinks) {  // the one waiting longest goes: a real link answers within a round trip
    auto oldest = std::min_element(greeted_.begin(), greeted_.end(),
                                   [](const auto& a, const auto& b) { return a.second.until < b.second.until; });
    spdlog::debug("port relay: {} links wait for their first bytes; the oldest is reset", greeted_.size());
    Unwatch(oldest->first);
    CloseWithReset(oldest->first);
    greeted_.erase(oldest);
  }
  // In the clear the owner speaks first: the challenge, at once (16 bytes
  // into a new connection's empty buffer never block); the link is ready
  // once a whole head could be there.
  if (tls_ == nullptr) {
    const int head = static_cast<int>(kLinkHeadBytes);
    if (RAND_bytes(greeted.challenge.data(), kLinkChallengeBytes) != 1 ||
        send(link, greeted.challenge.data(), kLinkChallengeBytes, MSG_DONTWAIT | MSG_NOSIGNAL) !=
            static_cast<ssize_t>(kLinkChallengeBytes) ||
        setsockopt(link, SOL_SOCKET, SO_RCVLOWAT, &head, sizeof head) != 0) {
      CloseWithReset(link);
      return;
    }
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = kGreetedTag << 32 | static_cast<uint32_t>(link);  // not a listener's (Watch): a closed one's number may come back as this
  if (epoll_ctl(epoll_, EPOLL_CTL_ADD, link, &ev) != 0) {
    CloseWithReset(link);
    return;
  }
  greeted_[link] = greeted;
}

int PortRelay::EndSilentLinks(std::chrono::steady_clock::time_point now) {
  std::optional<std::chrono::steady_clock::time_point> next;
  for (auto it = greeted_.begin(); it != greeted_.end();) {
    if (it->second.until <= now) {
      Unwatch(it->first);
      CloseWithReset(it->first);
      it = greeted_.erase(it);
      continue;
    }
    if (!next || it->second.until < *next) next = it->second.until;
    ++it;
  }
  if (!next) return -1;
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*next - now).count());
}

void PortRelay::Inbound(int link, const Greeted& greeted) {
  Timeouts(link, kLinkHandshakeMs);
  KeepLinkAlive(link);
  if (tls_ != nullptr && (link = tls_->Accept(link)) < 0) return;
  Timeouts(link, kLinkHandshakeMs);
  std::array<uint8_t, kLinkChallengeBytes> challenge = greeted.challenge;
  LinkRequest asked;
  // With TLS the challenge goes inside it, now.
  if ((tls_ != nullptr && (RAND_bytes(challenge.data(), kLinkChallengeBytes) != 1 ||
                           !WriteFull(link, challenge.data(), kLinkChallengeBytes))) ||
      !ReadLinkRequest([link](void* buf, size_t n) { return ReadFull(link, buf, n); }, &asked)) {
    CloseWithReset(link);
    return;
  }
  const uint32_t port = asked.port;
  const std::string& path = asked.path;
  const uint32_t uid = asked.uid, gid = asked.gid;
  int err = 0;
  int local = -1;
  std::optional<v1::ClusterPort> owned;
  // A TCP server's shim may take the link itself at accept (sockets/handover.h):
  // expected from before the connect, since the server may accept at once.
  uint16_t agent_port = 0;
  bool expected = false;
  auto expect = [&](uint16_t p) { expected = handovers_.Expect(agent_port = p, static_cast<uint16_t>(port)); };
  const std::string_view challenge_bytes(reinterpret_cast<const char*>(challenge.data()), challenge.size());
  if (tls_ == nullptr && !gate_.PeerProofAccepted(ProofInput(challenge_bytes, asked.wanted), asked.proof)) {
    spdlog::warn("port relay: a link without proof of the cluster's join token was refused");
    err = EACCES;
  } else if (const std::string key = port != 0 ? PortTable::Key(port) : PortTable::UnixKey(path);
             !(owned = table_.OwnedHere(key)) || !table_.ListensNow(*owned)) {
    err = ECONNREFUSED;  // not a socket this node holds and listens on: nothing else of the node is reached
  } else if ((local = port != 0 ? ConnectTo(owned->connect_host(), std::to_string(port), kLinkHandshakeMs, expect)
                                : ConnectUnixInView(view_fd_, path, uid, gid)) < 0) {
    err = -local;
  }
  const uint8_t answer[4] = {static_cast<uint8_t>(err >> 24), static_cast<uint8_t>(err >> 16),
                             static_cast<uint8_t>(err >> 8), static_cast<uint8_t>(err)};
  if (!WriteFull(link, answer, sizeof answer) || err != 0) {
    if (expected) handovers_.Cancel(agent_port, static_cast<uint16_t>(port));
    if (local >= 0) CloseWithReset(local);
    CloseWithReset(link);
    return;
  }
  Timeouts(link, 0);
  if (!expected) {
    Relay(link, local);
    return;
  }
  std::optional<Handovers::Claim> claimed;
  if (!handovers_.Ready(agent_port, static_cast<uint16_t>(port), {link, local}, &claimed)) {
    Relay(link, local);
    return;
  }
  if (claimed) {  // the server accepted before the link was told: complete its claim now
    Complete({link, local}, *claimed);
    return;
  }
  uint64_t one = 1;
  (void)!write(wake_, &one, sizeof one);  // the loop's next wait ends sooner
}

void PortRelay::Relay(int link, int local) {
  CountConnection("relayed_in");
  if (!splice_->Add(link, local).ok()) spdlog::warn("port relay: cannot relay a connection");
}

void PortRelay::TakeHandedOver(uint16_t server_port, uint16_t agent_port, Handovers::Claim claim) {
  Handovers::Pair pair{-1, -1};
  if (handovers_.Take(server_port, agent_port, claim, &pair) == Handovers::Taken::kNow) Complete(pair, claim);
}

void PortRelay::Complete(Handovers::Pair pair, Handovers::Claim& claim) {
  if (!HoldsOtherEnd(claim.pid, claim.fd, pair.local)) {
    claim.deliver(-EPERM);
    Relay(pair.link, pair.local);  // not that process's: as before
    return;
  }
  if (!claim.deliver(pair.link)) {
    Relay(pair.link, pair.local);
    return;
  }
  CountConnection("handed_over");
  close(pair.link);
  CloseWithReset(pair.local);  // (a reset: no TIME_WAIT left on the agent's port)
}

}  // namespace onebox
