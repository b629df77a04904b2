#include "nodeagent/peer/beat_socket.h"

#include <arpa/inet.h>
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
  return std::unique_ptr<BeatSocket>(new BeatSocket(fd, addr.ss_family, port, std::move(on_datagram)));
}

BeatSocket::BeatSocket(int fd, int family, int port, Handler on_datagram)
    : fd_(fd), family_(family), port_(port), on_datagram_(std::move(on_datagram)) {
  thread_ = std::thread([this] { Receive(); });
  NameThread(thread_, "onebox-beats-in");
}

BeatSocket::~BeatSocket() {
  stopping_ = true;
  // Linux wakes a recv blocked on a UDP socket at its shutdown, unconnected
  // as it is (the call says ENOTCONN all the same), and a recv after it
  // returns 0 once the datagrams queued are read. An empty datagram to
  // itself first, in case a kernel does not.
  sockaddr_storage self;
  socklen_t len = sizeof self;
  if (getsockname(fd_, reinterpret_cast<sockaddr*>(&self), &len) == 0) {
    if (self.ss_family == AF_INET && reinterpret_cast<sockaddr_in*>(&self)->sin_addr.s_addr == htonl(INADDR_ANY))
      reinterpret_cast<sockaddr_in*>(&self)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (self.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<sockaddr_in6*>(&self)->sin6_addr))
      reinterpret_cast<sockaddr_in6*>(&self)->sin6_addr = in6addr_loopback;
    (void)sendto(fd_, "", 0, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&self), len);
  }
  shutdown(fd_, SHUT_RD);
  if (thread_.joinable()) thread_.join();
  close(fd_);
}

void BeatSocket::Receive() {
  // One blocking recv per datagram: a poll before each (of this socket and
  // an eventfd to stop) was a second system call per beat.
  std::vector<char> buffer(kMaxDatagram);
  for (;;) {
    ssize_t n = recv(fd_, buffer.data(), buffer.size(), 0);
    if (stopping_) return;
    if (n < 0) {
      if (errno == EBADF || errno == ENOTSOCK || errno == EINVAL || errno == EFAULT) {
        spdlog::error("heartbeats: recv: {}; no more heartbeats are read", strerror(errno));
        return;
      }
      // ECONNREFUSED and the like: an ICMP error for a packet sent earlier.
      if (errno != EINTR) {
        spdlog::debug("heartbeats: recv: {}", strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // (an error that stays does not spin)
      }
      continue;
    }
    if (n > 0) on_datagram_(std::string_view(buffer.data(), static_cast<size_t>(n)));
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
