// Interposed: the write family (write, pwrite, writev, pwritev and their 64
// and v2 variants), for one purpose: a cluster file opened with O_SYNC or
// O_DSYNC makes every write a durability point, as fsync() is. After the
// kernel's synchronous write, the agent records the file with a synced store
// write and replicates it to its write quorum, and only then does the write
// return; when the quorum cannot be had it returns -1 with EIO (ENOTCONN
// without an agent; the bytes are written here, as with a failed fsync).
// Every other write pays one load of a bit (was this fd opened O_SYNC in the
// view?). Not marked, so published at close or fsync like any other cluster
// file: a duplicate made with dup or fcntl(F_DUPFD), an fd inherited across
// exec, and writes made durable by pwritev2's RWF_DSYNC on an ordinary fd.
// A write on a marked fd from a signal handler runs the publish, which is not
// async-signal-safe (as fsync under the shim is not).
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "preload/link.h"
#include "preload/shim.h"

using namespace onebox::shim;

namespace {

// n bytes went to fd, which was marked O_SYNC: publish, or say why not.
__attribute__((noinline)) ssize_t AfterSyncWrite(int fd, ssize_t n) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || !(flags & O_DSYNC)) {  // the number now names another file
    ForgetSyncMark(fd);
    return n;
  }
  bool in_view = false;
  if (PublishIfInView(fd, &in_view) != 0) return -1;
  if (!in_view) ForgetSyncMark(fd);  // another O_SYNC file, a native one, took the number
  return n;
}

inline ssize_t Wrote(int fd, ssize_t n) {
  if (__builtin_expect(n > 0 && IsSyncMarked(fd), 0)) return AfterSyncWrite(fd, n);
  return n;
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
  return Wrote(fd, real_pwritev2(fd, iov, iovcnt, offset, flags));
}

ssize_t pwritev64v2(int fd, const struct iovec* iov, int iovcnt, off64_t offset, int flags) {
  ONEBOX_REAL(pwritev64v2);
  return Wrote(fd, real_pwritev64v2(fd, iov, iovcnt, offset, flags));
}

#pragma GCC visibility pop
}  // extern "C"
