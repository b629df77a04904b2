// Interposed: calls that change the tree or a file's metadata (mkdir, rmdir,
// unlink, rename, link, symlink, chmod, chown, truncate, utimes, mknod,
// mkfifo) and the cwd (chdir, fchdir, getcwd). A cluster path is changed in
// the agent's view with the caller's own credentials, so the kernel enforces
// permissions; the agent records what changed (it watches its view).
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>
#include <utime.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "naming/cluster_path.h"
#include "preload/link.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace {

// Runs fn(path) with a /proc path of a descriptor naming the cluster file (a final
// symlink followed inside the view): for calls that have no empty-path form.
template <class Fn>
int ViaProcFd(const Target& t, Fn fn) {
  int fd = OpenInView(t, O_PATH | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  char link[kFdLinkBytes];
  FdLink(link, fd);
  int r = fn(link);
  int err = errno;
  close(fd);
  errno = err;
  return r;
}

int UnlinkAt(int dirfd, const char* path, int flags) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  ONEBOX_REAL(unlinkat);
  if (!t.cluster) return real_unlinkat(t.NativeDirfd(dirfd), t.NativePath(path), flags);
  if (t.err) return Fail(t.err);
  // What Linux answers for a final "." or "..", and for unlink("name/").
  if (t.dot_last) return Fail((flags & AT_REMOVEDIR) ? (t.dot_last == 1 ? EINVAL : ENOTEMPTY) : EISDIR);
  if (t.dir_only && !(flags & AT_REMOVEDIR)) {
    struct stat st;
    int fd = OpenInView(t, O_PATH | O_CLOEXEC, 0);  // rel ends in "/": a non-directory fails here
    if (fd < 0) return -1;
    fstat(fd, &st);
    close(fd);
    return Fail(EISDIR);
  }
  if (t.IsRoot()) return Fail(EBUSY);
  return AtParent(t, [&](int p, const char* base) { return real_unlinkat(p, base, flags); });
}

int MkdirAt(int dirfd, const char* path, mode_t mode) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  ONEBOX_REAL(mkdirat);
  if (!t.cluster) return real_mkdirat(t.NativeDirfd(dirfd), t.NativePath(path), mode);
  if (t.err) return Fail(t.err);
  if (t.IsRoot() || t.dot_last) return Fail(EEXIST);
  if (int err = ClaimInCluster(t, /*directory=*/true); err != 0) return Fail(err);
  return AtParent(t, [&](int p, const char* base) { return real_mkdirat(p, base, mode); });
}

// Two-path calls: both in the cluster, or both outside; across is EXDEV (as
// between two file systems: mv copies then).
int TwoPaths(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, bool root_ok_as_old,
             int (*native)(int, const char*, int, const char*, unsigned), unsigned flags) {
  char ob[kMaxPathBytes], nb[kMaxPathBytes];
  Target o = Resolve(olddirfd, oldpath, ob, sizeof ob);
  Target n = Resolve(newdirfd, newpath, nb, sizeof nb);
  if (!o.cluster && !n.cluster)
    return native(o.NativeDirfd(olddirfd), o.NativePath(oldpath), n.NativeDirfd(newdirfd), n.NativePath(newpath),
                  flags);
  // A bad pointer on the other side: the kernel would say EFAULT before it looked across.
  auto bad = [](const char* p) { return p == nullptr || !MayReadPage(p); };
  if (o.cluster != n.cluster) return Fail(bad(oldpath) || bad(newpath) ? EFAULT : EXDEV);
  if (o.err || n.err) return Fail(o.err ? o.err : n.err);
  // A final "." or "..": rename says EBUSY; link (the call that may name the root as old) EPERM or EEXIST.
  if (o.dot_last || n.dot_last) return Fail(root_ok_as_old ? (o.dot_last ? EPERM : EEXIST) : EBUSY);
  if ((o.IsRoot() && !root_ok_as_old) || n.IsRoot()) return Fail(EBUSY);
  return AtParent(o, [&](int op, const char* obase) {
    // link: the kernel finds the old name before it looks at the new one's
    // directory (a missing old name is ENOENT, whatever the new path is).
    struct stat st;
    if (root_ok_as_old && RealSyscall(SYS_newfstatat, op, obase, &st, AT_SYMLINK_NOFOLLOW) != 0) return -1;
    return AtParent(n, [&](int np, const char* nbase) { return native(op, obase, np, nbase, flags); });
  });
}

int RealRenameat2(int od, const char* o, int nd, const char* n, unsigned flags) {
  ONEBOX_REAL(renameat2);
  return real_renameat2(od, o, nd, n, flags);
}
int RealLinkat(int od, const char* o, int nd, const char* n, unsigned flags) {
  ONEBOX_REAL(linkat);
  return real_linkat(od, o, nd, n, static_cast<int>(flags));
}

int ChmodAt(int dirfd, const char* path, mode_t mode, int flags) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  ONEBOX_REAL(fchmodat);
  if (!t.cluster) return real_fchmodat(t.NativeDirfd(dirfd), t.NativePath(path), mode, flags);
  if (t.err) return Fail(t.err);
  if (flags & AT_SYMLINK_NOFOLLOW)
    return AtParent(t, [&](int p, const char* base) { return real_fchmodat(p, base, mode, flags); });
  return ViaProcFd(t, [&](const char* proc) { return real_fchmodat(AT_FDCWD, proc, mode, 0); });
}

