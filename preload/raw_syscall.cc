// Interposed: syscall(2), for programs that make path-taking system calls
// directly (syscall(SYS_openat, ...)). The path-taking numbers are routed to
// the shim's own functions, which leave non-cluster paths to libc as usual;
// every other number goes to the real syscall() untouched.
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>

#include "preload/shim.h"

using namespace onebox::shim;

namespace onebox::shim {
long RealSyscall6(long number, long a, long b, long c, long d, long e) {
  ONEBOX_REAL(syscall);
  return real_syscall(number, a, b, c, d, e);
}
}  // namespace onebox::shim

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

long syscall(long number, ...) {
  va_list ap;
  va_start(ap, number);
  long a[6];
  for (long& x : a) x = va_arg(ap, long);
  va_end(ap);
  auto s = [&](int i) { return reinterpret_cast<const char*>(a[i]); };
  auto i = [&](int k) { return static_cast<int>(a[k]); };
  switch (number) {
    case SYS_open: return open(s(0), i(1), static_cast<mode_t>(a[2]));
    case SYS_openat: return openat(i(0), s(1), i(2), static_cast<mode_t>(a[3]));
    case SYS_creat: return creat(s(0), static_cast<mode_t>(a[1]));
    case SYS_stat: return stat(s(0), reinterpret_cast<struct stat*>(a[1]));
    case SYS_lstat: return lstat(s(0), reinterpret_cast<struct stat*>(a[1]));
    case SYS_newfstatat: return fstatat(i(0), s(1), reinterpret_cast<struct stat*>(a[2]), i(3));
    case SYS_statx:
      return statx(i(0), s(1), i(2), static_cast<unsigned>(a[3]), reinterpret_cast<struct statx*>(a[4]));
    case SYS_access: return access(s(0), i(1));
    case SYS_faccessat: return faccessat(i(0), s(1), i(2), 0);
    case SYS_faccessat2: return faccessat(i(0), s(1), i(2), i(3));
    case SYS_readlink: return readlink(s(0), reinterpret_cast<char*>(a[1]), static_cast<size_t>(a[2]));
    case SYS_readlinkat: return readlinkat(i(0), s(1), reinterpret_cast<char*>(a[2]), static_cast<size_t>(a[3]));
    case SYS_mkdir: return mkdir(s(0), static_cast<mode_t>(a[1]));
    case SYS_mkdirat: return mkdirat(i(0), s(1), static_cast<mode_t>(a[2]));
    case SYS_rmdir: return rmdir(s(0));
    case SYS_unlink: return unlink(s(0));
    case SYS_unlinkat: return unlinkat(i(0), s(1), i(2));
    case SYS_rename: return rename(s(0), s(1));
    case SYS_renameat: return renameat(i(0), s(1), i(2), s(3));
    case SYS_renameat2: return renameat2(i(0), s(1), i(2), s(3), static_cast<unsigned>(a[4]));
    case SYS_link: return link(s(0), s(1));
    case SYS_linkat: return linkat(i(0), s(1), i(2), s(3), i(4));
    case SYS_symlink: return symlink(s(0), s(1));
    case SYS_symlinkat: return symlinkat(s(0), i(1), s(2));
    case SYS_chmod: return chmod(s(0), static_cast<mode_t>(a[1]));
    case SYS_fchmodat: return fchmodat(i(0), s(1), static_cast<mode_t>(a[2]), 0);
    case SYS_chown: return chown(s(0), static_cast<uid_t>(a[1]), static_cast<gid_t>(a[2]));
    case SYS_lchown: return lchown(s(0), static_cast<uid_t>(a[1]), static_cast<gid_t>(a[2]));
    case SYS_fchownat: return fchownat(i(0), s(1), static_cast<uid_t>(a[2]), static_cast<gid_t>(a[3]), i(4));
    case SYS_truncate: return truncate(s(0), static_cast<off_t>(a[1]));
    case SYS_chdir: return chdir(s(0));
    case SYS_fchdir: return fchdir(i(0));
    case SYS_utimensat:
      return utimensat(i(0), s(1), reinterpret_cast<const struct timespec*>(a[2]), i(3));
    case SYS_mknod: return mknod(s(0), static_cast<mode_t>(a[1]), static_cast<dev_t>(a[2]));
    case SYS_execve:
      return execve(s(0), reinterpret_cast<char* const*>(a[1]), reinterpret_cast<char* const*>(a[2]));
    case SYS_close: return close(i(0));
    case SYS_getcwd: {
      // The kernel's getcwd returns the length (with the NUL), not the buffer.
      char* buf = reinterpret_cast<char*>(a[0]);
      if (getcwd(buf, static_cast<size_t>(a[1])) == nullptr) return -1;
      long n = 0;
      while (buf[n] != '\0') ++n;
      return n + 1;
    }
    default: {
      ONEBOX_REAL(syscall);
      return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    }
  }
}

#pragma GCC visibility pop
}  // extern "C"
