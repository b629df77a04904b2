#include "nodeagent/local/shim_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/daemon/thread_name.h"

namespace onebox {

namespace {

Status Errno(const std::string& what) { return Status::IOError(fmt::format("{}: {}", what, strerror(errno))); }

bool FillAddr(const std::string& path, sockaddr_un* addr) {
  if (path.size() >= sizeof(addr->sun_path)) return false;
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

// The first directory above the socket that other users cannot search
// (no execute bit for others), or "" when every one can: their programs
// (su, a test suite that drops privileges) could not connect to it.
std::string UnreachableAbove(const std::string& path) {
  for (std::filesystem::path dir = std::filesystem::path(path).parent_path(); !dir.empty();
       dir = dir.parent_path()) {
    struct stat st;
    if (stat(dir.c_str(), &st) == 0 && !(st.st_mode & S_IXOTH)) return dir.string();
    if (dir == dir.root_path()) break;
  }
  return "";
}

}  // namespace

Result<std::unique_ptr<ShimServer>> ShimServer::Start(const std::string& path, Handler handler,
                                                       CloseHandler on_close) {
  sockaddr_un addr;
  if (!FillAddr(path, &addr))
    return Status::InvalidArgument(fmt::format("socket path {} is longer than {} bytes", path, sizeof(addr.sun_path) - 1));

  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Status::FailedPrecondition(fmt::format("{} exists and is not a socket", path));
    // Non-blocking, so a wedged agent with a full backlog cannot hang us: it
    // answers EAGAIN, and counts as live.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    bool live = probe >= 0 && (connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ||
                               errno == EAGAIN || errno == EINPROGRESS);
    if (probe >= 0) close(probe);
    if (live) return Status::FailedPrecondition(fmt::format("socket {} is in use by a running agent", path));
    unlink(path.c_str());  // stale: its agent is gone
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Errno("socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    Status s = Errno(fmt::format("bind {}", path));
    close(fd);
    return s;
  }
  // Every local user may talk to the agent; the kernel names each caller (SO_PEERCRED).
  if (chmod(path.c_str(), 0666) != 0 || listen(fd, 512) != 0) {
    Status s = Errno(fmt::format("listen on {}", path));
    close(fd);
    unlink(path.c_str());
    return s;
  }
  int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    Status s = Errno("eventfd");
    close(fd);
    unlink(path.c_str());
    return s;
  }
  if (std::string closed = UnreachableAbove(path); !closed.empty())
    spdlog::warn("shim socket {}: other users cannot reach it ({} has no search permission for them), so their "
                 "programs under the shim get ENOTCONN; chmod o+x {} if they should use the cluster",
                 path, closed, closed);
  struct stat bound;
  ino_t inode = stat(path.c_str(), &bound) == 0 ? bound.st_ino : 0;
  std::unique_ptr<ShimServer> server(new ShimServer(path, inode, fd, wake, std::move(handler), std::move(on_close)));
  server->thread_ = std::thread([s = server.get()] { s->Loop(); });
  NameThread(server->thread_, "onebox-shimio");
  return server;
}

ShimServer::ShimServer(std::string path, ino_t inode, int listen_fd, int wake_fd, Handler handler,
                       CloseHandler on_close)
    : path_(std::move(path)),
      inode_(inode),
      listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      handler_(std::move(handler)),
      on_close_(std::move(on_close)) {}

bool ShimServer::Connected(uint64_t serial) {
  std::lock_guard lock(live_mu_);
  return live_.count(serial) > 0;
}

bool ShimReply::Connected() const { return server_ != nullptr && server_->Connected(serial_); }

ShimServer::~ShimServer() { Stop(); }

void ShimServer::Stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  std::lock_guard lock(delivered_mu_);
  close(wake_fd_);
  struct stat st;  // another agent may have taken the path since: leave its socket alone
  if (lstat(path_.c_str(), &st) == 0 && st.st_ino == inode_) unlink(path_.c_str());
}


