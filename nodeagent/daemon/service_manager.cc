#include "nodeagent/daemon/service_manager.h"

#include <systemd/sd-daemon.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

namespace onebox::service_manager {
namespace {

// The watchdog's interval (WATCHDOG_USEC, for this process), 0 when off;
// read once.
uint64_t WatchdogUsec() {
  static const uint64_t usec = [] {
    uint64_t u = 0;
    return sd_watchdog_enabled(/*unset_environment=*/0, &u) > 0 ? u : 0;
  }();
  return usec;
}

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Notify(const std::string& state) {
  int r = sd_notify(/*unset_environment=*/0, state.c_str());
  if (r < 0) spdlog::warn("service manager: cannot notify {}: {}", state.substr(0, state.find('\n')), strerror(-r));
}

}  // namespace

void Ready(std::string_view status) {
  Notify("READY=1\nSTATUS=" + std::string(status));
  if (WatchdogUsec() > 0) spdlog::info("service manager: watchdog every {} ms", WatchdogUsec() / 1000);
}

void Stopping() { Notify("STOPPING=1\nSTATUS=stopping"); }

void Alive() {
  const uint64_t usec = WatchdogUsec();
  if (usec == 0) return;
  static std::atomic<int64_t> last_us{0};
  const int64_t now = NowUs();
  int64_t last = last_us.load(std::memory_order_relaxed);
  if (last != 0 && now - last < static_cast<int64_t>(usec / 4)) return;
  if (!last_us.compare_exchange_strong(last, now)) return;  // another thread just sent it
  Notify("WATCHDOG=1");
}

}  // namespace onebox::service_manager
