#include "nodeagent/shim_server.h"

#include <fcntl.h>
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

namespace onebox {

namespace {

struct Connection {
  int fd;
  PeerCred peer;
  std::string in;
  std::string out;
};

Status Errno(const std::string& what) { return Status::IOError(fmt::format("{}: {}", what, strerror(errno))); }

bool FillAddr(const std::string& path, sockaddr_un* addr) {
  if (path.size() >= sizeof(addr->sun_path)) return false;
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

}  // namespace

Result<std::unique_ptr<ShimServer>> ShimServer::Start(const std::string& path, Handler handler) {
  sockaddr_un addr;
  if (!FillAddr(path, &addr))
    return Status::InvalidArgument(fmt::format("socket path {} is longer than {} bytes", path, sizeof(addr.sun_path) - 1));

  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Status::FailedPrecondition(fmt::format("{} exists and is not a socket", path));
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
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
  std::unique_ptr<ShimServer> server(new ShimServer(path, fd, wake, std::move(handler)));
  server->thread_ = std::thread([s = server.get()] { s->Loop(); });
  return server;
}

ShimServer::ShimServer(std::string path, int listen_fd, int wake_fd, Handler handler)
    : path_(std::move(path)), listen_fd_(listen_fd), wake_fd_(wake_fd), handler_(std::move(handler)) {}

ShimServer::~ShimServer() { Stop(); }

void ShimServer::Stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  close(wake_fd_);
  unlink(path_.c_str());
}

void ShimServer::Loop() {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    spdlog::error("shim server: epoll_create1: {}", strerror(errno));
    return;
  }
  auto watch = [ep](int fd, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    epoll_ctl(ep, op, fd, &ev);
  };
  watch(listen_fd_, EPOLLIN, EPOLL_CTL_ADD);
  watch(wake_fd_, EPOLLIN, EPOLL_CTL_ADD);
  std::unordered_map<int, Connection> conns;

  auto drop = [&](int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    conns.erase(fd);
  };
  // Writes what is pending; returns false when the connection is gone.
  auto flush = [&](Connection& c) {
    while (!c.out.empty()) {
      ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) return false;
      c.out.erase(0, static_cast<size_t>(n));
    }
    watch(c.fd, c.out.empty() ? EPOLLIN : (EPOLLIN | EPOLLOUT), EPOLL_CTL_MOD);
    return true;
  };
  // Answers every whole frame in c.in; returns false on a protocol error.
  auto serve = [&](Connection& c) {
    while (c.in.size() >= 4) {
      uint32_t len = 0;
      for (int i = 3; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>(c.in[i]);
      if (len > kMaxShimFrameBytes) {
        spdlog::warn("shim client pid {}: frame of {} bytes exceeds {}; closing", c.peer.pid, len, kMaxShimFrameBytes);
        return false;
      }
      if (c.in.size() < 4 + size_t{len}) break;
      v1::ShimRequest req;
      if (!req.ParseFromArray(c.in.data() + 4, static_cast<int>(len))) {
        spdlog::warn("shim client pid {}: malformed request; closing", c.peer.pid);
        return false;
      }
      c.in.erase(0, 4 + size_t{len});
      v1::ShimResponse resp;
      resp.set_id(req.id());
      handler_(c.peer, req, &resp);
      std::string body = resp.SerializeAsString();
      uint32_t n = static_cast<uint32_t>(body.size());
      for (int i = 0; i < 4; ++i) c.out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
      c.out += body;
    }
    return true;
  };

  epoll_event events[64];
  while (!stopping_.load()) {
    int n = epoll_wait(ep, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("shim server: epoll_wait: {}", strerror(errno));
      break;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) continue;
      if (fd == listen_fd_) {
        for (;;) {
          int cfd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
          if (cfd < 0) break;
          ucred cred{};
          socklen_t len = sizeof cred;
          if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            close(cfd);
            continue;
          }
          conns[cfd] = Connection{cfd, PeerCred{cred.pid, cred.uid, cred.gid}, {}, {}};
          watch(cfd, EPOLLIN, EPOLL_CTL_ADD);
          spdlog::debug("shim connection from pid {} uid {} gid {}", cred.pid, cred.uid, cred.gid);
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      Connection& c = it->second;
      bool alive = true;
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        char buf[65536];
        for (;;) {
          ssize_t r = recv(fd, buf, sizeof buf, 0);
          if (r > 0) {
            c.in.append(buf, static_cast<size_t>(r));
            continue;
          }
          if (r < 0 && errno == EINTR) continue;
          if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
          alive = false;  // EOF or error
          break;
        }
        if (!serve(c)) alive = false;
      }
      if (alive) alive = flush(c);
      if (!alive) drop(fd);
    }
  }
  for (auto& [fd, c] : conns) close(fd);
  close(ep);
}

}  // namespace onebox