bool ShimServer::Serve(Connection& c) {
  uint32_t len = 0;
  while (!c.waiting) {
    ShimFrameIn in = PeekShimFrame(std::string_view(c.in).substr(c.in_pos), &len);
    if (in == ShimFrameIn::kNoHeader) break;
    if (len > kMaxShimFrameBytes) {
      spdlog::warn("shim client pid {}: frame of {} bytes exceeds {}; closing", c.peer.pid, len, kMaxShimFrameBytes);
      return false;
    }
    if (in == ShimFrameIn::kPartial) break;
    v1::ShimRequest req;
    if (!req.ParseFromArray(c.in.data() + c.in_pos + kShimFrameHeaderBytes, static_cast<int>(len))) {
      spdlog::warn("shim client pid {}: malformed request; closing", c.peer.pid);
      return false;
    }
    c.in_pos += kShimFrameHeaderBytes + size_t{len};
    v1::ShimResponse resp;
    resp.set_id(req.id());
    ShimCall call(c.peer, this, c.fd, c.serial, req.id());
    handler_(call, req, &resp);
    const int owned = call.attach_owned ? call.attach_fd : -1;
    if (call.taken_ || call.deferred_) {
      if (owned >= 0) close(owned);
      if (call.taken_) return false;  // the handler's now: the server drops its own descriptor
      c.waiting = true;
      break;
    }
    const bool queued = Queue(c, resp, call.attach_fd);
    if (owned >= 0) close(owned);
    if (!queued) return false;
    if (c.pending_out() > kMaxShimPendingOutBytes) break;  // let the client read first
  }
  c.in.erase(0, c.in_pos);  // once per call, not per frame
  c.in_pos = 0;
  return true;
}

namespace {

std::string Framed(const v1::ShimResponse& resp) {
  std::string frame;
  AppendShimFrameHeader(frame, static_cast<uint32_t>(resp.ByteSizeLong()));
  resp.AppendToString(&frame);
  return frame;
}

// One sendmsg of frame with the descriptor riding on its first byte: the
// bytes sent, or -1 with errno.
ssize_t SendWithDescriptor(int fd, const std::string& frame, int attach_fd) {
  iovec iov{const_cast<char*>(frame.data()), frame.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &attach_fd, sizeof(int));
  ssize_t sent;
  do sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (sent < 0 && errno == EINTR);
  return sent;
}

}  // namespace

bool SendShimAnswer(int fd, const v1::ShimResponse& resp, int attach_fd, int timeout_ms) {
  const std::string frame = Framed(resp);
  size_t done = 0;
  while (done < frame.size()) {
    ssize_t sent = done == 0 && attach_fd >= 0 ? SendWithDescriptor(fd, frame, attach_fd)
                                               : send(fd, frame.data() + done, frame.size() - done, MSG_NOSIGNAL);
    if (sent > 0) {
      done += static_cast<size_t>(sent);
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    pollfd p{fd, POLLOUT, 0};
    if (sent == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) || poll(&p, 1, timeout_ms) != 1) return false;
  }
  return true;
}

bool ShimServer::Queue(Connection& c, const v1::ShimResponse& resp, int attach_fd) {
  std::string frame = Framed(resp);
  if (attach_fd >= 0) {
    ssize_t sent = -1;
    if (c.pending_out() == 0) {  // the descriptor rides on the answer's first byte
      sent = SendWithDescriptor(c.fd, frame, attach_fd);
      if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    }
    if (sent > 0) {
      c.out.append(frame, static_cast<size_t>(sent), std::string::npos);
      return true;
    }
    // Not sendable now: the answer goes without the descriptor, and says so.
    if (resp.has_hello() && resp.hello().state_page()) {
      v1::ShimResponse without = resp;
      without.mutable_hello()->set_state_page(false);
      return Queue(c, without, -1);
    }
    if (resp.has_view()) {  // the descriptor is the answer: none, an error
      v1::ShimResponse failed;
      failed.set_id(resp.id());
      failed.set_err(EAGAIN);
      failed.set_message("the view's descriptor could not be sent: ask again");
      return Queue(c, failed, -1);
    }
  }
  c.out += frame;
  return true;
}

