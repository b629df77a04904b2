// Interposed: the stat family (stat, lstat, fstatat, statx, their 64 variants
// and the __xstat entries of binaries built against older glibc), access and
// its variants, readlink, statfs/statvfs, realpath. A cluster path is looked
// up in the agent's view, confined to it; realpath answers ROOT/..., never the
// view's real location. stat and access take one plain *at call on the view
// instead while the view holds no symlink (WithoutSymlinks).
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "naming/cluster_path.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace {

// Runs fn(fd) on an O_PATH fd of the cluster path (following a final symlink
// unless nofollow), closing it after. -1 with errno on failure.
template <class Fn>
int WithPathFd(const Target& t, bool nofollow, Fn fn) {
  int fd = OpenInView(t, O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0), 0);
  if (fd < 0) return -1;
  int r = fn(fd);
  int err = errno;
  close(fd);
  errno = err;
  return r;
}

// The symlink-free fast path (nodeagent/view/symlink_guard.h): fn(view_fd, rel),
// one system call, while the agent's page says the view holds no symlink
// before and after it. True with *r and errno as fn left them when its answer
// stands; false (errno as it was) when the confined lookup must answer.
// Without symlinks, a lookup from the view root along a lexically clean path
// meets what openat2(RESOLVE_IN_ROOT) meets, and fails with the same errno.
template <class Fn>
bool WithoutSymlinks(const Target& t, Fn fn, int* r) {
  SymlinkFree ticket;
  if (!SymlinkFreeView(&ticket) || !LexicallyClean(t.rel)) return false;
  int saved = errno;
  int res = fn(t.dirfd, t.rel);
  int err = errno;
  if (!SymlinkFreeStill(ticket)) {
    errno = saved;
    return false;
  }
  errno = err;
  *r = res;
  return true;
}

__attribute__((noinline)) int StatAtSlow(int dirfd, const char* path, struct stat* st, int flags);

// A native absolute path goes straight to libc (native_path.h).
inline int StatAt(int dirfd, const char* path, struct stat* st, int flags) {
  auto* real = hot_path.fstatat.load(std::memory_order_relaxed);
  if (__builtin_expect(NativeAtAGlance(path) & (real != nullptr), 1)) return real(dirfd, path, st, flags);
  return StatAtSlow(dirfd, path, st, flags);
}

int StatAtSlow(int dirfd, const char* path, struct stat* st, int flags) {
  if (SurelyNative(dirfd, path)) {
    ONEBOX_REAL(fstatat);
    return real_fstatat(dirfd, path, st, flags);
  }
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  if (!t.cluster) {
    ONEBOX_REAL(fstatat);
    return real_fstatat(t.NativeDirfd(dirfd), t.NativePath(path), st, flags);
  }
  if (t.err) return Fail(t.err);
  int r;
  ONEBOX_REAL(fstatat);
  auto fast = [&](int view, const char* rel) { return real_fstatat(view, rel, st, flags & AT_SYMLINK_NOFOLLOW); };
  if (WithoutSymlinks(t, fast, &r)) return r;
  return WithPathFd(t, flags & AT_SYMLINK_NOFOLLOW,
                    [&](int fd) { return fstatat(fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW); });
}

int AccessAt(int dirfd, const char* path, int mode, int flags) {
  if (SurelyNative(dirfd, path)) {
    ONEBOX_REAL(faccessat);
    return real_faccessat(dirfd, path, mode, flags);
  }
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  if (!t.cluster) {
    ONEBOX_REAL(faccessat);
    return real_faccessat(t.NativeDirfd(dirfd), t.NativePath(path), mode, flags);
  }
  if (t.err) return Fail(t.err);
  int r;
  ONEBOX_REAL(faccessat);
  if (WithoutSymlinks(t, [&](int view, const char* rel) {
        return real_faccessat(view, rel, mode, flags & (AT_EACCESS | AT_SYMLINK_NOFOLLOW));
      }, &r))
    return r;
  return WithPathFd(t, flags & AT_SYMLINK_NOFOLLOW, [&](int fd) {
    return faccessat(fd, "", mode, AT_EMPTY_PATH | (flags & AT_EACCESS));
  });
}

