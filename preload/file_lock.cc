// Interposed: flock, lockf, lockf64, and fcntl's lock commands (F_GETLK,
// F_SETLK, F_SETLKW and their F_OFD_ forms, which fd_guard.cc's fcntl sends
// here). On a file in the view a lock is the cluster's: the agent asks the
// file's lock home (nodeagent/locks/node_locks.h), so programs on every node
// exclude each other with the kernel's rules. A file outside the cluster
// the kernel locks alone.
//
// Leases (proto/state_page.h, nodeagent/locks/lease_slots.h): while the
// agent holds one on a file's flock or fcntl locks, a POSIX or flock call
// on it is the kernel's, on the view file, with two looks at the lease's
// slot around it, and no word to the agent; spans stop short of the
// agent's own marks (kLockMarkBase on). A call the kernel cannot answer alone
// (a wait for another program's lock, an OFD lock), or one the lease ended
// under, asks the agent, which ends the lease first; an unlock asked of the
// agent is the kernel's first too, so that the kernel never holds a lock
// the cluster does not.
//
// The kernel's argument checks come first, with its errno values; the span
// is made absolute here (SEEK_CUR, SEEK_END). A POSIX lock also ends when
// the process closes any descriptor of its file: close() and dup2/dup3
// onto one tell the agent, for the files this process locked (a table, so
// that close stays one compare for every other process).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>

#include "preload/link.h"
#include "preload/shim.h"
#include "proto/state_page.h"

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
// The table's entry for the file st names (under locked_mu); nullptr for none.
const LockedFile* RememberedLocked(const struct stat& st) {
  for (const LockedFile& f : locked)
    if (!f.rel.empty() && f.dev == st.st_dev && f.ino == st.st_ino) return &f;
  return nullptr;
}

std::string PosixLockedPathOf(int fd, struct stat* st) {
  if (fstat(fd, st) != 0) return {};
  std::unique_lock lock(locked_mu, std::try_to_lock);
  if (!lock.owns_lock()) return {};
  const LockedFile* f = RememberedLocked(*st);
  return f != nullptr ? f->rel : std::string();
}

// The file at rel is closed by this process: off the table, and (tell) the
// agent hears that its POSIX locks there end.
void EndPosixLocks(const std::string& rel, bool tell = true) {
  {
    std::unique_lock lock(locked_mu, std::try_to_lock);
    if (!lock.owns_lock()) return;
    for (LockedFile& f : locked)
      if (f.rel == rel) {
        f = LockedFile{};
        posix_locked_files.fetch_sub(1, std::memory_order_relaxed);
      }
  }
  if (!tell) return;
  const int saved = errno;
  (void)AskLock(rel.c_str(), -1, kPosix, kClosed, 2, 0, kToEnd, false, nullptr);
  errno = saved;
}

int ToWireType(short type) { return type == F_RDLCK ? 0 : type == F_WRLCK ? 1 : type == F_UNLCK ? 2 : -1; }

// The span of fl on fd made absolute, as the kernel makes it
// (flock_to_posix_lock): [*start, *end), end kToEnd for "to the end". 0 or
// the kernel's errno.
int AbsoluteSpan(int fd, const struct flock* fl, int64_t* start_out, uint64_t* end_out) {
  off_t base = 0;
  if (fl->l_whence == SEEK_CUR) {
    base = lseek(fd, 0, SEEK_CUR);
  } else if (fl->l_whence == SEEK_END) {
    struct stat st;
    base = fstat(fd, &st) == 0 ? st.st_size : -1;
  } else if (fl->l_whence != SEEK_SET) {
    return EINVAL;
  }
  if (base < 0) return errno;
  if (fl->l_start > 0 && base > std::numeric_limits<off_t>::max() - fl->l_start) return EOVERFLOW;
  int64_t start = base + fl->l_start;
  if (start < 0) return EINVAL;
  uint64_t end = kToEnd;
  if (fl->l_len > 0) {
    if (fl->l_len - 1 > std::numeric_limits<off_t>::max() - start) return EOVERFLOW;
    end = static_cast<uint64_t>(start) + static_cast<uint64_t>(fl->l_len);
  } else if (fl->l_len < 0) {
    if (start + fl->l_len < 0) return EINVAL;
    end = static_cast<uint64_t>(start);
    start += fl->l_len;
  }
  *start_out = start;
  *end_out = end;
  return 0;
}

// The kernel's fcntl on [start, end), kept short of the agent's marks.
int KernelFcntl(int fd, int cmd, short type, int64_t start, uint64_t end, struct flock* out = nullptr) {
  struct flock k {};
  k.l_type = type;
  k.l_whence = SEEK_SET;
  k.l_start = static_cast<off_t>(start);
  k.l_len = static_cast<off_t>(std::min(end, kLockMarkBase) - static_cast<uint64_t>(start));
  int r = static_cast<int>(RealSyscall(SYS_fcntl, fd, cmd, &k));
  if (out != nullptr) *out = k;
  return r;
}

