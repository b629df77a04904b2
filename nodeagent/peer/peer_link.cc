#include "nodeagent/peer/peer_link.h"

namespace onebox {

void Cancellation::Cancel() {
  // Under the lock: Detach waits for it, so each call's state (a gRPC
  // context) is still there.
  std::lock_guard lock(mu_);
  cancelled_ = true;
  for (auto& [ticket, cancel] : calls_) cancel();
}

bool Cancellation::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

uint64_t Cancellation::Attach(std::function<void()> cancel) {
  std::lock_guard lock(mu_);
  if (cancelled_) return 0;
  uint64_t ticket = next_ticket_++;
  calls_.emplace(ticket, std::move(cancel));
  return ticket;
}

void Cancellation::Detach(uint64_t ticket) {
  std::lock_guard lock(mu_);
  calls_.erase(ticket);
}

}  // namespace onebox
