// Interposed: the open family (open, openat, creat, the _FORTIFY_SOURCE
// entries, their 64 variants), stdio's fopen/freopen (glibc's fopen does not
// go through the interposable open) and opendir. A cluster path opens the
// file in the agent's view: the program gets a real kernel fd.
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include <cstring>

#include "naming/cluster_path.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace {

bool TakesMode(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

int OpenAt(int dirfd, const char* path, int flags, mode_t mode) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  if (!t.cluster) {
    ONEBOX_REAL(openat);
    return real_openat(t.NativeDirfd(dirfd), t.NativePath(path), flags, mode);
  }
  if (t.err) return Fail(t.err);
  return OpenInView(t, flags, mode);
}

// fopen's mode string as open flags (glibc's reading: r w a, then + x e m c).
bool FopenFlags(const char* mode, int* flags) {
  if (mode == nullptr) return false;
  int f;
  switch (mode[0]) {
    case 'r': f = O_RDONLY; break;
    case 'w': f = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': f = O_WRONLY | O_CREAT | O_APPEND; break;
    default: return false;
  }
  for (const char* m = mode + 1; *m != '\0' && *m != ','; ++m) {
    if (*m == '+') f = (f & ~O_ACCMODE) | O_RDWR;
    else if (*m == 'x') f |= O_EXCL;
    else if (*m == 'e') f |= O_CLOEXEC;
  }
  *flags = f;
  return true;
}

// fopen of a cluster path: open it in the view, then wrap the fd. nullptr when
// path is not a cluster path (*handled false).
FILE* FopenCluster(const char* path, const char* mode, bool* handled) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  *handled = t.cluster || t.native;
  if (!*handled) return nullptr;
  ONEBOX_REAL(fopen);
  if (!t.cluster) return real_fopen(t.native, mode);
  int flags;
  if (!FopenFlags(mode, &flags)) {
    errno = EINVAL;
    return nullptr;
  }
  if (t.err) {
    errno = t.err;
    return nullptr;
  }
  int fd = OpenInView(t, flags, 0666);
  if (fd < 0) return nullptr;
  FILE* f = fdopen(fd, mode);
  if (f == nullptr) {
    int err = errno;
    close(fd);
    errno = err;
  }
  return f;
}

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

int open(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (TakesMode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  return OpenAt(AT_FDCWD, path, flags, mode);
}

int open64(const char* path, int flags, ...) {
  mode_t mode = 0;
  if (TakesMode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  return OpenAt(AT_FDCWD, path, flags | O_LARGEFILE, mode);
}

int openat(int dirfd, const char* path, int flags, ...) {
  mode_t mode = 0;
  if (TakesMode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  return OpenAt(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char* path, int flags, ...) {
  mode_t mode = 0;
  if (TakesMode(flags)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, mode_t);
    va_end(ap);
  }
  return OpenAt(dirfd, path, flags | O_LARGEFILE, mode);
}

int creat(const char* path, mode_t mode) { return OpenAt(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode); }
int creat64(const char* path, mode_t mode) {
  return OpenAt(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC | O_LARGEFILE, mode);
}

// _FORTIFY_SOURCE entries: called when the compiler saw no mode argument.
int __open_2(const char* path, int flags) { return OpenAt(AT_FDCWD, path, flags, 0); }
int __open64_2(const char* path, int flags) { return OpenAt(AT_FDCWD, path, flags | O_LARGEFILE, 0); }
int __openat_2(int dirfd, const char* path, int flags) { return OpenAt(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char* path, int flags) { return OpenAt(dirfd, path, flags | O_LARGEFILE, 0); }

FILE* fopen(const char* path, const char* mode) {
  bool handled;
  FILE* f = FopenCluster(path, mode, &handled);
  if (handled) return f;
  ONEBOX_REAL(fopen);
  return real_fopen(path, mode);
}

FILE* fopen64(const char* path, const char* mode) {
  bool handled;
  FILE* f = FopenCluster(path, mode, &handled);
  if (handled) return f;
  ONEBOX_REAL(fopen64);
  return real_fopen64(path, mode);
}

// freopen of a cluster path: open it in the view, then let stdio reopen the
// stream on that open file through its /proc/self/fd link.
static FILE* FreopenImpl(const char* path, const char* mode, FILE* stream, bool large) {
  ONEBOX_REAL(freopen);
  ONEBOX_REAL(freopen64);
  auto real = large ? real_freopen64 : real_freopen;
  char buf[kMaxPathBytes];
  Target t = path ? Resolve(path, buf, sizeof buf) : Target{};
  if (!t.cluster) return real(t.NativePath(path), mode, stream);
  int flags;
  if (!FopenFlags(mode, &flags)) {
    errno = EINVAL;
    return nullptr;
  }
  if (t.err) {
    errno = t.err;
    return nullptr;
  }
  int fd = OpenInView(t, flags, 0666);
  if (fd < 0) return nullptr;
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  FILE* f = real(link, mode, stream);
  int err = errno;
  close(fd);
  errno = err;
  return f;
}

FILE* freopen(const char* path, const char* mode, FILE* stream) { return FreopenImpl(path, mode, stream, false); }
FILE* freopen64(const char* path, const char* mode, FILE* stream) { return FreopenImpl(path, mode, stream, true); }

DIR* opendir(const char* path) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  ONEBOX_REAL(opendir);
  if (!t.cluster) return real_opendir(t.NativePath(path));
  if (t.err) {
    errno = t.err;
    return nullptr;
  }
  int fd = OpenInView(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return nullptr;
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    close(fd);
    errno = err;
  }
  return d;
}

#pragma GCC visibility pop
}  // extern "C"
