// A thread that does one round every period until stopped: the loop that
// membership (gossip), anti-entropy, tree repair and the view audit each
// need, written once. Stop wakes the thread at once and joins it; a round
// under way finishes first.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace onebox {

class PeriodicThread {
 public:
  ~PeriodicThread() { Stop(); }
  // Runs round() every period (the first after one period) on a new thread.
  void Start(std::chrono::milliseconds period, std::function<void()> round);
  // Idempotent; safe before Start.
  void Stop();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace onebox
