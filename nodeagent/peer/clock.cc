#include "nodeagent/peer/clock.h"

#include <time.h>

#include <thread>

namespace onebox {

namespace {
class Steady final : public Clock {
 public:
  time_point Now() override { return std::chrono::steady_clock::now(); }
  time_point NowCountingSuspend() override {
    timespec ts{};
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  }
  void Sleep(std::chrono::milliseconds d) override { std::this_thread::sleep_for(d); }
};
}  // namespace

Clock& SteadyClock() {
  static Steady clock;
  return clock;
}

}  // namespace onebox