ssize_t ReadlinkAt(int dirfd, const char* path, char* out, size_t size) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  if (!t.cluster) {
    ONEBOX_REAL(readlinkat);
    return real_readlinkat(t.NativeDirfd(dirfd), t.NativePath(path), out, size);
  }
  if (t.err) return Fail(t.err);
  // The link itself, without following it: readlinkat on an O_PATH|O_NOFOLLOW fd.
  int fd = OpenInView(t, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  ssize_t n = readlinkat(fd, "", out, size);
  struct stat st;
  if (n < 0 && errno == ENOENT && fstatat(fd, "", &st, AT_EMPTY_PATH) == 0 && !S_ISLNK(st.st_mode))
    errno = EINVAL;  // not a symlink: what readlink(2) says, where the empty-path form says ENOENT
  int err = errno;
  close(fd);
  errno = err;
  return n;
}

// The program's name for what the O_PATH fd points at: ROOT/... (from the
// view's real path). Returns its length, or 0 with errno.
size_t ClusterNameOf(int fd, char* out, size_t cap) {
  char real[kMaxPathBytes];
  ssize_t n = ViewLinkOf(fd, real, sizeof real);
  if (n <= 0) return 0;
  std::string_view view = ViewRoot();
  std::string_view r(real, static_cast<size_t>(n));
  if (view.empty() || r.size() <= view.size() || r.compare(0, view.size(), view) != 0 || r[view.size()] != '/') {
    errno = EIO;  // not in the view: cannot be named as a cluster path
    return 0;
  }
  size_t len = r.size() - view.size();
  if (len + 1 > cap) {
    errno = ENAMETOOLONG;
    return 0;
  }
  memcpy(out, real + view.size(), len + 1);
  return len;
}

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