int ShimCall::TakeConnection() {
  int fd = fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd >= 0) taken_ = true;
  return fd;
}

ShimReply ShimCall::Defer() {
  deferred_ = true;
  ShimReply r;
  r.server_ = server_;
  r.fd_ = fd_;
  r.serial_ = serial_;
  r.id_ = id_;
  return r;
}

void ShimReply::Send(v1::ShimResponse resp) {
  resp.set_id(id_);
  if (server_ != nullptr) server_->Deliver(fd_, serial_, std::move(resp));
  server_ = nullptr;
}

void ShimServer::Deliver(int fd, uint64_t serial, v1::ShimResponse resp) {
  std::lock_guard lock(delivered_mu_);  // Stop() closes wake_fd_ under it
  if (stopping_.load()) return;         // nobody left to answer
  delivered_.push_back({fd, serial, std::move(resp)});
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

bool ShimServer::OnReadable(Connection& c) {
  // At most one frame's worth per wake-up, so one busy client cannot starve the rest.
  char buf[65536];
  size_t budget = kMaxShimFrameBytes + kShimFrameHeaderBytes;
  while (budget > 0 && c.pending_out() <= kMaxShimPendingOutBytes) {
    ssize_t r = recv(c.fd, buf, std::min(sizeof buf, budget), 0);
    if (r > 0) {
      const bool drained = static_cast<size_t>(r) < std::min(sizeof buf, budget);
      c.in.append(buf, static_cast<size_t>(r));
      budget -= static_cast<size_t>(r);
      if (!Serve(c)) return false;
      // A short read took all there was: epoll (level-triggered) says when
      // more comes, without a recv that would only find EAGAIN.
      if (drained) break;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (r < 0) return false;
    c.peer_closed = true;  // EOF: the client may still read what we owe it
    break;
  }
  return true;
}

bool ShimServer::Flush(Connection& c) {
  while (c.pending_out() > 0) {
    ssize_t n = send(c.fd, c.out.data() + c.out_pos, c.pending_out(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) return false;
    c.out_pos += static_cast<size_t>(n);
  }
  c.out.erase(0, c.out_pos);
  c.out_pos = 0;
  return true;
}

void ShimServer::Watch(int fd, uint32_t events, int op) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  epoll_ctl(epoll_fd_, op, fd, &ev);
}

void ShimServer::Forget(uint64_t serial) {
  // Gone from the live set before the close handler runs: a reply that then
  // finds its connection live will see the handler run after it.
  {
    std::lock_guard lock(live_mu_);
    live_.erase(serial);
  }
  if (on_close_) on_close_(serial);
}

void ShimServer::Drop(int fd) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  uint64_t serial = it->second.serial;
  conns_.erase(it);
  Forget(serial);
}

namespace {

// The caller's supplementary groups as they were when it connected (Linux
// 4.13+); none when the kernel cannot tell, so a check made with them errs
// on the side of refusing.
std::vector<gid_t> PeerGroups(int fd) {
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE) break;
    groups.resize(len / sizeof(gid_t));  // the kernel said how many
  }
  return {};
}

}  // namespace

