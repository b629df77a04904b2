#include "nodeagent/locks/kernel_locks.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "nodeagent/process/proc_table.h"

namespace onebox {

namespace {

constexpr uint64_t kToEnd = std::numeric_limits<uint64_t>::max();

// One lock as /proc/locks (or fdinfo after "lock:") prints it:
// "1: POSIX  ADVISORY  WRITE 3316 fd:01:1843286 0 EOF". The one parser of
// those lines here.
struct LockLine {
  std::string kind;     // POSIX, FLOCK, OFDLCK
  std::string file_id;  // "fd:01:1843286": the file system's device as the kernel names it, and the inode
  bool write = false;
  pid_t pid = 0;
  uint64_t start = 0, end = 0;  // end exclusive; kToEnd for EOF
};
// False for a waiter ("1: -> POSIX ...") and for what is not such a line.
bool ParseLockLine(const std::string& line, LockLine* out) {
  std::istringstream words(line);
  std::vector<std::string> w;
  for (std::string x; words >> x;) w.push_back(x);
  if (w.size() < 8 || w[1] == "->") return false;
  out->kind = w[1];
  out->write = w[3] == "WRITE";
  out->pid = static_cast<pid_t>(std::strtol(w[4].c_str(), nullptr, 10));
  out->file_id = w[5];
  out->start = std::strtoull(w[6].c_str(), nullptr, 10);
  out->end = w[7] == "EOF" ? kToEnd : std::strtoull(w[7].c_str(), nullptr, 10) + 1;
  return true;
}

// The locks fdinfo lists for descriptor fd of pid (those of the open file
// description behind it).
std::vector<LockLine> LocksOfDescriptor(const std::string& proc_dir, const std::string& fd) {
  std::vector<LockLine> out;
  std::ifstream info(fmt::format("{}/fdinfo/{}", proc_dir, fd));
  for (std::string line; std::getline(info, line);) {
    LockLine lock;
    if (line.rfind("lock:", 0) == 0 && ParseLockLine(line.substr(5), &lock)) out.push_back(lock);
  }
  return out;
}

// Whether a look into /proc failed because the agent may not look there:
// a process it may not trace (not dumpable; one of another user, or with
// capabilities the agent lacks, for an agent without CAP_SYS_PTRACE) lists
// its descriptors' numbers but not where they lead.
bool Refused(int err) { return err == EACCES || err == EPERM; }

// Calls each(fd) for every descriptor under proc_dir (/proc/PID, or a
// thread's /proc/PID/task/TID) that leads to the file (dev, ino), fd as
// /proc names it, until each returns true; whether one did. *hidden (if
// given) is set when a descriptor there could not be looked at (Refused).
bool EachDescriptorOf(const std::string& proc_dir, dev_t dev, ino_t ino,
                      const std::function<bool(const std::string& fd)>& each, bool* hidden) {
  const std::string fds = proc_dir + "/fd";
  DIR* dir = opendir(fds.c_str());
  if (dir == nullptr) {
    if (hidden != nullptr && Refused(errno)) *hidden = true;
    return false;
  }
  bool done = false;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    struct stat st;
    const std::string link = fmt::format("{}/{}", fds, e->d_name);
    if (stat(link.c_str(), &st) != 0) {
      // Refused to the agent (ptrace's check, which the link's readlink
      // makes too), not by what it leads to (a FUSE mount without
      // allow_other refuses even root).
      char target[1];
      if (hidden != nullptr && Refused(errno) && readlink(link.c_str(), target, sizeof target) < 0 && Refused(errno))
        *hidden = true;
      continue;
    }
    if (st.st_dev != dev || st.st_ino != ino) continue;
    if ((done = each(e->d_name))) break;
  }
  closedir(dir);
  return done;
}

// The threads of process pid other than its main one (/proc/PID/task).
std::vector<pid_t> OtherThreadsOf(pid_t pid) {
  std::vector<pid_t> tids;
  if (DIR* tasks = opendir(fmt::format("/proc/{}/task", pid).c_str())) {
    while (dirent* e = readdir(tasks))
      if (const pid_t tid = static_cast<pid_t>(std::atoi(e->d_name)); tid > 0 && tid != pid) tids.push_back(tid);
    closedir(tasks);
  }
  return tids;
}

// Whether threads a and b share one descriptor table (kcmp(2)); not when
// one of them is gone. When that cannot be told (no kcmp in the kernel, or
// a seccomp filter refuses it), they are taken to: threads share their
// process's table unless one unshared it, which is rare.
bool SameDescriptorTable(pid_t a, pid_t b) {
  const long order = syscall(SYS_kcmp, a, b, KCMP_FILES, 0, 0);
  return order == 0 || (order < 0 && errno != ESRCH);
}

// Where EachDescriptorOfProcess found a descriptor: the /proc directory
// that lists it, the thread whose table it is (the process itself for its
// own), and the other threads that had that table when it was looked at.
struct DescriptorTable {
  std::string proc_dir;
  pid_t holder;
  std::vector<pid_t> sharers;
};

// As EachDescriptorOf, for process pid's descriptors, in each of its
// tables once. Threads share the process's table unless one made its own
// (unshare(CLONE_FILES)); a process whose main thread ended with
// pthread_exit while others go on has its tables in those threads only (the
// leader, a zombie, has none).
bool EachDescriptorOfProcess(pid_t pid, dev_t dev, ino_t ino,
                             const std::function<bool(const DescriptorTable& table, const std::string& fd)>& each,
                             bool* hidden = nullptr) {
  const std::string proc_dir = fmt::format("/proc/{}", pid);
  const DescriptorTable process{proc_dir, pid, {}};
  if (EachDescriptorOf(proc_dir, dev, ino, [&](const std::string& fd) { return each(process, fd); }, hidden))
    return true;
  // The live threads, grouped by table; the process's own group (while its
  // leader lives) was looked at above.
  std::vector<DescriptorTable> tables;
  const bool leader_lives = !IsExiting(pid);
  if (leader_lives) tables.push_back(process);
  for (pid_t tid : OtherThreadsOf(pid)) {
    auto same = std::find_if(tables.begin(), tables.end(),
                             [&](const DescriptorTable& table) { return SameDescriptorTable(table.holder, tid); });
    if (same != tables.end()) same->sharers.push_back(tid);
    else tables.push_back({fmt::format("{}/task/{}", proc_dir, tid), tid, {}});  // (or gone: nothing to list)
  }
  for (size_t i = leader_lives ? 1 : 0; i < tables.size(); ++i)
    if (EachDescriptorOf(
            tables[i].proc_dir, dev, ino, [&](const std::string& fd) { return each(tables[i], fd); }, hidden))
      return true;
  return false;
}

// The locks /proc/locks lists now, waiters left out; of file_id only, if given.
std::vector<LockLine> GrantedLocks(const std::string& file_id = "") {
  std::vector<LockLine> out;
  std::ifstream in("/proc/locks");
  for (std::string line; std::getline(in, line);) {
    LockLine lock;
    if (ParseLockLine(line, &lock) && (file_id.empty() || lock.file_id == file_id)) out.push_back(lock);
  }
  return out;
}

// Calls each(pid) for every process, until it returns true.
void EachProcess(const std::function<bool(pid_t)>& each) {
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* e = readdir(proc))
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && each(static_cast<pid_t>(std::atoi(e->d_name)))) break;
  closedir(proc);
}

