#include "nodeagent/peer/node_load.h"

#include "nodeagent/peer/cpu_quota.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>

namespace onebox {

namespace {

constexpr auto kFreshFor = std::chrono::seconds(1);

v1::NodeLoad ReadLoadNow() {
  v1::NodeLoad load;
  double avg[1] = {0};
  if (getloadavg(avg, 1) == 1) load.set_loadavg_1m(avg[0]);
  cpu_set_t allowed;
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  const int cpus = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed) : static_cast<int>(online);
  load.set_cpus(static_cast<uint32_t>(std::max(1, cpus)));
  if (std::optional<double> quota = OwnCpuQuota(); quota && *quota < load.cpus()) load.set_cpu_quota(*quota);
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib) {
    std::getline(meminfo, unit);
    if (key == "MemTotal:") load.set_mem_total_bytes(kib * 1024);
    if (key == "MemAvailable:") load.set_mem_available_bytes(kib * 1024);
  }
  return load;
}

}  // namespace

v1::NodeLoad ReadLoad() {
  static std::mutex mu;
  static std::chrono::steady_clock::time_point read_at{};
  static v1::NodeLoad& last = *new v1::NodeLoad();  // never destroyed: threads may ask at exit
  std::lock_guard lock(mu);
  auto now = std::chrono::steady_clock::now();
  if (read_at == std::chrono::steady_clock::time_point{} || now - read_at >= kFreshFor) {
    last = ReadLoadNow();
    read_at = now;
  }
  return last;
}

}  // namespace onebox
