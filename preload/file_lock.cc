// Interposed: flock, lockf, lockf64, and fcntl's lock commands (F_GETLK,
// F_SETLK, F_SETLKW and their F_OFD_ forms, which fd_guard.cc's fcntl sends
// here). On a file in the view a lock is the cluster's: the agent asks the
// file's lock home (nodeagent/locks/node_locks.h), so programs on every node
// exclude each other with the kernel's rules. A file outside the cluster
// the kernel locks alone.
//
// The kernel's argument checks come first, with its errno values; the span
// is made absolute here (SEEK_CUR, SEEK_END). A POSIX lock also ends when
// the process closes any descriptor of its file: close() and dup2/dup3
// onto one tell the agent, for the files this process locked (a table, so
// that close stays one compare for every other process).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>

#include "preload/link.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace onebox::shim {

std::atomic<int> posix_locked_files{0};

namespace {

constexpr uint64_t kToEnd = std::numeric_limits<uint64_t>::max();
// ShimLockRequest's Kind and Cmd (proto/onebox/v1/shim.proto).
enum Kind { kPosix = 0, kOfd = 1, kFlock = 2 };
enum Cmd { kSet = 0, kSetWait = 1, kTest = 2, kClosed = 3 };

// The files this process holds cluster POSIX locks on: what close() looks
// for. Beyond kTracked files a lock ends at the process's exit only.
constexpr size_t kTracked = 64;
struct LockedFile {
  dev_t dev = 0;
  ino_t ino = 0;
  std::string rel;
};
std::mutex locked_mu;
LockedFile locked[kTracked];  // rel empty: free

// fd's path below the view root when its locks are the cluster's: those of
// every file in the view, always (a lock taken from the kernel while the
// agent saw no other member would not exclude one taken through the agent
// once it did).
const char* LockPathOf(int fd, char* real, size_t cap) { return ViewRelPathOf(fd, real, cap, /*deleted_ok=*/true); }

void RememberPosixLocked(int fd, const char* rel) {
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  std::lock_guard lock(locked_mu);
  LockedFile* free_slot = nullptr;
  for (LockedFile& f : locked) {
    if (!f.rel.empty() && f.dev == st.st_dev && f.ino == st.st_ino) return;
    if (f.rel.empty() && free_slot == nullptr) free_slot = &f;
  }
  if (free_slot == nullptr) return;
  *free_slot = LockedFile{st.st_dev, st.st_ino, rel};
  posix_locked_files.fetch_add(1, std::memory_order_relaxed);
}

// The path of a remembered file fd is a descriptor of ("" for none). Never
// waits: close() may run in a signal handler that interrupted a holder of
// locked_mu, and then the notice is left out (the locks end at exit).
std::string PosixLockedPathOf(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return {};
  std::unique_lock lock(locked_mu, std::try_to_lock);
  if (!lock.owns_lock()) return {};
  for (const LockedFile& f : locked)
    if (!f.rel.empty() && f.dev == st.st_dev && f.ino == st.st_ino) return f.rel;
  return {};
}

// The file at rel is closed by this process: off the table, and the agent
// hears that its POSIX locks there end.
void EndPosixLocks(const std::string& rel) {
  {
    std::unique_lock lock(locked_mu, std::try_to_lock);
    if (!lock.owns_lock()) return;
    for (LockedFile& f : locked)
      if (f.rel == rel) {
        f = LockedFile{};
        posix_locked_files.fetch_sub(1, std::memory_order_relaxed);
      }
  }
  const int saved = errno;
  (void)AskLock(rel.c_str(), -1, kPosix, kClosed, 2, 0, kToEnd, nullptr);
  errno = saved;
}

int ToWireType(short type) { return type == F_RDLCK ? 0 : type == F_WRLCK ? 1 : type == F_UNLCK ? 2 : -1; }

}  // namespace