// The descriptors of pid that hold a flock lock on the file (fdinfo lists
// the locks of the description behind each); whether there was one. Each
// is counted in *seen under the process that took its lock (as /proc/locks
// names it); *hidden is set when one of pid's descriptors could not be
// looked at.
bool FlockHolders(pid_t pid, dev_t dev, ino_t ino, const std::string& file_id, std::vector<KernelLock>* out,
                  std::map<pid_t, size_t>* seen, bool* hidden) {
  bool found = false;
  EachDescriptorOfProcess(
      pid, dev, ino,
      [&](const DescriptorTable& table, const std::string& fd) {
        for (const LockLine& lock : LocksOfDescriptor(table.proc_dir, fd)) {
          if (lock.kind != "FLOCK" || lock.file_id != file_id) continue;
          out->push_back(KernelLock{pid, std::atoi(fd.c_str()), lock.write, lock.start, lock.end,
                                    table.holder != pid ? table.holder : 0, table.sharers});
          ++(*seen)[lock.pid];
          found = true;
        }
        return false;
      },
      hidden);
  return found;
}

}  // namespace

int CopyLockDescriptor(const KernelLock& k, int* err) {
  if (k.fd < 0) {  // its process's descriptors are hidden from the agent (KernelLocksOn)
    *err = EACCES;
    return -1;
  }
  std::vector<pid_t> from{k.tid != 0 ? k.tid : k.pid};
  if (k.tid != 0) from.insert(from.end(), k.sharers.begin(), k.sharers.end());  // (that thread may have ended)
  bool all_exiting = true;
  int last = ENOLCK;
  for (pid_t id : from) {
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, id, k.tid != 0 ? kPidfdThread : 0u));
    if (pidfd < 0) {
      if (errno != ESRCH) all_exiting = false, last = errno;
      continue;
    }
    const int copy = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, k.fd, 0));
    const int copy_err = errno;
    close(pidfd);
    if (copy >= 0) return copy;
    // A zombie has no descriptors, nor has a task past PF_EXITING. A live
    // one whose descriptor is gone may have moved it (dup2 and close).
    if (copy_err != ESRCH && !(copy_err == EBADF && IsExiting(id))) all_exiting = false, last = copy_err;
  }
  *err = all_exiting ? ESRCH : last;
  return -1;
}

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
    const std::string tail = fmt::format(":{}", st.st_ino);
    for (const LockLine& lock : LocksOfDescriptor("/proc/self", std::to_string(fd)))
      if (lock.kind == "OFDLCK" && lock.start == probe_offset && lock.file_id.size() > tail.size() &&
          lock.file_id.compare(lock.file_id.size() - tail.size(), tail.size(), tail) == 0)
        id = lock.file_id.substr(0, lock.file_id.size() - tail.size());
  }
  close(fd);  // the probe goes with it
  return id;
}