// Whether this node's agent holds a lease on fd's file for its flock (or
// fcntl) locks now: *lease set for the second look.
struct LeaseLook {
  const LockLeases* leases = nullptr;
  unsigned slot = 0;
  uint64_t seq = 0;
  bool Still() const { return LockLeaseStill(leases, slot, seq); }
};
bool Leased(int fd, bool flock, LeaseLook* look, struct stat* st) {
  look->leases = LockLeasesNow();
  if (look->leases == nullptr || look->leases->held.load(std::memory_order_relaxed) == 0) return false;
  if (fstat(fd, st) != 0) return false;
  look->seq = LockLeaseBegin(look->leases, st->st_dev, st->st_ino, flock, &look->slot);
  return look->seq != 0;
}

// Never waits (a signal handler may lock): a busy table says no, and the
// file is looked for again, waiting, by RememberPosixLocked.
bool PosixRemembered(const struct stat& st) {
  std::unique_lock lock(locked_mu, std::try_to_lock);
  return lock.owns_lock() && RememberedLocked(st) != nullptr;
}

// What a call tried under a lease came to.
enum class UnderLease {
  kNotLeased,  // nothing done: ask the agent
  kDone,       // the kernel's answer is the call's
  kAsk,        // ask the agent without a lease (the kernel's lock, if taken, stays until it answers)
};

// fcntl's POSIX commands under a lease. *took: the kernel granted a lock
// that the agent must now grant too (or the caller gives it back).
UnderLease FcntlUnderLease(int fd, int cmd, struct flock* fl, int* result, bool* took) {
  *took = false;
  LeaseLook look;
  struct stat st;
  if (!Leased(fd, false, &look, &st)) return UnderLease::kNotLeased;
  const int type = ToWireType(fl->l_type);
  int64_t start = 0;
  uint64_t end = 0;
  // The kernel's errors are the agent's too: they are asked of it.
  if (type < 0 || AbsoluteSpan(fd, fl, &start, &end) != 0 || static_cast<uint64_t>(start) >= kLockMarkBase)
    return UnderLease::kNotLeased;
  if (cmd == F_GETLK) {
    if (type == 2) return UnderLease::kNotLeased;  // EINVAL, the agent's way
    struct flock k;
    if (KernelFcntl(fd, F_GETLK, fl->l_type, start, end, &k) != 0) return UnderLease::kNotLeased;
    if (!look.Still()) return UnderLease::kNotLeased;
    fl->l_type = k.l_type;
    if (k.l_type != F_UNLCK) {
      fl->l_whence = SEEK_SET;
      fl->l_start = k.l_start;
      fl->l_len = static_cast<uint64_t>(k.l_start) + static_cast<uint64_t>(k.l_len) == kLockMarkBase ? 0 : k.l_len;
      fl->l_pid = k.l_pid;
    }
    *result = 0;
    return UnderLease::kDone;
  }
  if (KernelFcntl(fd, F_SETLK, fl->l_type, start, end) != 0) {
    if ((errno == EAGAIN || errno == EACCES) && cmd == F_SETLKW) return UnderLease::kAsk;  // a wait: the agent's
    *result = -1;  // a conflict with another program here, or the kernel's refusal
    return UnderLease::kDone;
  }
  if (look.Still()) {
    if (type != 2 && InOwnerProcess() && !PosixRemembered(st)) {  // for close() (the lease may end first)
      char real[kMaxPathBytes];
      if (const char* rel = LockPathOf(fd, real, sizeof real)) RememberPosixLocked(fd, rel);
    }
    *result = 0;
    return UnderLease::kDone;
  }
  *took = type != 2;
  return UnderLease::kAsk;  // the lease ended under the call: the agent may not know of it
}

}  // namespace

