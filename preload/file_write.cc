// Interposed: the write family (write, pwrite, writev, pwritev and their 64
// and v2 variants), for one purpose: a cluster file opened with O_SYNC or
// O_DSYNC makes every write a durability point, as fsync() is. After the
// kernel's synchronous write, the agent records the file with a synced store
// write and replicates it to its write quorum, and only then does the write
// return; when the quorum cannot be had it returns -1 with EIO (ENOTCONN
// without an agent; the bytes are written here, as with a failed fsync).
// O_SYNC belongs to the open file: copies of the fd (dup, dup2, dup3,
// fcntl(F_DUPFD*): fd_guard.cc copy the mark) and fds inherited across exec
// are covered too. So is a pwritev2 with RWF_DSYNC or RWF_SYNC, for that call.
//
// What a write costs besides the kernel's: one bit test on an fd whose state
// the shim knows (it opened or copied it: SyncState in shim.h). An fd it has
// not seen made since the program started (inherited across exec, or opened
// natively) is looked at on its first write, once: fcntl(F_GETFL) and, if the
// state changes, a getpid (a vfork child must not change its parent's).
// A write on a marked fd from a signal handler runs the publish, which is not
// async-signal-safe (as fsync under the shim is not).
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "preload/link.h"
#include "preload/shim.h"

using namespace onebox::shim;

namespace {

// n bytes went to fd, marked O_SYNC or not known yet: publish if it is an
// O_SYNC file in the view, and settle its state.
__attribute__((noinline)) ssize_t AfterWrite(int fd, ssize_t n) {
  int saved = errno;
  long flags = RealSyscall(SYS_fcntl, fd, F_GETFL);
  if (flags < 0 || !(flags & O_DSYNC)) {  // not O_SYNC (or the number now names another file)
    ForgetSyncMark(fd);
    errno = saved;
    return n;
  }
  bool in_view = false;
  int r = PublishIfInView(fd, &in_view);
  // Not in the view: another O_SYNC file, a native one, has the number.
  SetSyncState(fd, in_view ? SyncState::kSync : SyncState::kQuiet);
  if (r != 0) return -1;
  errno = saved;
  return n;
}

inline ssize_t Wrote(int fd, ssize_t n) {
  if (__builtin_expect(n > 0 && !WriteIsQuiet(fd), 0)) return AfterWrite(fd, n);
  return n;
}

// pwritev2 with RWF_DSYNC or RWF_SYNC: this write is a durability point,
// whatever the fd's flags (an fd outside the view costs a readlink, as fsync).
__attribute__((noinline)) ssize_t AfterSyncFlagWrite(int fd, ssize_t n) {
  int saved = errno;
  if (PublishIfInView(fd) != 0) return -1;
  errno = saved;
  return n;
}

inline ssize_t WroteV2(int fd, ssize_t n, int flags) {
  if (__builtin_expect(n > 0 && (flags & (RWF_DSYNC | RWF_SYNC)) != 0, 0)) return AfterSyncFlagWrite(fd, n);
  return Wrote(fd, n);
}

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

ssize_t write(int fd, const void* buf, size_t count) {
  ONEBOX_REAL(write);
  return Wrote(fd, real_write(fd, buf, count));
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  ONEBOX_REAL(pwrite);
  return Wrote(fd, real_pwrite(fd, buf, count, offset));
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  ONEBOX_REAL(pwrite64);
  return Wrote(fd, real_pwrite64(fd, buf, count, offset));
}

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  ONEBOX_REAL(writev);
  return Wrote(fd, real_writev(fd, iov, iovcnt));
}

ssize_t pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  ONEBOX_REAL(pwritev);
  return Wrote(fd, real_pwritev(fd, iov, iovcnt, offset));
}

ssize_t pwritev64(int fd, const struct iovec* iov, int iovcnt, off64_t offset) {
  ONEBOX_REAL(pwritev64);
  return Wrote(fd, real_pwritev64(fd, iov, iovcnt, offset));
}

ssize_t pwritev2(int fd, const struct iovec* iov, int iovcnt, off_t offset, int flags) {
  ONEBOX_REAL(pwritev2);
  return WroteV2(fd, real_pwritev2(fd, iov, iovcnt, offset, flags), flags);
}

ssize_t pwritev64v2(int fd, const struct iovec* iov, int iovcnt, off64_t offset, int flags) {
  ONEBOX_REAL(pwritev64v2);
  return WroteV2(fd, real_pwritev64v2(fd, iov, iovcnt, offset, flags), flags);
}

#pragma GCC visibility pop
}  // extern "C"