int ClusterFcntlLock(int fd, int cmd, void* arg, bool* handled) {
  *handled = false;
  char real[kMaxPathBytes];
  const char* rel = LockPathOf(fd, real, sizeof real);
  if (rel == nullptr) return 0;
  *handled = true;
  auto* fl = static_cast<struct flock*>(arg);
  if (fl == nullptr || !MayRead(fl)) return Fail(EFAULT);
  const bool ofd = cmd == F_OFD_GETLK || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW;
  const bool test = cmd == F_GETLK || cmd == F_OFD_GETLK;
  const int type = ToWireType(fl->l_type);
  if (type < 0 || (test && type == 2) || (ofd && fl->l_pid != 0)) return Fail(EINVAL);
  const int mode = fcntl(fd, F_GETFL);
  if (mode < 0) return -1;
  if ((mode & O_PATH) != 0) return Fail(EBADF);
  if (!test && ((type == 0 && (mode & O_ACCMODE) == O_WRONLY) || (type == 1 && (mode & O_ACCMODE) == O_RDONLY)))
    return Fail(EBADF);
  // The span, absolute, as the kernel makes it (flock_to_posix_lock).
  off_t base = 0;
  if (fl->l_whence == SEEK_CUR) {
    base = lseek(fd, 0, SEEK_CUR);
  } else if (fl->l_whence == SEEK_END) {
    struct stat st;
    base = fstat(fd, &st) == 0 ? st.st_size : -1;
  } else if (fl->l_whence != SEEK_SET) {
    return Fail(EINVAL);
  }
  if (base < 0) return -1;
  if (fl->l_start > 0 && base > std::numeric_limits<off_t>::max() - fl->l_start) return Fail(EOVERFLOW);
  int64_t start = base + fl->l_start;
  if (start < 0) return Fail(EINVAL);
  uint64_t end = kToEnd;
  if (fl->l_len > 0) {
    if (fl->l_len - 1 > std::numeric_limits<off_t>::max() - start) return Fail(EOVERFLOW);
    end = static_cast<uint64_t>(start) + static_cast<uint64_t>(fl->l_len);
  } else if (fl->l_len < 0) {
    if (start + fl->l_len < 0) return Fail(EINVAL);
    end = static_cast<uint64_t>(start);
    start += fl->l_len;
  }
  const bool wait = cmd == F_SETLKW || cmd == F_OFD_SETLKW;
  LockAnswer answer;
  const int err = AskLock(rel, fd, ofd ? kOfd : kPosix, test ? kTest : wait && type != 2 ? kSetWait : kSet, type,
                          static_cast<uint64_t>(start), end, &answer);
  if (err != 0) return Fail(err);
  if (test) {
    fl->l_type = answer.type == 0 ? F_RDLCK : answer.type == 1 ? F_WRLCK : F_UNLCK;
    if (answer.type != 2) {
      fl->l_whence = SEEK_SET;
      fl->l_start = static_cast<off_t>(answer.start);
      fl->l_len = answer.end == kToEnd ? 0 : static_cast<off_t>(answer.end - answer.start);
      fl->l_pid = static_cast<pid_t>(answer.pid);
    }
    return 0;
  }
  if (!ofd && type != 2 && InOwnerProcess()) RememberPosixLocked(fd, rel);
  return 0;
}

int CloseEndingPosixLocks(int fd, int (*real_close)(int)) {
  std::string rel = InOwnerProcess() ? PosixLockedPathOf(fd) : std::string();
  int r = real_close(fd);
  if (!rel.empty()) EndPosixLocks(rel);
  return r;
}

std::string PosixLocksEndOnReplace(int newfd) {
  if (posix_locked_files.load(std::memory_order_relaxed) == 0 || !InOwnerProcess()) return {};
  return PosixLockedPathOf(newfd);
}

void PosixLocksEnded(const std::string& rel) {
  if (!rel.empty()) EndPosixLocks(rel);
}

void ForgetPosixLocksInChild() {
  new (&locked_mu) std::mutex();  // another thread of the parent may have held it
  for (LockedFile& f : locked) f = LockedFile{};
  posix_locked_files.store(0, std::memory_order_relaxed);
}

}  // namespace onebox::shim

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

int flock(int fd, int operation) {
  ONEBOX_REAL(flock);
  char real[kMaxPathBytes];
  const char* rel = LockPathOf(fd, real, sizeof real);
  if (rel == nullptr) return real_flock(fd, operation);
  const bool nonblocking = (operation & LOCK_NB) != 0;
  const int op = operation & ~LOCK_NB;
  const int type = op == LOCK_SH ? 0 : op == LOCK_EX ? 1 : op == LOCK_UN ? 2 : -1;
  if (type < 0) return Fail(EINVAL);
  const int mode = fcntl(fd, F_GETFL);
  if (mode < 0) return -1;
  if ((mode & O_PATH) != 0) return Fail(EBADF);
  const int err = AskLock(rel, fd, kFlock, nonblocking || type == 2 ? kSet : kSetWait, type, 0, kToEnd, nullptr);
  return err == 0 ? 0 : Fail(err);
}

// glibc's lockf, over the fcntl above: F_LOCK and F_TLOCK take a write lock
// of len bytes from the offset (len 0: to the end), F_ULOCK unlocks them,
// F_TEST says whether another process holds a lock there (EACCES).
static int ClusterLockf(int fd, int cmd, off_t len, bool* handled) {
  struct flock fl {};
  fl.l_whence = SEEK_CUR;
  fl.l_start = 0;
  fl.l_len = len;
  int fcntl_cmd;
  switch (cmd) {
    case F_TEST: {
      fl.l_type = F_RDLCK;
      int r = ClusterFcntlLock(fd, F_GETLK, &fl, handled);
      if (!*handled || r != 0) return r;
      if (fl.l_type == F_UNLCK || fl.l_pid == getpid()) return 0;
      return Fail(EACCES);
    }
    case F_ULOCK: fl.l_type = F_UNLCK; fcntl_cmd = F_SETLK; break;
    case F_LOCK: fl.l_type = F_WRLCK; fcntl_cmd = F_SETLKW; break;
    case F_TLOCK: fl.l_type = F_WRLCK; fcntl_cmd = F_SETLK; break;
    default: *handled = true; return Fail(EINVAL);
  }
  return ClusterFcntlLock(fd, fcntl_cmd, &fl, handled);
}

int lockf(int fd, int cmd, off_t len) {
  bool handled = false;
  int r = ClusterLockf(fd, cmd, len, &handled);
  if (handled) return r;
  ONEBOX_REAL(lockf);
  return real_lockf(fd, cmd, len);
}

int lockf64(int fd, int cmd, off64_t len) {
  bool handled = false;
  int r = ClusterLockf(fd, cmd, static_cast<off_t>(len), &handled);
  if (handled) return r;
  ONEBOX_REAL(lockf64);
  return real_lockf64(fd, cmd, len);
}

#pragma GCC visibility pop
}  // extern "C"
