// Time for the parts that make the cluster, taken from outside (etcd's raft
// takes ticks): the agent gives them the steady clock; in-process tests give
// them a clock they move by hand, so that members going suspect and dead,
// claim holds and backoffs need no sleeping.
#pragma once

#include <chrono>

namespace onebox {

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual time_point Now() = 0;
  // A time that also runs while the machine is suspended (CLOCK_BOOTTIME for
  // the steady clock, whose Now stops then; a test clock's own Now), to be
  // compared only with itself.
  virtual time_point NowCountingSuspend() { return Now(); }
  // Returns after d has passed on this clock.
  virtual void Sleep(std::chrono::milliseconds d) = 0;
};

// The process's steady clock.
Clock& SteadyClock();

}  // namespace onebox