std::vector<KernelLock> KernelLocksOn(const std::string& dev_id, dev_t dev, ino_t ino, bool flock,
                                      uint64_t shadow_base) {
  const std::string file_id = fmt::format("{}:{}", dev_id, ino);
  std::vector<KernelLock> posix;
  std::map<pid_t, size_t> flock_lines;  // by the process that took each
  for (const LockLine& lock : GrantedLocks(file_id)) {
    if (lock.kind == "FLOCK") ++flock_lines[lock.pid];
    if (lock.kind != "POSIX" || lock.start >= shadow_base) continue;
    // The shim's "to the end" under a lease stops short of the agent's marks.
    posix.push_back(
        KernelLock{lock.pid, -1, lock.write, lock.start, lock.end == shadow_base ? kToEnd : lock.end, 0, {}});
  }
  if (!flock) return posix;
  // A description's flock lock names the process that took it (fdinfo too),
  // which may have exited since (a child keeps the description), or given
  // the description to another: every process is looked at unless each
  // taker's descriptors account for its locks, and nothing was hidden.
  std::vector<KernelLock> held;
  std::map<pid_t, size_t> seen;
  bool hidden = false, all_found = true;
  for (const auto& [pid, lines] : flock_lines)
    all_found = pid > 0 && FlockHolders(pid, dev, ino, file_id, &held, &seen, &hidden) && all_found;
  const bool all_seen = std::all_of(flock_lines.begin(), flock_lines.end(), [&](const auto& taker) {
    auto it = seen.find(taker.first);
    return it != seen.end() && it->second >= taker.second;
  });
  if (all_found && !hidden && all_seen) return held;
  held.clear();
  seen.clear();
  hidden = false;
  EachProcess([&](pid_t pid) {
    FlockHolders(pid, dev, ino, file_id, &held, &seen, &hidden);
    return false;
  });
  // A lock no descriptor the agent could see accounts for, while some were
  // hidden from it, and still there (one released meanwhile is not): held
  // there, not gone, and with no descriptor to copy (fd -1) it cannot be
  // made the cluster's. (Two descriptors of one description count twice,
  // which may hide one lock given to a hidden process.)
  if (hidden)
    for (const LockLine& line : GrantedLocks(file_id)) {
      if (line.kind != "FLOCK") continue;
      if (auto it = seen.find(line.pid); it != seen.end() && it->second > 0) {
        --it->second;
        continue;
      }
      held.push_back(KernelLock{line.pid, -1, line.write, line.start, line.end, 0, {}});
    }
  return held;
}