int ChownAt(int dirfd, const char* path, uid_t uid, gid_t gid, int flags) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  ONEBOX_REAL(fchownat);
  if (!t.cluster) return real_fchownat(t.NativeDirfd(dirfd), t.NativePath(path), uid, gid, flags);
  if (t.err) return Fail(t.err);
  int fd = OpenInView(t, O_PATH | O_CLOEXEC | ((flags & AT_SYMLINK_NOFOLLOW) ? O_NOFOLLOW : 0), 0);
  if (fd < 0) return -1;
  int r = real_fchownat(fd, "", uid, gid, AT_EMPTY_PATH);
  int err = errno;
  close(fd);
  errno = err;
  return r;
}

int UtimensAt(int dirfd, const char* path, const struct timespec times[2], int flags) {
  ONEBOX_REAL(utimensat);
  char buf[kMaxPathBytes];
  Target t = path ? Resolve(dirfd, path, buf, sizeof buf) : Target{};
  if (!t.cluster) return real_utimensat(t.NativeDirfd(dirfd), t.NativePath(path), times, flags);
  if (t.err) return Fail(t.err);
  if (flags & AT_SYMLINK_NOFOLLOW)
    return AtParent(t, [&](int p, const char* base) { return real_utimensat(p, base, times, flags); });
  return ViaProcFd(t, [&](const char* proc) { return real_utimensat(AT_FDCWD, proc, times, 0); });
}

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

int mkdir(const char* path, mode_t mode) { return MkdirAt(AT_FDCWD, path, mode); }
int mkdirat(int dirfd, const char* path, mode_t mode) { return MkdirAt(dirfd, path, mode); }
int rmdir(const char* path) { return UnlinkAt(AT_FDCWD, path, AT_REMOVEDIR); }
int unlink(const char* path) { return UnlinkAt(AT_FDCWD, path, 0); }
int unlinkat(int dirfd, const char* path, int flags) { return UnlinkAt(dirfd, path, flags); }

int rename(const char* oldpath, const char* newpath) {
  return TwoPaths(AT_FDCWD, oldpath, AT_FDCWD, newpath, false, RealRenameat2, 0);
}
int renameat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath) {
  return TwoPaths(olddirfd, oldpath, newdirfd, newpath, false, RealRenameat2, 0);
}
int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, unsigned int flags) {
  return TwoPaths(olddirfd, oldpath, newdirfd, newpath, false, RealRenameat2, flags);
}
int link(const char* oldpath, const char* newpath) {
  return TwoPaths(AT_FDCWD, oldpath, AT_FDCWD, newpath, true, RealLinkat, 0);
}
int linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) {
  return TwoPaths(olddirfd, oldpath, newdirfd, newpath, true, RealLinkat, static_cast<unsigned>(flags));
}

int symlink(const char* target, const char* linkpath) { return symlinkat(target, AT_FDCWD, linkpath); }
int symlinkat(const char* target, int dirfd, const char* linkpath) {
  ONEBOX_REAL(symlinkat);
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, linkpath, buf, sizeof buf);
  if (!t.cluster) return real_symlinkat(target, t.NativeDirfd(dirfd), t.NativePath(linkpath));
  if (t.err) return Fail(t.err);
  if (t.IsRoot() || t.dot_last) return Fail(EEXIST);
  // Other processes stat without a confined lookup while the view holds no
  // symlink: the agent hears of this one before it exists (nodeagent/view/symlink_guard.h).
  SymlinkAnnouncement announced;
  if (int err = AnnounceSymlink(ViewFd(), &announced); err != 0) return Fail(err);
  int r = AtParent(t, [&](int p, const char* base) { return real_symlinkat(target, p, base); });
  int err = errno;
  SymlinkMade(&announced);
  errno = err;
  return r;
}

int chmod(const char* path, mode_t mode) { return ChmodAt(AT_FDCWD, path, mode, 0); }
int fchmodat(int dirfd, const char* path, mode_t mode, int flags) { return ChmodAt(dirfd, path, mode, flags); }
// glibc's own lchmod calls its fchmodat inside libc, where the shim never sees it.
int lchmod(const char* path, mode_t mode) { return ChmodAt(AT_FDCWD, path, mode, AT_SYMLINK_NOFOLLOW); }
int chown(const char* path, uid_t uid, gid_t gid) { return ChownAt(AT_FDCWD, path, uid, gid, 0); }
int lchown(const char* path, uid_t uid, gid_t gid) { return ChownAt(AT_FDCWD, path, uid, gid, AT_SYMLINK_NOFOLLOW); }
int fchownat(int dirfd, const char* path, uid_t uid, gid_t gid, int flags) {
  return ChownAt(dirfd, path, uid, gid, flags);
}

