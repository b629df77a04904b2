#include "nodeagent/peer/periodic.h"

#include "nodeagent/daemon/thread_name.h"


namespace onebox {

void PeriodicThread::Start(const std::string& name, std::chrono::milliseconds period, std::function<void()> round) {
  Start(name, period, std::move(round), nullptr);
}

void PeriodicThread::Start(const std::string& name, std::chrono::milliseconds period, std::function<void()> round,
                           std::function<bool()> idle) {
  thread_ = std::thread([this, period, round = std::move(round), idle = std::move(idle)] {
    for (;;) {
      {
        std::unique_lock lock(mu_);
        if (idle && !woken_ && idle()) {
          resting_ = true;
          cv_.wait(lock, [this] { return stopping_ || woken_; });
          resting_ = false;
        }
        woken_ = false;
        if (cv_.wait_for(lock, period, [this] { return stopping_; })) return;
      }
      round();
    }
  });
  NameThread(thread_, name);
}

void PeriodicThread::Wake() {
  bool was_resting;
  {
    std::lock_guard lock(mu_);
    woken_ = true;
    was_resting = resting_;
  }
  if (was_resting) cv_.notify_all();  // (not a thread between rounds: it would wake for nothing)
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
