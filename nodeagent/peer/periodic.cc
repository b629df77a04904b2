#include "nodeagent/peer/periodic.h"

namespace onebox {

void PeriodicThread::Start(std::chrono::milliseconds period, std::function<void()> round) {
  thread_ = std::thread([this, period, round = std::move(round)] {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        if (cv_.wait_for(lock, period, [this] { return stopping_; })) return;
      }
      round();
    }
  });
}

void PeriodicThread::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace onebox
