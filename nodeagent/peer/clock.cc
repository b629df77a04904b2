#include "nodeagent/peer/clock.h"

#include <thread>

namespace onebox {

namespace {
class Steady final : public Clock {
 public:
  time_point Now() override { return std::chrono::steady_clock::now(); }
  void Sleep(std::chrono::milliseconds d) override { std::this_thread::sleep_for(d); }
};
}  // namespace

Clock& SteadyClock() {
  static Steady clock;
  return clock;
}

}  // namespace onebox