int ClusterFcntlLock(int fd, int cmd, void* arg, bool* handled) {
  *handled = false;
  auto* fl = static_cast<struct flock*>(arg);
  const bool ofd = cmd == F_OFD_GETLK || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW;
  bool lease_ok = !ofd, took = false;
  if (!ofd && fl != nullptr && MayRead(fl)) {
    int result = 0;
    switch (FcntlUnderLease(fd, cmd, fl, &result, &took)) {
      case UnderLease::kDone: *handled = true; return result;
      case UnderLease::kAsk: lease_ok = false; break;
      case UnderLease::kNotLeased: break;
    }
  }
  char real[kMaxPathBytes];
  const char* rel = LockPathOf(fd, real, sizeof real);
  if (rel == nullptr) return 0;
  *handled = true;
  if (fl == nullptr || !MayRead(fl)) return Fail(EFAULT);
  const bool test = cmd == F_GETLK || cmd == F_OFD_GETLK;
  const int type = ToWireType(fl->l_type);
  if (type < 0 || (test && type == 2) || (ofd && fl->l_pid != 0)) return Fail(EINVAL);
  const int mode = fcntl(fd, F_GETFL);
  if (mode < 0) return -1;
  if ((mode & O_PATH) != 0) return Fail(EBADF);
  if (!test && ((type == 0 && (mode & O_ACCMODE) == O_WRONLY) || (type == 1 && (mode & O_ACCMODE) == O_RDONLY)))
    return Fail(EBADF);
  int64_t start = 0;
  uint64_t end = kToEnd;
  if (int err = AbsoluteSpan(fd, fl, &start, &end); err != 0) return Fail(err);
  // An unlock is the kernel's first (a lease may have left a lock there).
  if (!ofd && !test && type == 2 && static_cast<uint64_t>(start) < kLockMarkBase)
    (void)KernelFcntl(fd, F_SETLK, F_UNLCK, start, end);
  const bool wait = cmd == F_SETLKW || cmd == F_OFD_SETLKW;
  const int ask_cmd = test ? kTest : wait && type != 2 ? kSetWait : kSet;
  LockAnswer answer;
  for (;;) {
    const int err = AskLock(rel, fd, ofd ? kOfd : kPosix, ask_cmd, type, static_cast<uint64_t>(start), end, lease_ok,
                            &answer);
    if (err != 0) {
      if (took) (void)KernelFcntl(fd, F_SETLK, F_UNLCK, start, end);  // given back: not the cluster's
      return Fail(err);
    }
    if (!answer.leased) break;
    // The agent holds a lease on the file now: the kernel's call.
    lease_ok = false;
    EnsureStatePage();
    int result = 0;
    switch (FcntlUnderLease(fd, cmd, fl, &result, &took)) {
      case UnderLease::kDone: return result;
      case UnderLease::kAsk:
      case UnderLease::kNotLeased: break;  // (no slot seen: no page, a stale beat) the agent, without a lease
    }
  }
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
  struct stat st;
  std::string rel = InOwnerProcess() ? PosixLockedPathOf(fd, &st) : std::string();
  int r = real_close(fd);
  if (!rel.empty()) {
    // Under a lease (looked at after the close) the kernel ended them, and
    // the agent holds none of them.
    unsigned slot;
    std::atomic_thread_fence(std::memory_order_seq_cst);  // the close before the look (as LockLeaseStill)
    EndPosixLocks(rel, /*tell=*/LockLeaseBegin(LockLeasesNow(), st.st_dev, st.st_ino, false, &slot) == 0);
  }
  return r;
}

std::string PosixLocksEndOnReplace(int newfd) {
  if (posix_locked_files.load(std::memory_order_relaxed) == 0 || !InOwnerProcess()) return {};
  struct stat st;
  return PosixLockedPathOf(newfd, &st);
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
  const bool nonblocking = (operation & LOCK_NB) != 0;
  const int op = operation & ~LOCK_NB;
  const int type = op == LOCK_SH ? 0 : op == LOCK_EX ? 1 : op == LOCK_UN ? 2 : -1;
  // Under a lease: the kernel's, never waiting (a wait is the agent's).
  auto under_lease = [&](int* result) {
    LeaseLook look;
    struct stat st;
    if (type < 0 || !Leased(fd, true, &look, &st)) return UnderLease::kNotLeased;
    if (real_flock(fd, op | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK && !nonblocking) return UnderLease::kAsk;
      *result = -1;
      return UnderLease::kDone;
    }
    if (look.Still()) {
      *result = 0;
      return UnderLease::kDone;
    }
    return UnderLease::kAsk;  // the lease ended under the call: the agent may not know of it
  };
  int result = 0;
  const UnderLease first = under_lease(&result);
  if (first == UnderLease::kDone) return result;
  bool lease_ok = first == UnderLease::kNotLeased;
  char real[kMaxPathBytes];
  const char* rel = LockPathOf(fd, real, sizeof real);
  if (rel == nullptr) return real_flock(fd, operation);
  if (type < 0) return Fail(EINVAL);
  const int mode = fcntl(fd, F_GETFL);
  if (mode < 0) return -1;
  if ((mode & O_PATH) != 0) return Fail(EBADF);
  for (;;) {
    // The kernel's lock of this description goes first: a lease may have
    // left one there (or the call above took one as its lease ended),
    // which an unlock ends, and which a lock the agent grants (or refuses:
    // a conversion gives the old lock up) replaces.
    real_flock(fd, LOCK_UN);
    LockAnswer answer;
    const int err = AskLock(rel, fd, kFlock, nonblocking || type == 2 ? kSet : kSetWait, type, 0, kToEnd, lease_ok,
                            &answer);
    if (err != 0) return Fail(err);
    if (!answer.leased) return 0;
    lease_ok = false;  // the agent holds a lease on the file now: the kernel's call
    EnsureStatePage();
    if (under_lease(&result) == UnderLease::kDone) return result;
  }
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
