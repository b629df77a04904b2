// Interposed: the open family (open, openat, creat, the _FORTIFY_SOURCE
// entries, their 64 variants), stdio's fopen/freopen (glibc's fopen does not
// go through the interposable open) and opendir. A cluster path opens the
// file in the agent's view: the program gets a real kernel fd.
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "naming/cluster_path.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace {

bool TakesMode(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

// The optional mode argument of the open family: what the caller passed,
// when the flags say it passed one (else 0, as glibc's open reads it).
mode_t ModeArg(int flags, mode_t mode) { return TakesMode(flags) ? mode : 0; }

__attribute__((noinline)) int OpenAtSlow(int dirfd, const char* path, int flags, mode_t mode);

// A native absolute path goes straight to libc (native_path.h): no call, no
// saved register, no path buffer on the way, and libc returns straight to
// the program.
__attribute__((always_inline)) inline int OpenAt(int dirfd, const char* path, int flags, mode_t mode) {
  auto* real = hot_path.openat.load(std::memory_order_relaxed);
  if (__builtin_expect(NativeAtAGlance(path) & (real != nullptr), 1)) return real(dirfd, path, flags, mode);
  return OpenAtSlow(dirfd, path, flags, mode);
}

int OpenAtSlow(int dirfd, const char* path, int flags, mode_t mode) {
  if (SurelyNative(dirfd, path)) {
    ONEBOX_REAL(openat);
    return real_openat(dirfd, path, flags, mode);
  }
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  if (!t.cluster) {
    ONEBOX_REAL(openat);
    return real_openat(t.NativeDirfd(dirfd), t.NativePath(path), flags, mode);
  }
  if (t.err) return Fail(t.err);
  return TrackViewFd(OpenInView(t, flags, mode), flags);
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

// The fd stdio wraps for a cluster path opened with an fopen mode string;
// -1 with errno on failure.
int OpenForStdio(const Target& t, const char* mode) {
  int flags;
  if (!FopenFlags(mode, &flags)) return Fail(EINVAL);
  if (t.err) return Fail(t.err);
  return TrackViewFd(OpenInView(t, flags, 0666));
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
  int fd = OpenForStdio(t, mode);
  if (fd < 0) return nullptr;
  FILE* f = fdopen(fd, mode);
  if (f == nullptr) {
    int err = errno;
    close(fd);
    errno = err;
  }
  return f;
}

// mkstemp and friends: glibc's versions open through an internal entry, so a
// cluster template is filled and created here. suffixlen characters after the
// XXXXXX stay as they are. Returns the fd (or 0 for a directory), -1 with
// errno, or -2 when the template is not a cluster path.
int MakeTemp(char* tmpl, int suffixlen, int flags, bool dir) {
  char buf[kMaxPathBytes];
  Target t = Resolve(tmpl, buf, sizeof buf);
  if (!t.cluster && t.native) {
    // Out of the cluster from a cwd in it: the real function, on the absolute
    // path, and the name it chose copied back into the caller's template.
    char native[kMaxPathBytes];
    size_t nl = strlen(t.native), tl = strlen(tmpl);
    if (nl + 1 > sizeof native || tl < 6) return Fail(EINVAL);
    memcpy(native, t.native, nl + 1);
    int r;
    if (dir) {
      ONEBOX_REAL(mkdtemp);
      r = real_mkdtemp(native) ? 0 : -1;
    } else {
      ONEBOX_REAL(mkostemps);
      r = real_mkostemps(native, suffixlen, flags);
    }
    if (r >= 0) memcpy(tmpl + tl - 6 - suffixlen, native + nl - 6 - suffixlen, 6);
    return r;
  }
  if (!t.cluster) return -2;
  if (t.err) return Fail(t.err);
  size_t len = strlen(tmpl);
  if (suffixlen < 0 || len < 6 + static_cast<size_t>(suffixlen)) return Fail(EINVAL);
  char* x = tmpl + len - suffixlen - 6;
  if (memcmp(x, "XXXXXX", 6) != 0) return Fail(EINVAL);
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  for (int attempt = 0; attempt < 1000; ++attempt) {
    unsigned char rnd[6];
    if (getentropy(rnd, sizeof rnd) != 0) return -1;
    for (int i = 0; i < 6; ++i) x[i] = kChars[rnd[i] % (sizeof kChars - 1)];
    Target now = Resolve(tmpl, buf, sizeof buf);  // the view path with this name
    if (!now.cluster || now.err) return Fail(now.err ? now.err : EIO);
    if (dir) {
      char parent_buf[kMaxPathBytes];
      const char* base = nullptr;
      int p = OpenParentInView(now, parent_buf, sizeof parent_buf, &base);
      if (p < 0) return -1;
      int r = mkdirat(p, base, 0700);
      int err = errno;
      close(p);
      if (r == 0) return 0;
      if (err != EEXIST) return Fail(err);
    } else {
      int fd = TrackViewFd(OpenInView(now, O_RDWR | O_CREAT | O_EXCL | (flags & ~O_ACCMODE), 0600), flags);
      if (fd >= 0 || errno != EEXIST) return fd;
    }
  }
  return Fail(EEXIST);
}

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

// open, open64, openat and openat64 take their optional mode as a named
// parameter, defined under their C names (asm labels: <fcntl.h> declares
// them variadic). The x86-64 calling convention (the shim's only target: the
// glance is SSE2) passes a variadic int argument in the register a named one
// would take, and a function without va_start keeps no register save area:
// the native path ends in a jump to libc, which returns straight to the
// program. With va_start, open kept a frame around the call to libc: a
// return more after each system call, about 1% of bench P1 by itself.
#if !defined(__x86_64__)
#error "the open family's mode parameter relies on the x86-64 calling convention"
#endif
int OneboxOpen(const char* path, int flags, mode_t mode) __asm__("open");
int OneboxOpen64(const char* path, int flags, mode_t mode) __asm__("open64");
int OneboxOpenat(int dirfd, const char* path, int flags, mode_t mode) __asm__("openat");
int OneboxOpenat64(int dirfd, const char* path, int flags, mode_t mode) __asm__("openat64");
// Each is libc's call with the mode named (libc_decls.h).
static_assert(std::is_same_v<decltype(OneboxOpen), WithNamedArg<&::open, mode_t>>);
static_assert(std::is_same_v<decltype(OneboxOpen64), WithNamedArg<&::open64, mode_t>>);
static_assert(std::is_same_v<decltype(OneboxOpenat), WithNamedArg<&::openat, mode_t>>);
static_assert(std::is_same_v<decltype(OneboxOpenat64), WithNamedArg<&::openat64, mode_t>>);

int OneboxOpen(const char* path, int flags, mode_t mode) {
  return OpenAt(AT_FDCWD, path, flags, ModeArg(flags, mode));
}

int OneboxOpen64(const char* path, int flags, mode_t mode) {
  return OpenAt(AT_FDCWD, path, flags | O_LARGEFILE, ModeArg(flags, mode));
}

int OneboxOpenat(int dirfd, const char* path, int flags, mode_t mode) {
  return OpenAt(dirfd, path, flags, ModeArg(flags, mode));
}

int OneboxOpenat64(int dirfd, const char* path, int flags, mode_t mode) {
  return OpenAt(dirfd, path, flags | O_LARGEFILE, ModeArg(flags, mode));
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
// stream on that open file through its /proc link (FdLink).
static FILE* FreopenImpl(const char* path, const char* mode, FILE* stream, bool large) {
  ONEBOX_REAL(freopen);
  ONEBOX_REAL(freopen64);
  auto real = large ? real_freopen64 : real_freopen;
  char buf[kMaxPathBytes];
  Target t = path ? Resolve(path, buf, sizeof buf) : Target{};
  if (!t.cluster) return real(t.NativePath(path), mode, stream);
  int fd = OpenForStdio(t, mode);
  if (fd < 0) return nullptr;
  char link[kFdLinkBytes];
  FdLink(link, fd);
  // The file exists now: reopening it must not ask for exclusive creation again.
  char reopen_mode[16];
  size_t k = 0;
  for (const char* m = mode; *m != '\0' && k + 1 < sizeof reopen_mode; ++m)
    if (*m != 'x') reopen_mode[k++] = *m;
  reopen_mode[k] = '\0';
  FILE* f = real(link, reopen_mode, stream);
  int err = errno;
  close(fd);
  errno = err;
  return f;
}

FILE* freopen(const char* path, const char* mode, FILE* stream) { return FreopenImpl(path, mode, stream, false); }
FILE* freopen64(const char* path, const char* mode, FILE* stream) { return FreopenImpl(path, mode, stream, true); }

#define ONEBOX_MKSTEMP(name, real_args, suffixlen, flags) \
  {                                                         \
    int r = MakeTemp(tmpl, suffixlen, flags, false);        \
    if (r != -2) return r;                                  \
    ONEBOX_REAL(name);                                      \
    return real_##name real_args;                           \
  }
int mkstemp(char* tmpl) ONEBOX_MKSTEMP(mkstemp, (tmpl), 0, 0)
int mkstemp64(char* tmpl) ONEBOX_MKSTEMP(mkstemp64, (tmpl), 0, O_LARGEFILE)
int mkostemp(char* tmpl, int flags) ONEBOX_MKSTEMP(mkostemp, (tmpl, flags), 0, flags)
int mkostemp64(char* tmpl, int flags) ONEBOX_MKSTEMP(mkostemp64, (tmpl, flags), 0, flags | O_LARGEFILE)
int mkstemps(char* tmpl, int suffixlen) ONEBOX_MKSTEMP(mkstemps, (tmpl, suffixlen), suffixlen, 0)
int mkstemps64(char* tmpl, int suffixlen) ONEBOX_MKSTEMP(mkstemps64, (tmpl, suffixlen), suffixlen, O_LARGEFILE)
int mkostemps(char* tmpl, int suffixlen, int flags) ONEBOX_MKSTEMP(mkostemps, (tmpl, suffixlen, flags), suffixlen, flags)
int mkostemps64(char* tmpl, int suffixlen, int flags)
    ONEBOX_MKSTEMP(mkostemps64, (tmpl, suffixlen, flags), suffixlen, flags | O_LARGEFILE)

char* mkdtemp(char* tmpl) {
  int r = MakeTemp(tmpl, 0, 0, true);
  if (r == 0) return tmpl;
  if (r == -1) return nullptr;
  ONEBOX_REAL(mkdtemp);
  return real_mkdtemp(tmpl);
}

DIR* opendir(const char* path) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  ONEBOX_REAL(opendir);
  if (!t.cluster) return real_opendir(t.NativePath(path));
  if (t.err) {
    errno = t.err;
    return nullptr;
  }
  int fd = TrackViewFd(OpenInView(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
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
