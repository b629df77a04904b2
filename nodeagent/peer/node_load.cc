#include "nodeagent/peer/node_load.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace onebox {

v1::NodeLoad ReadLoad() {
  v1::NodeLoad load;
  double avg[1] = {0};
  if (getloadavg(avg, 1) == 1) load.set_loadavg_1m(avg[0]);
  load.set_cpus(static_cast<uint32_t>(sysconf(_SC_NPROCESSORS_ONLN)));
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

}  // namespace onebox
