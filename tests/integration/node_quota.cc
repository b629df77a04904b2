#include "tests/integration/node_quota.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace onebox::testing {

namespace {

constexpr const char* kRoot = "/sys/fs/cgroup";
constexpr int kPeriodUs = 100'000;

bool WriteFile(const std::string& file, const std::string& text) {
  std::ofstream out(file);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

std::string ReadFile(const std::string& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

}  // namespace

bool NodeQuota::Make(std::string* why) {
  const std::string base = fmt::format("onebox-bench-{}", name_);
  const long quota = std::lround(cpus_ * kPeriodUs);
  std::istringstream controllers(ReadFile(fmt::format("{}/cgroup.controllers", kRoot)));
  bool v2_cpu = false;
  for (std::string c; controllers >> c;) v2_cpu = v2_cpu || c == "cpu";
  if (v2_cpu) {
    // v2: cpu enabled for the root's children, then cpu.max.
    (void)WriteFile(fmt::format("{}/cgroup.subtree_control", kRoot), "+cpu");
    const std::string dir = fmt::format("{}/{}", kRoot, base);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      *why = fmt::format("cannot make cgroup {}: {}", dir, strerror(errno));
      return false;
    }
    dirs_.push_back(dir);
    if (!WriteFile(dir + "/cpu.max", fmt::format("{} {}", quota, kPeriodUs))) {
      *why = fmt::format("cannot set {}/cpu.max", dir);
      return false;
    }
    usage_file_ = dir + "/cpu.stat";
    return true;
  }
  // v1: the cpu hierarchy (alone, or mounted with cpuacct), and cpuacct for the time used.
  for (const char* cpu : {"cpu", "cpu,cpuacct"}) {
    const std::string mount = fmt::format("{}/{}", kRoot, cpu);
    if (!Exists(mount + "/cpu.cfs_quota_us")) continue;
    // systemd makes cpu a symlink to cpu,cpuacct: the hierarchy's own name
    // says which controllers a mount of it must name.
    std::error_code ec;
    const std::string hierarchy = std::filesystem::canonical(mount, ec).filename();
    const std::string dir = fmt::format("{}/{}", mount, base);
    if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      *why = fmt::format("cannot make cgroup {}: {}", dir, strerror(errno));
      return false;
    }
    dirs_.push_back(dir);
    cpu_hierarchy_ = ec || hierarchy.empty() ? std::string(cpu) : hierarchy;
    if (!WriteFile(dir + "/cpu.cfs_period_us", std::to_string(kPeriodUs)) ||
        !WriteFile(dir + "/cpu.cfs_quota_us", std::to_string(quota))) {
      *why = fmt::format("cannot set the quota of {}", dir);
      return false;
    }
    if (Exists(dir + "/cpuacct.usage")) {
      usage_file_ = dir + "/cpuacct.usage";
    } else if (const std::string acct = fmt::format("{}/cpuacct", kRoot); Exists(acct + "/cpuacct.usage")) {
      const std::string acct_dir = fmt::format("{}/{}", acct, base);
      if (mkdir(acct_dir.c_str(), 0755) == 0 || errno == EEXIST) {
        dirs_.push_back(acct_dir);
        usage_file_ = acct_dir + "/cpuacct.usage";
      }
    }
    usage_in_ns_ = true;
    return true;
  }
  *why = "this machine has no cgroup cpu controller at /sys/fs/cgroup (v2 cpu.max or v1 cpu.cfs_quota_us)";
  return false;
}

std::string NodeQuota::EnterCommand() const {
  std::string cmd;
  for (const std::string& dir : dirs_) cmd += fmt::format("echo $$ > {}/cgroup.procs && ", dir);
  return cmd;
}

std::string NodeQuota::MountCommand() const {
  if (cpu_hierarchy_.empty()) return fmt::format("mount -t cgroup2 none {}", kRoot);
  return fmt::format("mount -t tmpfs none {0} && mkdir {0}/{1} && mount -t cgroup -o {1} none {0}/{1}", kRoot,
                     cpu_hierarchy_);
}

bool NodeQuota::Move(pid_t pid) const {
  bool moved = !dirs_.empty();
  for (const std::string& dir : dirs_) moved = WriteFile(dir + "/cgroup.procs", std::to_string(pid)) && moved;
  return moved;
}

std::vector<std::string> NodeQuota::Wrap(const std::vector<std::string>& argv) const {
  std::vector<std::string> wrapped{"sh", "-c", EnterCommand() + "exec \"$@\"", "sh"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

double NodeQuota::CpuSeconds() const {
  if (usage_file_.empty()) return 0;
  const std::string text = ReadFile(usage_file_);
  if (usage_in_ns_) return text.empty() ? 0 : std::stod(text) / 1e9;
  std::istringstream words(text);  // "usage_usec N\n..."
  for (std::string key; words >> key;) {
    double value = 0;
    if (!(words >> value)) break;
    if (key == "usage_usec") return value / 1e6;
  }
  return 0;
}

NodeQuota::~NodeQuota() {
  for (const std::string& dir : dirs_) {
    // What is still inside goes to the parent, again while a fork adds more.
    const std::string parent = std::filesystem::path(dir).parent_path();
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (rmdir(dir.c_str()) != 0 && errno == EBUSY && std::chrono::steady_clock::now() < give_up) {
      std::istringstream pids(ReadFile(dir + "/cgroup.procs"));
      for (std::string pid; pids >> pid;) (void)WriteFile(parent + "/cgroup.procs", pid);
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (Exists(dir)) fprintf(stderr, "cgroup %s is left behind: %s\n", dir.c_str(), strerror(errno));
  }
}

}  // namespace onebox::testing
