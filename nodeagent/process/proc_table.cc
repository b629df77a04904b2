#include "nodeagent/process/proc_table.h"

#include <dirent.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <sstream>

#include "proto/gpid.h"

namespace onebox {

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// NUL-separated strings (cmdline, environ).
std::vector<std::string> SplitNul(const std::string& bytes) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start < bytes.size()) {
    size_t end = bytes.find('\0', start);
    if (end == std::string::npos) end = bytes.size();
    parts.push_back(bytes.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

// What /proc/PID/stat says; false when the process is gone (or the line is odd).
struct Stat {
  std::string comm;
  char state = '?';
  pid_t ppid = 0, pgid = 0;
  uint64_t flags = 0;  // the kernel's PF_* flags of the task
  uint64_t utime = 0, stime = 0, start_ticks = 0;
};

bool ReadStat(const std::string& dir, Stat* st) {
  std::string line = ReadAll(dir + "/stat");
  size_t open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close + 2 >= line.size()) return false;
  st->comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 2));
  std::vector<std::string> f{std::istream_iterator<std::string>(rest), std::istream_iterator<std::string>()};
  // f[0] is field 3 of proc(5): state; f[i] is field i + 3.
  if (f.size() < 20) return false;
  st->state = f[0][0];
  st->ppid = std::atoi(f[1].c_str());
  st->pgid = std::atoi(f[2].c_str());
  st->flags = std::strtoull(f[6].c_str(), nullptr, 10);
  st->utime = std::strtoull(f[11].c_str(), nullptr, 10);
  st->stime = std::strtoull(f[12].c_str(), nullptr, 10);
  st->start_ticks = std::strtoull(f[19].c_str(), nullptr, 10);
  return true;
}

// The effective uid (the second of status's "Uid:" line); -1 when unreadable.
int64_t ReadEffectiveUid(const std::string& dir) {
  std::istringstream in(ReadAll(dir + "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Uid:", 0) != 0) continue;
    std::istringstream ids(line.substr(4));
    int64_t real = -1, effective = -1;
    ids >> real >> effective;
    return effective;
  }
  return -1;
}

bool HasShimPreload(const std::string& dir) {
  for (const std::string& var : SplitNul(ReadAll(dir + "/environ")))
    if (var.rfind("LD_PRELOAD=", 0) == 0 && PreloadNamesShim(var.substr(11))) return true;
  return false;
}

int64_t BootTimeSeconds(const std::string& proc) {
  std::istringstream in(ReadAll(proc + "/stat"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("btime ", 0) == 0) return std::atoll(line.c_str() + 6);
  return 0;
}

std::string UserName(uid_t uid) {
  struct passwd pw, *found = nullptr;
  char buf[1024];
  if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) != 0 || found == nullptr) return "";
  return pw.pw_name;
}

struct Seen {
  Stat stat;
  int64_t uid = -1;
  bool preload = false;
};

}  // namespace

int64_t EffectiveUidOf(pid_t pid) { return ReadEffectiveUid("/proc/" + std::to_string(pid)); }

uint64_t StartTicksOf(pid_t pid) {
  Stat st;
  return ReadStat("/proc/" + std::to_string(pid), &st) ? st.start_ticks : 0;
}

bool IsExiting(pid_t pid) {
  constexpr uint64_t kPfExiting = 0x4;  // PF_EXITING, include/linux/sched.h
  Stat st;
  if (!ReadStat("/proc/" + std::to_string(pid), &st)) return true;
  return st.state == 'Z' || st.state == 'X' || (st.flags & kPfExiting) != 0;
}

std::vector<std::string> PreloadLibraries(const std::string& preload) {
  std::vector<std::string> libraries;
  size_t start = 0;
  while (start <= preload.size()) {
    size_t end = preload.find_first_of(" :", start);
    if (end == std::string::npos) end = preload.size();
    if (end > start) libraries.push_back(preload.substr(start, end - start));
    start = end + 1;
  }
  return libraries;
}

bool IsShimLibrary(const std::string& library) {
  std::string base = library.substr(library.find_last_of('/') + 1);
  return base.rfind("libonebox", 0) == 0 && base.find(".so") != std::string::npos;
}

bool PreloadNamesShim(const std::string& preload) {
  for (const std::string& library : PreloadLibraries(preload))
    if (IsShimLibrary(library)) return true;
  return false;
}

std::vector<v1::ProcessInfo> ScanProcesses(const ProcScanOptions& options, uint32_t node_index,
                                           const std::string& node_name, const ProcSource& source) {
  std::map<pid_t, Seen> seen;
  if (DIR* d = opendir(source.proc.c_str())) {
    while (dirent* e = readdir(d)) {
      char* end = nullptr;
      long pid = std::strtol(e->d_name, &end, 10);
      if (pid <= 0 || *end != '\0') continue;
      std::string dir = source.proc + "/" + e->d_name;
      Seen s;
      if (!ReadStat(dir, &s.stat)) continue;  // gone since readdir
      s.uid = ReadEffectiveUid(dir);
      s.preload = HasShimPreload(dir);
      seen.emplace(static_cast<pid_t>(pid), std::move(s));
    }
    closedir(d);
  }

  // Under onebox: the shim preloaded, or an ancestor under onebox.
  std::map<pid_t, bool> under;
  std::function<bool(pid_t, int)> is_under = [&](pid_t pid, int depth) -> bool {
    auto known = under.find(pid);
    if (known != under.end()) return known->second;
    auto it = seen.find(pid);
    bool result = it != seen.end() && depth < 4096 &&
                  (it->second.preload || (it->second.stat.ppid > 0 && is_under(it->second.stat.ppid, depth + 1)));
    under[pid] = result;
    return result;
  };

  const int64_t boot_ms = BootTimeSeconds(source.proc) * 1000;
  const int64_t ticks = sysconf(_SC_CLK_TCK) > 0 ? sysconf(_SC_CLK_TCK) : 100;
  std::vector<v1::ProcessInfo> out;
  for (const auto& [pid, s] : seen) {
    bool onebox = is_under(pid, 0);
    if (!options.all && !onebox) continue;
    if (options.uid && s.uid != static_cast<int64_t>(*options.uid)) continue;
    v1::ProcessInfo p;
    p.set_gpid(gpid::Make(node_index, pid));
    p.set_node(node_name);
    p.set_node_index(node_index);
    p.set_pid(pid);
    p.set_parent_gpid(s.stat.ppid > 0 ? gpid::Make(node_index, s.stat.ppid) : 0);
    p.set_pgid(s.stat.pgid);
    if (s.uid >= 0) {
      p.set_uid(static_cast<uint32_t>(s.uid));
      p.set_user(UserName(static_cast<uid_t>(s.uid)));
    }
    p.set_state(std::string(1, s.stat.state));
    p.set_start_time_ms(boot_ms + static_cast<int64_t>(s.stat.start_ticks) * 1000 / ticks);
    p.set_cpu_time_ms((s.stat.utime + s.stat.stime) * 1000 / static_cast<uint64_t>(ticks));
    for (std::string& arg : SplitNul(ReadAll(source.proc + "/" + std::to_string(pid) + "/cmdline")))
      p.add_argv(std::move(arg));
    p.set_command(s.stat.comm);
    p.set_under_onebox(onebox);
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace onebox
