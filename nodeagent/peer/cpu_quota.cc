#include "nodeagent/peer/cpu_quota.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

namespace onebox {

namespace {

std::optional<std::string> FirstLine(const std::string& file) {
  std::ifstream in(file);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  return line;
}

// One cgroup's own quota in CPUs; nullopt for none ("max", -1) or unreadable.
std::optional<double> QuotaAt(const std::string& dir, bool v2) {
  double quota = 0, period = 0;
  if (v2) {
    std::optional<std::string> max = FirstLine(dir + "/cpu.max");
    if (!max) return std::nullopt;
    std::istringstream words(*max);
    std::string q;
    if (!(words >> q >> period) || q == "max") return std::nullopt;
    try {
      quota = std::stod(q);
    } catch (...) {
      return std::nullopt;
    }
  } else {
    std::optional<std::string> q = FirstLine(dir + "/cpu.cfs_quota_us");
    std::optional<std::string> p = FirstLine(dir + "/cpu.cfs_period_us");
    if (!q || !p) return std::nullopt;
    try {
      quota = std::stod(*q);
      period = std::stod(*p);
    } catch (...) {
      return std::nullopt;
    }
  }
  if (quota <= 0 || period <= 0) return std::nullopt;
  return quota / period;
}

// least becomes q when q is smaller (or least had none).
void KeepLeast(std::optional<double>& least, std::optional<double> q) {
  if (q && (!least || *q < *least)) least = q;
}

}  // namespace

std::optional<double> CgroupCpuQuota(const std::string& mount_dir, const std::string& path, bool v2) {
  std::optional<double> least;
  std::string at = path;
  while (true) {
    if (at.find("/../") != std::string::npos || at.ends_with("/..")) return least;  // not a path /proc writes
    KeepLeast(least, QuotaAt(mount_dir + (at == "/" ? "" : at), v2));
    if (at.empty() || at == "/") return least;
    size_t slash = at.rfind('/');
    at = slash == 0 || slash == std::string::npos ? "/" : at.substr(0, slash);
  }
}

std::optional<double> OwnCpuQuota(const std::string& cgroup_root, const std::string& proc_cgroup) {
  std::ifstream in(proc_cgroup);
  std::string line;
  std::optional<double> least;
  while (std::getline(in, line)) {
    // "ID:CONTROLLERS:PATH"; v2's line is "0::PATH".
    size_t first = line.find(':');
    size_t second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = line.substr(second + 1);
    if (controllers.empty()) {
      // v2: mounted at the root itself, or at unified/ beside v1 ones.
      for (const char* sub : {"", "/unified"})
        if (access((cgroup_root + sub + "/cgroup.controllers").c_str(), F_OK) == 0)
          KeepLeast(least, CgroupCpuQuota(cgroup_root + sub, path, true));
      continue;
    }
    std::vector<std::string> names;
    std::istringstream list(controllers);
    for (std::string name; std::getline(list, name, ',');) names.push_back(name);
    if (std::find(names.begin(), names.end(), "cpu") == names.end()) continue;
    // v1: its own mount, named after its controllers (cpu, or cpu,cpuacct).
    for (const std::string& dir : {cgroup_root + "/cpu", cgroup_root + "/" + controllers})
      KeepLeast(least, CgroupCpuQuota(dir, path, false));
  }
  return least;
}

}  // namespace onebox
