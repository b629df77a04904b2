#include "nodeagent/locks/lock_leases.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <string>

#include "nodeagent/daemon/thread_name.h"

namespace onebox {

LockLeaseSlots::LockLeaseSlots(LockLeases& leases) : leases_(leases) {
  beat_ = std::thread([this] { BeatLoop(); });
  NameThread(beat_, "onebox-leasebeat");
}

LockLeaseSlots::~LockLeaseSlots() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (LockLeaseSlot& s : leases_.slots) {
      const uint64_t seq = s.seq.load();
      if ((seq & 1) != 0) s.seq.store(seq + 1);
    }
    leases_.held.store(0);
    leases_.heartbeat_ns.store(0);
  }
  cv_.notify_all();
  if (beat_.joinable()) beat_.join();
}

int LockLeaseSlots::Install(uint64_t dev, uint64_t ino, bool flock, uint64_t* installed) {
  std::lock_guard lock(mu_);
  if (stopping_ || !trusted_) return -1;
  const unsigned first = LockLeases::FirstSlot(dev, ino, flock);
  for (unsigned i = 0; i < LockLeases::kProbe; ++i) {
    const unsigned at = (first + i) % LockLeases::kSlots;
    LockLeaseSlot& s = leases_.slots[at];
    const uint64_t seq = s.seq.load();
    if ((seq & 1) != 0) continue;
    // Beat first: a shim trusts no slot of a page whose beat is stale.
    leases_.heartbeat_ns.store(CoarseMonotonicNs());
    s.dev.store(dev);
    s.ino.store(ino);
    s.flock.store(flock ? 1 : 0);
    s.seq.store(seq + 1, std::memory_order_release);
    *installed = seq + 1;
    leases_.held.fetch_add(1);
    if (in_use_++ == 0) cv_.notify_all();
    return static_cast<int>(at);
  }
  return -1;
}

void LockLeaseSlots::End(int slot, uint64_t installed) {
  if (slot < 0 || slot >= static_cast<int>(LockLeases::kSlots)) return;
  std::lock_guard lock(mu_);
  LockLeaseSlot& s = leases_.slots[slot];
  const uint64_t seq = s.seq.load();
  if ((seq & 1) == 0 || seq != installed) return;  // ended already (and maybe another file's now)
  s.seq.store(seq + 1);  // seq_cst: before the caller's look at the kernel's locks
  leases_.held.fetch_sub(1);
  --in_use_;
}

void LockLeaseSlots::SetTrusted(bool trusted) {
  std::lock_guard lock(mu_);
  if (trusted_ == trusted) return;
  trusted_ = trusted;
  if (!trusted) leases_.heartbeat_ns.store(0);  // distrusted by every shim at its next look
  cv_.notify_all();
}

size_t LockLeaseSlots::InUse() {
  std::lock_guard lock(mu_);
  return in_use_;
}

void LockLeaseSlots::BeatLoop() {
  // Beats only while a lease is held: an agent without one wakes for nothing.
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (in_use_ == 0 || !trusted_) {
      cv_.wait(lock, [&] { return stopping_ || (in_use_ != 0 && trusted_); });
      continue;
    }
    leases_.heartbeat_ns.store(CoarseMonotonicNs());
    cv_.wait_for(lock, std::chrono::nanoseconds(kLockLeaseBeatNs), [&] { return stopping_; });
  }
}

namespace {

constexpr uint64_t kToEnd = std::numeric_limits<uint64_t>::max();

// One line of /proc/locks, or of fdinfo after "lock:\t":
// "1: POSIX  ADVISORY  WRITE 3316 fd:01:1843286 0 EOF". False for a waiter
// ("1: -> POSIX ...") and for another file.
bool ParseLockLine(const std::string& line, const std::string& file_id, std::string* kind, KernelLock* out) {
  std::istringstream words(line);
  std::vector<std::string> w;
  for (std::string x; words >> x;) w.push_back(x);
  if (w.size() < 8 || w[1] == "->" || w[5] != file_id) return false;
  *kind = w[1];
  out->write = w[3] == "WRITE";
  out->pid = static_cast<pid_t>(std::strtol(w[4].c_str(), nullptr, 10));
  out->start = std::strtoull(w[6].c_str(), nullptr, 10);
  out->end = w[7] == "EOF" ? kToEnd : std::strtoull(w[7].c_str(), nullptr, 10) + 1;
  return true;
}

// The descriptors of pid that hold a flock lock on the file (fdinfo lists
// the locks of the description behind each).
void FlockHolders(pid_t pid, dev_t dev, ino_t ino, const std::string& file_id, std::vector<KernelLock>* out,
                  bool* found) {
  const std::string fds = fmt::format("/proc/{}/fd", pid);
  DIR* dir = opendir(fds.c_str());
  if (dir == nullptr) return;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    struct stat st;
    if (stat(fmt::format("{}/{}", fds, e->d_name).c_str(), &st) != 0 || st.st_dev != dev || st.st_ino != ino) continue;
    std::ifstream info(fmt::format("/proc/{}/fdinfo/{}", pid, e->d_name));
    for (std::string line; std::getline(info, line);) {
      if (line.rfind("lock:", 0) != 0) continue;
      std::string kind;
      KernelLock lock;
      if (!ParseLockLine(line.substr(5), file_id, &kind, &lock) || kind != "FLOCK") continue;
      lock.pid = pid;
      lock.fd = std::atoi(e->d_name);
      out->push_back(lock);
      *found = true;
    }
  }
  closedir(dir);
}

}  // namespace

