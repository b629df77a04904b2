#include "nodeagent/peer/beat_socket.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/daemon/listen_address.h"
#include "nodeagent/daemon/thread_name.h"

namespace onebox {

namespace {
// A member named by a host name is looked up again this often (an address
// literal costs nothing to parse again).
constexpr auto kResolveAgain = std::chrono::seconds(30);
constexpr size_t kMaxDatagram = 65536;
}  // namespace

Result<std::unique_ptr<BeatSocket>> BeatSocket::Open(const std::string& host, int port, Handler on_datagram) {
  sockaddr_storage addr;
  socklen_t len = 0;
  if (int err = SocketAddressOf(host, static_cast<uint32_t>(port), &addr, &len); err != 0)
    return Status::InvalidArgument(fmt::format("heartbeats: {} does not resolve", host));
  int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::IOError(fmt::format("heartbeats: socket: {}", strerror(errno)));
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    Status why = Status::Unavailable(fmt::format("heartbeats: cannot bind UDP {}:{}: {}", host, port, strerror(errno)));
    close(fd);
    return why;
  }
  sockaddr_storage bound;
  socklen_t bound_len = sizeof bound;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) == 0) port = PortOf(bound);
  int wake_fd = eventfd(0, EFD_CLOEXEC);
  if (wake_fd < 0) {
    close(fd);
    return Status::IOError(fmt::format("heartbeats: eventfd: {}", strerror(errno)));
  }
  return std::unique_ptr<BeatSocket>(new BeatSocket(fd, wake_fd, addr.ss_family, port, std::move(on_datagram)));
}

BeatSocket::BeatSocket(int fd, int wake_fd, int family, int port, Handler on_datagram)
    : fd_(fd), wake_fd_(wake_fd), family_(family), port_(port), on_datagram_(std::move(on_datagram)) {
  thread_ = std::thread([this] { Receive(); });
  NameThread(thread_, "onebox-beats-in");
}

BeatSocket::~BeatSocket() {
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof one) != sizeof one) spdlog::error("heartbeats: cannot wake the receiver: {}", strerror(errno));
  if (thread_.joinable()) thread_.join();
  close(wake_fd_);
  close(fd_);
}

void BeatSocket::Receive() {
  std::vector<char> buffer(kMaxDatagram);
  pollfd fds[2] = {{.fd = fd_, .events = POLLIN, .revents = 0}, {.fd = wake_fd_, .events = POLLIN, .revents = 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("heartbeats: poll: {}; no more heartbeats are read", strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    ssize_t n = recv(fd_, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0) {
      // ECONNREFUSED and the like: an ICMP error for a packet sent earlier.
      if (errno != EAGAIN && errno != EINTR) spdlog::debug("heartbeats: recv: {}", strerror(errno));
      continue;
    }
    on_datagram_(std::string_view(buffer.data(), static_cast<size_t>(n)));
  }
}

bool BeatSocket::Resolve(const std::string& address, sockaddr_storage* to, socklen_t* len) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  if (auto it = resolved_.find(address); it != resolved_.end() && now - it->second.at < kResolveAgain) {
    *to = it->second.addr;
    *len = it->second.len;
    return true;
  }
  Result<ListenAddress> parsed = ParseListenAddress(address);
  if (!parsed.ok() || SocketAddressOf(parsed->host, static_cast<uint32_t>(parsed->port), to, len, family_) != 0)
    return false;
  resolved_[address] = Resolved{*to, *len, now};
  return true;
}

bool BeatSocket::SendTo(const std::string& address, std::string_view datagram) {
  sockaddr_storage to;
  socklen_t len = 0;
  if (!Resolve(address, &to, &len)) return false;
  return sendto(fd_, datagram.data(), datagram.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to), len) ==
         static_cast<ssize_t>(datagram.size());
}

}  // namespace onebox
