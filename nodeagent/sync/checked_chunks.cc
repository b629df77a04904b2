#include "nodeagent/sync/checked_chunks.h"

namespace onebox {

void CheckedChunks::Checked(const std::string& digest) {
  const Clock::time_point now = Clock::now();
  std::lock_guard lock(mu_);
  at_[digest] = now;
  order_.emplace_back(now, digest);
  ForgetOld(now);
}

bool CheckedChunks::Take(const std::string& digest) {
  const Clock::time_point now = Clock::now();
  std::lock_guard lock(mu_);
  ForgetOld(now);
  auto it = at_.find(digest);
  if (it == at_.end()) return false;
  at_.erase(it);
  ++taken_;
  return true;
}

uint64_t CheckedChunks::taken() {
  std::lock_guard lock(mu_);
  return taken_;
}

size_t CheckedChunks::size() {
  std::lock_guard lock(mu_);
  ForgetOld(Clock::now());
  return at_.size();
}

void CheckedChunks::ForgetOld(Clock::time_point now) {
  while (!order_.empty() && (order_.size() > max_ || now - order_.front().first >= window_)) {
    auto it = at_.find(order_.front().second);
    if (it != at_.end() && it->second == order_.front().first) at_.erase(it);  // (not one Checked again since)
    order_.pop_front();
  }
}

}  // namespace onebox