std::string KernelDeviceId(const std::string& path, uint64_t probe_offset) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return "";
  struct flock probe {};
  probe.l_type = F_RDLCK;
  probe.l_whence = SEEK_SET;
  probe.l_start = static_cast<off_t>(probe_offset);
  probe.l_len = 1;
  std::string id;
  struct stat st;
  if (fstat(fd, &st) == 0 && fcntl(fd, F_OFD_SETLK, &probe) == 0) {
    std::ifstream info(fmt::format("/proc/self/fdinfo/{}", fd));
    const std::string tail = fmt::format(":{}", st.st_ino);
    for (std::string line; std::getline(info, line) && id.empty();) {
      // "lock:\t1: OFDLCK  ADVISORY  READ  -1 fd:01:1234 START END"
      std::istringstream words(line);
      std::vector<std::string> w;
      for (std::string x; words >> x;) w.push_back(x);
      if (w.size() >= 9 && w[0] == "lock:" && w[6].size() > tail.size() &&
          w[6].compare(w[6].size() - tail.size(), tail.size(), tail) == 0)
        id = w[6].substr(0, w[6].size() - tail.size());
    }
  }
  close(fd);  // the probe goes with it
  return id;
}

std::vector<KernelLock> KernelLocksOn(const std::string& dev_id, dev_t dev, ino_t ino, bool flock,
                                      uint64_t shadow_base) {
  const std::string file_id = fmt::format("{}:{}", dev_id, ino);
  std::vector<KernelLock> posix;
  std::set<pid_t> flock_pids;
  std::ifstream in("/proc/locks");
  for (std::string line; std::getline(in, line);) {
    std::string kind;
    KernelLock lock;
    if (!ParseLockLine(line, file_id, &kind, &lock)) continue;
    if (kind == "FLOCK") flock_pids.insert(lock.pid);
    if (kind != "POSIX" || lock.start >= shadow_base) continue;
    if (lock.end == shadow_base) lock.end = kToEnd;  // the shim's "to the end", kept clear of the marks
    posix.push_back(lock);
  }
  if (!flock) return posix;
  // A description's flock lock names the process that took it, which may
  // have exited since (a child keeps the description): every process is
  // looked at then.
  std::vector<KernelLock> held;
  bool all_found = true;
  for (pid_t pid : flock_pids) {
    bool found = false;
    if (pid > 0) FlockHolders(pid, dev, ino, file_id, &held, &found);
    all_found = all_found && found;
  }
  if (all_found) return held;
  held.clear();
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return held;
  while (dirent* e = readdir(proc)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    bool found = false;
    FlockHolders(static_cast<pid_t>(std::atoi(e->d_name)), dev, ino, file_id, &held, &found);
  }
  closedir(proc);
  return held;
}

namespace {

// The path below view of the file (dev, ino) that one of pid's descriptors
// leads to; "" for none.
std::string NameIn(pid_t pid, dev_t dev, ino_t ino, const std::string& view) {
  const std::string fds = fmt::format("/proc/{}/fd", pid);
  DIR* dir = opendir(fds.c_str());
  if (dir == nullptr) return "";
  std::string found;
  while (dirent* e = readdir(dir)) {
    const std::string fd = fmt::format("{}/{}", fds, e->d_name);
    struct stat st;
    if (e->d_name[0] == '.' || stat(fd.c_str(), &st) != 0 || st.st_dev != dev || st.st_ino != ino) continue;
    char link[4096];
    const ssize_t n = readlink(fd.c_str(), link, sizeof link - 1);
    if (n <= 0) continue;
    const std::string name(link, static_cast<size_t>(n));
    if (name.size() > view.size() + 1 && name.compare(0, view.size(), view) == 0 && name[view.size()] == '/') {
      found = name.substr(view.size() + 1);
      break;
    }
  }
  closedir(dir);
  return found;
}

}  // namespace

std::vector<std::pair<std::string, bool>> KernelLockedFilesIn(const std::string& view, const std::string& dev_id,
                                                              uint64_t shadow_base) {
  std::vector<std::pair<std::string, bool>> files;
  struct stat root;
  if (dev_id.empty() || stat(view.c_str(), &root) != 0) return files;
  const std::string file_dev = dev_id + ":";
  std::set<std::pair<ino_t, bool>> seen;
  std::ifstream in("/proc/locks");
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (w.size() < 8 || w[1] == "->" || (w[1] != "POSIX" && w[1] != "FLOCK") || w[5].rfind(file_dev, 0) != 0) continue;
    if (std::strtoull(w[6].c_str(), nullptr, 10) >= shadow_base) continue;
    const ino_t ino = std::strtoull(w[5].c_str() + file_dev.size(), nullptr, 10);
    const bool flock = w[1] == "FLOCK";
    const pid_t pid = static_cast<pid_t>(std::strtol(w[4].c_str(), nullptr, 10));
    if (!seen.insert({ino, flock}).second) continue;
    // Its name, from a descriptor of the process that took it; that one may
    // be gone (flock(1) on a shell's descriptor): then from any that has it.
    std::string name = pid > 0 ? NameIn(pid, root.st_dev, ino, view) : "";
    if (DIR* proc = name.empty() ? opendir("/proc") : nullptr) {
      while (dirent* e = readdir(proc)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        name = NameIn(static_cast<pid_t>(std::atoi(e->d_name)), root.st_dev, ino, view);
        if (!name.empty()) break;
      }
      closedir(proc);
    }
    if (!name.empty()) files.emplace_back(std::move(name), flock);
  }
  return files;
}

}  // namespace onebox