int stat(const char* path, struct stat* st) { return StatAt(AT_FDCWD, path, st, 0); }
int stat64(const char* path, struct stat64* st) {
  return StatAt(AT_FDCWD, path, reinterpret_cast<struct stat*>(st), 0);
}
int lstat(const char* path, struct stat* st) { return StatAt(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
int lstat64(const char* path, struct stat64* st) {
  return StatAt(AT_FDCWD, path, reinterpret_cast<struct stat*>(st), AT_SYMLINK_NOFOLLOW);
}
int fstatat(int dirfd, const char* path, struct stat* st, int flags) { return StatAt(dirfd, path, st, flags); }
int fstatat64(int dirfd, const char* path, struct stat64* st, int flags) {
  return StatAt(dirfd, path, reinterpret_cast<struct stat*>(st), flags);
}

// glibc before 2.33 compiled stat() into calls of these (version 1 on x86_64:
// the kernel's struct stat, which is glibc's).
int __xstat(int, const char* path, struct stat* st) { return StatAt(AT_FDCWD, path, st, 0); }
int __xstat64(int, const char* path, struct stat64* st) {
  return StatAt(AT_FDCWD, path, reinterpret_cast<struct stat*>(st), 0);
}
int __lxstat(int, const char* path, struct stat* st) { return StatAt(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
int __lxstat64(int, const char* path, struct stat64* st) {
  return StatAt(AT_FDCWD, path, reinterpret_cast<struct stat*>(st), AT_SYMLINK_NOFOLLOW);
}
int __fxstatat(int, int dirfd, const char* path, struct stat* st, int flags) { return StatAt(dirfd, path, st, flags); }
int __fxstatat64(int, int dirfd, const char* path, struct stat64* st, int flags) {
  return StatAt(dirfd, path, reinterpret_cast<struct stat*>(st), flags);
}

int statx(int dirfd, const char* path, int flags, unsigned int mask, struct statx* stx) {
  ONEBOX_REAL(statx);
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  if (!t.cluster) return real_statx(t.NativeDirfd(dirfd), t.NativePath(path), flags, mask, stx);
  if (t.err) return Fail(t.err);
  int r;
  if (WithoutSymlinks(t, [&](int view, const char* rel) {
        return real_statx(view, rel, flags & (AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_TYPE), mask, stx);
      }, &r))
    return r;
  return WithPathFd(t, flags & AT_SYMLINK_NOFOLLOW, [&](int fd) {
    return real_statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | (flags & AT_STATX_SYNC_TYPE), mask, stx);
  });
}

int access(const char* path, int mode) { return AccessAt(AT_FDCWD, path, mode, 0); }
int faccessat(int dirfd, const char* path, int mode, int flags) { return AccessAt(dirfd, path, mode, flags); }
int euidaccess(const char* path, int mode) { return AccessAt(AT_FDCWD, path, mode, AT_EACCESS); }
int eaccess(const char* path, int mode) { return AccessAt(AT_FDCWD, path, mode, AT_EACCESS); }

ssize_t readlink(const char* path, char* out, size_t size) { return ReadlinkAt(AT_FDCWD, path, out, size); }
ssize_t readlinkat(int dirfd, const char* path, char* out, size_t size) {
  return ReadlinkAt(dirfd, path, out, size);
}

int statfs(const char* path, struct statfs* st) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  ONEBOX_REAL(statfs);
  if (!t.cluster) return real_statfs(t.NativePath(path), st);
  if (t.err) return Fail(t.err);
  return WithPathFd(t, false, [&](int fd) { return fstatfs(fd, st); });
}
int statfs64(const char* path, struct statfs64* st) { return statfs(path, reinterpret_cast<struct statfs*>(st)); }

int statvfs(const char* path, struct statvfs* st) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  ONEBOX_REAL(statvfs);
  if (!t.cluster) return real_statvfs(t.NativePath(path), st);
  if (t.err) return Fail(t.err);
  return WithPathFd(t, false, [&](int fd) { return fstatvfs(fd, st); });
}
int statvfs64(const char* path, struct statvfs64* st) {
  return statvfs(path, reinterpret_cast<struct statvfs*>(st));
}

char* realpath(const char* path, char* resolved) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  ONEBOX_REAL(realpath);
  if (!t.cluster) return real_realpath(t.NativePath(path), resolved);
  if (t.err) {
    errno = t.err;
    return nullptr;
  }
  char name[kMaxPathBytes];
  size_t len = 0;
  int r = WithPathFd(t, false, [&](int fd) {
    len = ClusterNameOf(fd, name, sizeof name);
    return len == 0 ? -1 : 0;
  });
  if (r != 0) return nullptr;
  if (resolved == nullptr) return strdup(name);
  memcpy(resolved, name, len + 1);  // the caller's buffer holds PATH_MAX bytes
  return resolved;
}

char* canonicalize_file_name(const char* path) { return realpath(path, nullptr); }

// _FORTIFY_SOURCE entries (Debian builds its packages with them).
char* __realpath_chk(const char* path, char* resolved, size_t resolvedlen) {
  if (resolved != nullptr && resolvedlen < kMaxPathBytes) {
    fprintf(stderr, "*** buffer overflow detected ***: realpath\n");
    abort();
  }
  return realpath(path, resolved);
}
ssize_t __readlink_chk(const char* path, char* out, size_t size, size_t outlen) {
  if (size > outlen) {
    fprintf(stderr, "*** buffer overflow detected ***: readlink\n");
    abort();
  }
  return ReadlinkAt(AT_FDCWD, path, out, size);
}
ssize_t __readlinkat_chk(int dirfd, const char* path, char* out, size_t size, size_t outlen) {
  if (size > outlen) {
    fprintf(stderr, "*** buffer overflow detected ***: readlinkat\n");
    abort();
  }
  return ReadlinkAt(dirfd, path, out, size);
}

#pragma GCC visibility pop
}  // extern "C"