namespace {

// The path below view of the file (dev, ino) that one of pid's descriptors
// leads to; "" for none (*hidden set when one could not be looked at). A
// program in a pod reaches the view through a detached mount, which the
// kernel names a descriptor in by its cluster name (/cluster/...): such a
// name counts when it leads to the same file in the view here.
std::string NameIn(pid_t pid, dev_t dev, ino_t ino, const std::string& view, bool* hidden) {
  std::string found;
  EachDescriptorOfProcess(
      pid, dev, ino,
      [&](const DescriptorTable& table, const std::string& fd) {
        char link[4096];
        const ssize_t n = readlink(fmt::format("{}/fd/{}", table.proc_dir, fd).c_str(), link, sizeof link - 1);
        if (n <= 0) return false;
        const std::string name(link, static_cast<size_t>(n));
        if (name.size() <= view.size() + 1 || name.compare(0, view.size(), view) != 0 || name[view.size()] != '/') {
          struct stat here;
          if (name.size() < 2 || name[0] != '/' || stat((view + name).c_str(), &here) != 0 || here.st_dev != dev ||
              here.st_ino != ino)
            return false;
          found = name.substr(1);
          return true;
        }
        found = name.substr(view.size() + 1);
        return true;
      },
      hidden);
  return found;
}

// The paths below view of the regular files (dev, inode) among inodes, from
// one walk of the view (symlinks not followed; a file of several names by
// the first met).
std::map<ino_t, std::string> NamesByInode(const std::string& view, dev_t dev, const std::set<ino_t>& inodes) {
  namespace fs = std::filesystem;
  std::map<ino_t, std::string> names;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(view, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end && names.size() < inodes.size(); it.increment(ec)) {
    struct stat st;
    if (lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_dev == dev && inodes.contains(st.st_ino))
      names.try_emplace(st.st_ino, it->path().lexically_relative(view).string());
  }
  return names;
}

}  // namespace

std::vector<std::pair<std::string, bool>> KernelLockedFilesIn(const std::string& view, const std::string& dev_id,
                                                              uint64_t shadow_base) {
  std::vector<std::pair<std::string, bool>> files;
  struct stat root;
  if (dev_id.empty() || stat(view.c_str(), &root) != 0) return files;
  const std::string file_dev = dev_id + ":";
  std::set<std::pair<ino_t, bool>> seen;
  std::set<std::pair<ino_t, bool>> unnamed;  // held where the agent was refused a look
  for (const LockLine& lock : GrantedLocks()) {
    if ((lock.kind != "POSIX" && lock.kind != "FLOCK") || lock.file_id.rfind(file_dev, 0) != 0 ||
        lock.start >= shadow_base)
      continue;
    const ino_t ino = std::strtoull(lock.file_id.c_str() + file_dev.size(), nullptr, 10);
    const bool flock = lock.kind == "FLOCK";
    const pid_t pid = lock.pid;
    if (!seen.insert({ino, flock}).second) continue;
    // Its name, from a descriptor of the process that took it; that one may
    // be gone (flock(1) on a shell's descriptor): then from any that has it.
    // (Once per file: the look at every process finds what another of its
    // lines would.)
    bool hidden = false;
    std::string name = pid > 0 ? NameIn(pid, root.st_dev, ino, view, &hidden) : "";
    if (name.empty())
      EachProcess([&](pid_t other) {
        name = NameIn(other, root.st_dev, ino, view, &hidden);
        return !name.empty();
      });
    if (!name.empty()) files.emplace_back(std::move(name), flock);
    else if (hidden) unnamed.insert({ino, flock});
  }
  // Held, as far as the agent can tell, by descriptors hidden from it: the
  // files are found in the view by their inodes (one walk, only then).
  std::set<ino_t> inodes;
  for (const auto& [ino, flock] : unnamed) inodes.insert(ino);
  if (!inodes.empty()) {
    const std::map<ino_t, std::string> names = NamesByInode(view, root.st_dev, inodes);
    for (const auto& [ino, flock] : unnamed)
      if (auto it = names.find(ino); it != names.end()) files.emplace_back(it->second, flock);
  }
  return files;
}

}  // namespace onebox
