#include "nodeagent/sockets/handover.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace onebox {

namespace {

// A TCP socket's own or far address, family and port and address bytes,
// comparable; empty when none.
std::string Name(int fd, bool peer) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if ((peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len) : getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len)) != 0)
    return "";
  if (a.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6&>(a).sin6_addr)) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);  // as the IPv4 address it is
    return std::string("4") + std::string(reinterpret_cast<const char*>(&in6.sin6_port), 2) +
           std::string(reinterpret_cast<const char*>(in6.sin6_addr.s6_addr + 12), 4);
  }
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    return std::string("4") + std::string(reinterpret_cast<const char*>(&in.sin_port), 2) +
           std::string(reinterpret_cast<const char*>(&in.sin_addr), 4);
  }
  if (a.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(a);
    return std::string("6") + std::string(reinterpret_cast<const char*>(&in6.sin6_port), 2) +
           std::string(reinterpret_cast<const char*>(&in6.sin6_addr), 16);
  }
  return "";
}

// The network namespace fd's socket lives in (its nsfs inode); 0 when unknown.
ino_t NetNamespaceOf(int fd) {
  int ns = ioctl(fd, SIOCGSKNS);
  if (ns < 0) return 0;
  struct stat st;
  const ino_t ino = fstat(ns, &st) == 0 ? st.st_ino : 0;
  close(ns);
  return ino;
}

}  // namespace

bool HoldsOtherEnd(pid_t pid, int fd, int local) {
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return false;
  int theirs = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  close(pidfd);
  if (theirs < 0) return false;
  const std::string mine = Name(local, false), far = Name(local, true);
  const ino_t ns = NetNamespaceOf(local);
  const bool same = !mine.empty() && !far.empty() && ns != 0 && NetNamespaceOf(theirs) == ns &&
                    Name(theirs, true) == mine && Name(theirs, false) == far;
  close(theirs);
  return same;
}

bool Handovers::Expect(uint16_t agent_port, uint16_t server_port) {
  if (bits_ == nullptr || agent_port == 0 || server_port == 0) return false;
  std::lock_guard lock(mu_);
  auto [it, added] = waiting_.try_emplace({agent_port, server_port});
  if (!added) return false;  // (the kernel never gives one 4-tuple twice at once)
  if (per_agent_port_[agent_port]++ == 0)
    bits_->words[agent_port / 64].fetch_or(uint64_t{1} << (agent_port % 64), std::memory_order_release);
  return true;
}

bool Handovers::Ready(uint16_t agent_port, uint16_t server_port, Pair pair, std::optional<Claim>* claimed) {
  std::lock_guard lock(mu_);
  auto it = waiting_.find({agent_port, server_port});
  if (it == waiting_.end()) return false;
  if (it->second.claim) {
    *claimed = std::move(it->second.claim);
    ForgetLocked(it);
    return true;
  }
  it->second.pair = pair;
  it->second.ready = true;
  it->second.until = Clock::now() + kHandoverWait;
  return true;
}

void Handovers::ForgetLocked(std::map<Key, Waiting>::iterator it) {
  const uint16_t agent_port = it->first.first;
  if (--per_agent_port_[agent_port] == 0) {
    per_agent_port_.erase(agent_port);
    bits_->words[agent_port / 64].fetch_and(~(uint64_t{1} << (agent_port % 64)), std::memory_order_release);
  }
  waiting_.erase(it);
}

void Handovers::Cancel(uint16_t agent_port, uint16_t server_port) {
  std::optional<Claim> claim;
  {
    std::lock_guard lock(mu_);
    auto it = waiting_.find({agent_port, server_port});
    if (it == waiting_.end()) return;
    claim = std::move(it->second.claim);
    ForgetLocked(it);
  }
  if (claim) claim->deliver(-ENOENT);
}

Handovers::Taken Handovers::Take(uint16_t server_port, uint16_t agent_port, Claim claim, Pair* out) {
  {
    std::lock_guard lock(mu_);
    auto it = waiting_.find({agent_port, server_port});
    if (it != waiting_.end() && !it->second.ready && !it->second.claim) {
      it->second.claim = std::move(claim);
      return Taken::kLater;
    }
    if (it != waiting_.end() && it->second.ready) {
      *out = it->second.pair;
      ForgetLocked(it);
      return Taken::kNow;
    }
  }
  claim.deliver(-ENOENT);  // (outside the lock: it writes to a socket)
  return Taken::kNone;
}

std::vector<Handovers::Pair> Handovers::Expired(Clock::time_point now) {
  std::vector<Pair> done;
  std::lock_guard lock(mu_);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    auto next = std::next(it);
    if (it->second.ready && it->second.until <= now) {
      done.push_back(it->second.pair);
      ForgetLocked(it);
    }
    it = next;
  }
  return done;
}

int Handovers::NextWaitMs(Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (waiting_.empty()) return -1;
  Clock::time_point first = Clock::time_point::max();
  for (const auto& [key, w] : waiting_)
    if (w.ready) first = std::min(first, w.until);
  if (first == Clock::time_point::max()) return -1;  // (Ready wakes the loop)
  return static_cast<int>(std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(first - now).count() + 1));
}

std::vector<Handovers::Pair> Handovers::TakeAll() {
  std::vector<Pair> all;
  std::vector<Claim> claims;
  {
    std::lock_guard lock(mu_);
    while (!waiting_.empty()) {
      Waiting& w = waiting_.begin()->second;
      if (w.ready) all.push_back(w.pair);
      if (w.claim) claims.push_back(std::move(*w.claim));
      ForgetLocked(waiting_.begin());
    }
  }
  for (Claim& c : claims) c.deliver(-ENOENT);
  return all;
}

}  // namespace onebox
