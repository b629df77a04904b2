// Interposed: close, close_range, closefrom, dup, dup2, dup3, fcntl and
// fcntl64 (whose lock commands, and close's end of POSIX locks, are
// file_lock.cc's). The shim keeps two descriptors of its own (the agent socket and
// the view root, at high numbers, close-on-exec). A program that closes every
// descriptor, or dups over one of ours, takes it from us: we let go of it and
// reconnect on the next cluster call. A copy of a descriptor takes over its
// O_SYNC state (file_write.cc).
#include <fcntl.h>
#include <linux/close_range.h>
#include <unistd.h>

#include "preload/link.h"
#include "preload/shim.h"

using namespace onebox::shim;

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

// A vfork child shares our memory (not our descriptors): the bookkeeping
// below is the parent's, and the child must leave it alone. getpid() is only
// asked when an fd is one of the shim's, so close() stays cheap.
static inline bool Ours(int fd) { return IsShimFd(fd) && InOwnerProcess(); }

// close() of one of the shim's descriptors, before the constructor ran, or
// in a process holding cluster POSIX locks (file_lock.cc).
__attribute__((noinline, cold)) static int CloseSlow(int fd) {
  if (Ours(fd)) {
    ShimFdLost(fd);  // closes it
    return 0;
  }
  ONEBOX_REAL(close);
  if (posix_locked_files.load(std::memory_order_relaxed) != 0) return CloseEndingPosixLocks(fd, real_close);
  return real_close(fd);
}

// Any other fd: three compares and a jump to libc's close. The fd's mark as a
// view fd (if any) stays: a number reused for a native file is recognized on
// first use (its real path is not in the view), and a vfork child, sharing
// the marks with its parent, must not clear them.
int close(int fd) {
  auto* real = hot_path.close.load(std::memory_order_relaxed);
  if (__builtin_expect(!IsShimFd(fd) & (real != nullptr) & (posix_locked_files.load(std::memory_order_relaxed) == 0), 1))
    return real(fd);
  return CloseSlow(fd);
}

// Programs that close "every other descriptor" (daemons, Python's closerange).
int close_range(unsigned int first, unsigned int last, int flags) {
  if (!(flags & CLOSE_RANGE_CLOEXEC) && InOwnerProcess()) {  // ours are close-on-exec already
    for (int fd : ShimFds())
      if (fd >= 0 && static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) ShimFdLost(fd);
    ForgetFds(first, last);
  }
  ONEBOX_REAL(close_range);
  return real_close_range(first, last, flags);
}

void closefrom(int lowfd) {
  if (InOwnerProcess()) {
    for (int fd : ShimFds())
      if (fd >= lowfd) ShimFdLost(fd);
    ForgetFds(static_cast<unsigned>(lowfd < 0 ? 0 : lowfd), ~0u);
  }
  ONEBOX_REAL(closefrom);
  real_closefrom(lowfd);
}

// The copies below share the open file, and with it O_SYNC: they take over
// oldfd's O_SYNC state (file_write.cc; no system call unless it changes).
// Their mark as view fds does not follow: a tracked oldfd's copy resolves
// natively as a dirfd (documented).
int dup(int oldfd) {
  ONEBOX_REAL(dup);
  int fd = real_dup(oldfd);
  if (fd >= 0) CopySyncState(oldfd, fd);
  return fd;
}

int dup2(int oldfd, int newfd) {
  if (oldfd != newfd && Ours(newfd)) ShimFdLost(newfd);
  const std::string locked = oldfd != newfd ? PosixLocksEndOnReplace(newfd) : std::string();
  ONEBOX_REAL(dup2);
  int r = real_dup2(oldfd, newfd);
  if (r >= 0) PosixLocksEnded(locked);
  if (r >= 0 && oldfd != newfd) {
    ForgetFd(newfd);
    CopySyncState(oldfd, newfd);
  }
  return r;
}

int dup3(int oldfd, int newfd, int flags) {
  if (oldfd != newfd && Ours(newfd)) ShimFdLost(newfd);
  const std::string locked = oldfd != newfd ? PosixLocksEndOnReplace(newfd) : std::string();
  ONEBOX_REAL(dup3);
  int r = real_dup3(oldfd, newfd, flags);
  if (r >= 0) PosixLocksEnded(locked);
  if (r >= 0) {
    ForgetFd(newfd);
    CopySyncState(oldfd, newfd);
  }
  return r;
}

// fcntl and fcntl64 (what programs built with _FILE_OFFSET_BITS=64 call):
// F_DUPFD and F_DUPFD_CLOEXEC copy as dup does; the lock commands on a
// cluster file are the cluster's (file_lock.cc); any other command goes
// straight to libc. The optional argument is a named parameter, as for open
// (file_open.cc: the x86-64 calling convention passes it in the same
// register; libc reads it as a pointer-sized word, and so is it passed on).
__attribute__((noinline)) static int FcntlSlow(int fd, int cmd, void* arg, bool is64) {
  ONEBOX_REAL(fcntl);
  ONEBOX_REAL(fcntl64);
  if (IsLockCommand(cmd)) {
    bool handled = false;
    int r = ClusterFcntlLock(fd, cmd, arg, &handled);
    if (handled) return r;
  }
  int r = is64 ? real_fcntl64(fd, cmd, arg) : real_fcntl(fd, cmd, arg);
  if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) CopySyncState(fd, r);
  return r;
}

int OneboxFcntl(int fd, int cmd, void* arg) __asm__("fcntl");
int OneboxFcntl64(int fd, int cmd, void* arg) __asm__("fcntl64");
// Each is libc's call with the argument named (libc_decls.h).
static_assert(std::is_same_v<decltype(OneboxFcntl), WithNamedArg<&::fcntl, void*>>);
static_assert(std::is_same_v<decltype(OneboxFcntl64), WithNamedArg<&::fcntl64, void*>>);

int OneboxFcntl(int fd, int cmd, void* arg) {
  auto* real = hot_path.fcntl.load(std::memory_order_relaxed);
  if (__builtin_expect((cmd != F_DUPFD) & (cmd != F_DUPFD_CLOEXEC) & !IsLockCommand(cmd) & (real != nullptr), 1))
    return real(fd, cmd, arg);
  return FcntlSlow(fd, cmd, arg, false);
}

int OneboxFcntl64(int fd, int cmd, void* arg) {
  auto* real = hot_path.fcntl64.load(std::memory_order_relaxed);
  if (__builtin_expect((cmd != F_DUPFD) & (cmd != F_DUPFD_CLOEXEC) & !IsLockCommand(cmd) & (real != nullptr), 1))
    return real(fd, cmd, arg);
  return FcntlSlow(fd, cmd, arg, true);
}

#pragma GCC visibility pop
}  // extern "C"
