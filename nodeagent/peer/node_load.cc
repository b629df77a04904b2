#include "nodeagent/peer/node_load.h"

#include "nodeagent/peer/cpu_quota.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace onebox {

namespace {

// The kernel moves the load average every 5 s, and memory is read as
// often (two files: a ninth of an idle gossip thread's work when read every
// second); the CPUs a process may use change only when someone changes its
// affinity or its cgroup's quota, and finding the quota opens five or six
// files (a third of an idle gossip round's work when read every second).
constexpr auto kLoadFreshFor = std::chrono::seconds(5);
constexpr auto kCpusFreshFor = std::chrono::seconds(5);

void ReadCpus(v1::NodeLoad* load) {
  cpu_set_t allowed;
  const int cpus = sched_getaffinity(0, sizeof allowed, &allowed) == 0 ? CPU_COUNT(&allowed)
                                                                       : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  load->set_cpus(static_cast<uint32_t>(std::max(1, cpus)));
  if (std::optional<double> quota = OwnCpuQuota(); quota && *quota < load->cpus()) load->set_cpu_quota(*quota);
  else load->clear_cpu_quota();
}

// One read of /proc/meminfo's head, where MemTotal and MemAvailable are (its
// first and third lines; a stream that parsed all fifty lines was a sixth of
// an idle gossip round). A value not found leaves the last one read.
void ReadLoadAndMemory(v1::NodeLoad* load) {
  double avg[1] = {0};
  load->set_loadavg_1m(getloadavg(avg, 1) == 1 ? avg[0] : 0);
  // After a newline of our own, so that every key is found as "\nKey:".
  char head[1024] = "\n";
  ssize_t got = -1;
  if (int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC); fd >= 0) {
    got = read(fd, head + 1, sizeof head - 2);
    close(fd);
  }
  if (got <= 0) return;
  head[got + 1] = '\0';
  // The kibibytes on the line that starts with key.
  auto kib_of = [&](std::string_view key) -> std::optional<uint64_t> {
    const char* at = strstr(head, ("\n" + std::string(key)).c_str());
    if (at == nullptr) return std::nullopt;
    const char* digits = at + 1 + key.size();
    char* end = nullptr;
    const uint64_t kib = strtoull(digits, &end, 10);
    if (end == digits) return std::nullopt;
    return kib;
  };
  if (std::optional<uint64_t> total = kib_of("MemTotal:")) load->set_mem_total_bytes(*total * 1024);
  if (std::optional<uint64_t> available = kib_of("MemAvailable:")) load->set_mem_available_bytes(*available * 1024);
}

}  // namespace

v1::NodeLoad ReadLoad() {
  static std::mutex mu;
  using Clock = std::chrono::steady_clock;
  static std::optional<Clock::time_point> load_read_at, cpus_read_at;
  static v1::NodeLoad& last = *new v1::NodeLoad();  // never destroyed: threads may ask at exit
  std::lock_guard lock(mu);
  const Clock::time_point now = Clock::now();
  if (!cpus_read_at || now - *cpus_read_at >= kCpusFreshFor) {
    ReadCpus(&last);
    cpus_read_at = now;
  }
  if (!load_read_at || now - *load_read_at >= kLoadFreshFor) {
    ReadLoadAndMemory(&last);
    load_read_at = now;
  }
  return last;
}

}  // namespace onebox
