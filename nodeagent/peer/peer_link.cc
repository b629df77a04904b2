#include "nodeagent/peer/peer_link.h"

namespace onebox {

void Cancellation::Cancel() {
  // Under the lock: Detach waits for it, so the call's state (a gRPC
  // context) is still there. A transport's cancel must not block.
  std::lock_guard lock(mu_);
  cancelled_ = true;
  if (cancel_) cancel_();
}

bool Cancellation::cancelled() const {
  std::lock_guard lock(mu_);
  return cancelled_;
}

bool Cancellation::Attach(std::function<void()> cancel) {
  std::lock_guard lock(mu_);
  if (cancelled_) return false;
  cancel_ = std::move(cancel);
  return true;
}

void Cancellation::Detach() {
  std::lock_guard lock(mu_);
  cancel_ = nullptr;
}

}  // namespace onebox