void ShimServer::AcceptAll() {
  for (;;) {
    int cfd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (cfd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        spdlog::warn("shim server: cannot accept ({}); pausing new connections for 100 ms", strerror(errno));
        epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
        accept_paused_ = true;
      }
      return;
    }
    ucred cred{};
    socklen_t len = sizeof cred;
    if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      close(cfd);
      continue;
    }
    Connection& c = conns_[cfd];
    c.fd = cfd;
    c.serial = next_serial_++;
    {
      std::lock_guard lock(live_mu_);
      live_.insert(c.serial);
    }
    c.peer = PeerCred{cred.pid, cred.uid, cred.gid, PeerGroups(cfd)};
    Watch(cfd, EPOLLIN, EPOLL_CTL_ADD);
    c.armed = EPOLLIN;
    spdlog::debug("shim connection from pid {} uid {} gid {}", cred.pid, cred.uid, cred.gid);
  }
}

bool ShimServer::Rearm(Connection& c) {
  if (c.peer_closed && c.pending_out() == 0 && !c.waiting) return false;  // done with it
  // Read only while the client keeps up with its answers and none is due; after EOF only write.
  uint32_t want = 0;
  if (!c.peer_closed && !c.waiting && c.pending_out() <= kMaxShimPendingOutBytes) want |= EPOLLIN;
  if (c.pending_out() > 0) want |= EPOLLOUT;
  if (want != c.armed) {  // (a claim's round leaves them as they were: no call)
    Watch(c.fd, want, EPOLL_CTL_MOD);
    c.armed = want;
  }
  return true;
}

void ShimServer::TakeDelivered() {
  uint64_t count;
  [[maybe_unused]] ssize_t r = read(wake_fd_, &count, sizeof count);
  std::vector<Delivered> ready;
  {
    std::lock_guard lock(delivered_mu_);
    ready.swap(delivered_);
  }
  for (Delivered& d : ready) {
    auto it = conns_.find(d.fd);
    if (it == conns_.end() || it->second.serial != d.serial) continue;  // the client left meanwhile
    Connection& c = it->second;
    c.waiting = false;
    bool ok = Queue(c, d.resp, -1) && Flush(c);
    if (ok && c.pending_out() <= kMaxShimPendingOutBytes && c.in.size() >= kShimFrameHeaderBytes)
      ok = Serve(c) && Flush(c);
    if (!ok || !Rearm(c)) Drop(d.fd);
  }
}

void ShimServer::OnEvent(int fd, uint32_t events) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Connection& c = it->second;
  bool ok = true;
  if (events & EPOLLERR) ok = false;
  // Gone entirely while its answer is being prepared: nobody to give it to.
  if (c.waiting && (events & EPOLLHUP)) ok = false;
  if (ok && !c.peer_closed && !c.waiting && (events & (EPOLLIN | EPOLLHUP))) ok = OnReadable(c);
  if (ok) ok = Flush(c);
  // Frames held back while the client was behind are answered once it catches up.
  if (ok && c.pending_out() <= kMaxShimPendingOutBytes && c.in.size() >= kShimFrameHeaderBytes)
    ok = Serve(c) && Flush(c);
  // Done with a client that closed its side once everything owed is sent.
  if (!ok || !Rearm(c)) Drop(fd);
}

void ShimServer::Loop() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    spdlog::error("shim server: epoll_create1: {}", strerror(errno));
    return;
  }
  Watch(listen_fd_, EPOLLIN, EPOLL_CTL_ADD);
  Watch(wake_fd_, EPOLLIN, EPOLL_CTL_ADD);
  epoll_event events[64];
  while (!stopping_.load()) {
    int n = epoll_wait(epoll_fd_, events, 64, accept_paused_ ? 100 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("shim server: epoll_wait: {}", strerror(errno));
      break;
    }
    if (accept_paused_) {
      accept_paused_ = false;
      Watch(listen_fd_, EPOLLIN, EPOLL_CTL_ADD);
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) TakeDelivered();
      else if (fd == listen_fd_) AcceptAll();
      else OnEvent(fd, events[i].events);
    }
  }
  for (auto& [fd, c] : conns_) {
    close(fd);
    Forget(c.serial);
  }
  conns_.clear();
  close(epoll_fd_);
}

}  // namespace onebox
