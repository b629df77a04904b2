#include "nodeagent/sockets/handover.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "nodeagent/sockets/sock_diag.h"

namespace onebox {

bool HoldsOtherEnd(pid_t pid, int fd, int local) {
  // The other end's own address is our far one, and the other way round:
  // its socket, found by those in this namespace, and the socket process
  // pid holds as fd (named by /proc without touching what fd is) must be one.
  sockaddr_storage mine{}, far{};
  socklen_t mine_len = sizeof mine, far_len = sizeof far;
  if (getsockname(local, reinterpret_cast<sockaddr*>(&mine), &mine_len) != 0 ||
      getpeername(local, reinterpret_cast<sockaddr*>(&far), &far_len) != 0)
    return false;
  const uint64_t inode = TcpSocketInode(/*self=*/far, /*peer=*/mine);
  if (inode == 0) return false;
  char held[64];
  const std::string where = fmt::format("/proc/{}/fd/{}", pid, fd);
  const ssize_t n = readlink(where.c_str(), held, sizeof held - 1);
  return n > 0 && std::string_view(held, static_cast<size_t>(n)) == fmt::format("socket:[{}]", inode);
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