int truncate(const char* path, off_t length) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  ONEBOX_REAL(truncate);
  if (!t.cluster) return real_truncate(t.NativePath(path), length);
  if (t.err) return Fail(t.err);
  int fd = OpenInView(t, O_WRONLY | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  int r = ftruncate(fd, length);
  int err = errno;
  close(fd);  // the agent records the new content on this close
  errno = err;
  return r;
}
int truncate64(const char* path, off64_t length) { return truncate(path, static_cast<off_t>(length)); }

int utimensat(int dirfd, const char* path, const struct timespec times[2], int flags) {
  return UtimensAt(dirfd, path, times, flags);
}
int utimes(const char* path, const struct timeval tv[2]) {
  if (tv == nullptr) return UtimensAt(AT_FDCWD, path, nullptr, 0);
  struct timespec ts[2] = {{tv[0].tv_sec, tv[0].tv_usec * 1000}, {tv[1].tv_sec, tv[1].tv_usec * 1000}};
  return UtimensAt(AT_FDCWD, path, ts, 0);
}
int utime(const char* path, const struct utimbuf* times) {
  if (times == nullptr) return UtimensAt(AT_FDCWD, path, nullptr, 0);
  struct timespec ts[2] = {{times->actime, 0}, {times->modtime, 0}};
  return UtimensAt(AT_FDCWD, path, ts, 0);
}

int futimesat(int dirfd, const char* path, const struct timeval tv[2]) {
  if (tv == nullptr) return UtimensAt(dirfd, path, nullptr, 0);
  struct timespec ts[2] = {{tv[0].tv_sec, tv[0].tv_usec * 1000}, {tv[1].tv_sec, tv[1].tv_usec * 1000}};
  return UtimensAt(dirfd, path, ts, 0);
}

int mknod(const char* path, mode_t mode, dev_t dev) { return mknodat(AT_FDCWD, path, mode, dev); }

int mknodat(int dirfd, const char* path, mode_t mode, dev_t dev) {
  ONEBOX_REAL(mknodat);
  char buf[kMaxPathBytes];
  Target t = Resolve(dirfd, path, buf, sizeof buf);
  if (!t.cluster) return real_mknodat(t.NativeDirfd(dirfd), t.NativePath(path), mode, dev);
  if (t.err) return Fail(t.err);
  if (t.IsRoot() || t.dot_last) return Fail(EEXIST);
  return AtParent(t, [&](int p, const char* base) { return real_mknodat(p, base, mode, dev); });
}
int mkfifo(const char* path, mode_t mode) { return mknodat(AT_FDCWD, path, (mode & 07777) | S_IFIFO, 0); }
int mkfifoat(int dirfd, const char* path, mode_t mode) { return mknodat(dirfd, path, (mode & 07777) | S_IFIFO, 0); }

int chdir(const char* path) {
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  ONEBOX_REAL(chdir);
  ONEBOX_REAL(fchdir);
  int r;
  if (!t.cluster) {
    r = real_chdir(t.NativePath(path));
  } else if (t.err) {
    return Fail(t.err);
  } else {
    int fd = OpenInView(t, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) return -1;
    r = real_fchdir(fd);
    int err = errno;
    close(fd);
    errno = err;
  }
  if (r == 0) CwdChanged();
  return r;
}

int fchdir(int fd) {
  ONEBOX_REAL(fchdir);
  int r = real_fchdir(fd);
  if (r == 0) CwdChanged();
  return r;
}

// Inside the cluster the cwd is ROOT/..., never the view's real location.
char* getcwd(char* out, size_t size) {
  ONEBOX_REAL(getcwd);
  char buf[kMaxPathBytes];
  // The kernel's own answer: glibc's refuses a detached view's "(unreachable)/...".
  char* deep = nullptr;
  const char* real = RealCwd(buf, sizeof buf, &deep);
  if (real == nullptr) return real_getcwd(out, size);
  std::unique_ptr<char, decltype(&free)> free_deep(deep, &free);
  const char* name = ClusterNameOfCwd(real);
  if (name == nullptr && real[0] != '/')
    return real_getcwd(out, size);  // unreachable and not the view: glibc's answer (ENOENT)
  if (name == nullptr) name = real;
  size_t need = strlen(name) + 1;
  if (out != nullptr && size == 0) {
    errno = EINVAL;
    return nullptr;
  }
  if (size != 0 && size < need) {
    errno = ERANGE;
    return nullptr;
  }
  if (out == nullptr) {
    out = static_cast<char*>(malloc(size == 0 ? need : size));
    if (out == nullptr) return nullptr;
  }
  memcpy(out, name, need);
  return out;
}

// glibc's version calls its internal getcwd.
char* get_current_dir_name() {
  if (CwdInCluster()) return getcwd(nullptr, 0);
  ONEBOX_REAL(get_current_dir_name);
  return real_get_current_dir_name();
}

// _FORTIFY_SOURCE entry (Debian builds its packages with it).
char* __getcwd_chk(char* out, size_t size, size_t outlen) {
  if (size > outlen) {
    fprintf(stderr, "*** buffer overflow detected ***: getcwd\n");
    abort();
  }
  return getcwd(out, size);
}

#pragma GCC visibility pop
}  // extern "C"
