// A thread that does one round every period until stopped: the loop that
// membership (gossip), anti-entropy, tree repair and the view audit each
// need, written once. Stop wakes the thread at once and joins it; a round
// under way finishes first.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace onebox {

class PeriodicThread {
 public:
  ~PeriodicThread() { Stop(); }
  // Runs round() every period (the first after one period) on a new thread
  // named `name`.
  void Start(const std::string& name, std::chrono::milliseconds period, std::function<void()> round);
  // As Start, but while idle() holds the thread sleeps, with no timeout,
  // until Wake(): a loop with nothing to do costs no wakeups. idle() runs on
  // the thread, under this object's lock (it may take the caller's own).
  void Start(const std::string& name, std::chrono::milliseconds period, std::function<void()> round,
             std::function<bool()> idle);
  // There may be work: an idle thread goes back to a round every period.
  void Wake();
  // Idempotent; safe before Start.
  void Stop();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool woken_ = false;
  bool resting_ = false;  // in the untimed wait of an idle loop
  std::thread thread_;
};

}  // namespace onebox
