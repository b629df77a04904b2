// Calls every function libonebox.so interposes on paths below BASE and prints,
// per call, its name, result and errno (plus what it observed: sizes, modes,
// names; never inode numbers or times, which differ between file systems).
// tests/integration/shim_test.cc runs it on a native directory and, under the
// shim, on a cluster directory, and compares the outputs. Usage: calls_probe BASE
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <signal.h>
#include <ftw.h>
#include <glob.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <linux/close_range.h>
#include <unistd.h>
#include <utime.h>

// The entries glibc's headers leave out (_FORTIFY_SOURCE's, those of glibc < 2.33) too.
#include "preload/libc_decls.h"

static const char* base;
static size_t base_len;
extern char** environ;

static const char* Rel(const char* p) {  // BASE/x as $/x
  static char out[8192];
  if (p && strncmp(p, base, base_len) == 0) {
    snprintf(out, sizeof out, "$%s", p + base_len);
    return out;
  }
  return p ? p : "(null)";
}
static char* P(const char* rel) {  // BASE/rel (a few live at once)
  static char bufs[8][4096];
  static int i;
  char* b = bufs[i++ % 8];
  snprintf(b, 4096, "%s/%s", base, rel);
  return b;
}
// Call first, then Out: C leaves the order of a call's arguments open.
static void Out(const char* name, long rc, const char* fmt, ...) {
  int err = errno;
  printf("%-24s rc=%-3ld errno=%-3d", name, rc < 0 ? -1L : rc > 0 ? 1L : 0L, rc < 0 ? err : 0);
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    printf(" ");
    vprintf(fmt, ap);
    va_end(ap);
  }
  printf("\n");
  errno = 0;
}
#define CALL(name, expr) do { errno = 0; long _r = (long)(expr); Out(name, _r, NULL); } while (0)
static void Fd(const char* name, int fd) {
  Out(name, fd, NULL);
  if (fd >= 0) close(fd);
}
static void St(const char* name, int rc, const struct stat* st) {
  if (rc == 0)
    Out(name, rc, "mode=%o size=%lld nlink=%lu", st->st_mode, (long long)st->st_size, (unsigned long)st->st_nlink);
  else Out(name, rc, NULL);
}
static int walk_cb(const char* p, const struct stat* st, int type, struct FTW* f) {
  printf("  walk %s type=%d base=%s\n", Rel(p), type, p + f->base);
  return 0;
}
static int ftw_cb(const char* p, const struct stat* st, int type) {
  printf("  ftw %s type=%d\n", Rel(p), type);
  return 0;
}
static int walk64_cb(const char* p, const struct stat64* st, int type, struct FTW* f) {
  printf("  walk64 %s type=%d\n", Rel(p), type);
  return 0;
}
static int ftw64_cb(const char* p, const struct stat64* st, int type) {
  printf("  ftw64 %s type=%d\n", Rel(p), type);
  return 0;
}
static void OnAlarm(int sig) { (void)sig; }

static void RunChild(const char* name, int how) {  // exec variants in a child; the child prints
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    char* argv[] = {"prog.sh", "arg", NULL};
    setenv("PATH", P("bin"), 1);
    switch (how) {
      case 0: execve(P("bin/prog.sh"), argv, environ); break;
      case 1: execv(P("bin/prog.sh"), argv); break;
      case 2: execvp("prog.sh", argv); break;
      case 3: execvpe("prog.sh", argv, environ); break;
      case 4: execl(P("bin/prog.sh"), "prog.sh", "arg", (char*)NULL); break;
      case 5: execlp("prog.sh", "prog.sh", "arg", (char*)NULL); break;
      case 6: execle(P("bin/prog.sh"), "prog.sh", "arg", (char*)NULL, environ); break;
    }
    printf("%-24s exec failed errno=%d\n", name, errno);
    fflush(stdout);
    _exit(127);
  }
  int status;
  waitpid(pid, &status, 0);
  printf("%-24s exit=%d\n", name, WEXITSTATUS(status));
}

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  base = argv[1];
  base_len = strlen(base);
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct stat st;
  struct stat64 st64;
  char buf[4096];

  // file_open
  CALL("mkdir", mkdir(P("d"), 0755));
  Fd("open", open(P("d/f"), O_CREAT | O_WRONLY | O_TRUNC, 0640));
  Fd("open64", open64(P("d/f"), O_RDONLY));
  int dfd = open(P("d"), O_RDONLY | O_DIRECTORY);
  Fd("openat", openat(AT_FDCWD, P("d/g"), O_CREAT | O_RDWR, 0600));
  Fd("openat64", openat64(AT_FDCWD, P("d/g"), O_RDONLY));
  Fd("creat", creat(P("d/c"), 0644));
  Fd("creat64", creat64(P("d/c64"), 0644));
  Fd("__open_2", __open_2(P("d/f"), O_RDONLY));
  Fd("__open64_2", __open64_2(P("d/f"), O_RDONLY));
  Fd("__openat_2", __openat_2(AT_FDCWD, P("d/f"), O_RDONLY));
  Fd("__openat64_2", __openat64_2(AT_FDCWD, P("d/f"), O_RDONLY));
  Fd("open missing", open(P("d/none"), O_RDONLY));
  Fd("open excl exists", open(P("d/f"), O_CREAT | O_EXCL | O_WRONLY, 0600));
  Fd("open dir for write", open(P("d"), O_WRONLY));
  FILE* f = fopen(P("d/f"), "w");
  Out("fopen", f ? 1 : -1, NULL);
  if (f) { fputs("hello\n", f); fclose(f); }
  f = fopen64(P("d/f"), "a+");
  Out("fopen64", f ? 1 : -1, NULL);
  if (f) { fputs("more\n", f); fclose(f); }
  f = fopen(P("d/none"), "r");
  Out("fopen missing", f ? 1 : -1, NULL);
  f = fopen("/dev/null", "r");
  FILE* r = freopen(P("d/f"), "r", f);
  Out("freopen", r ? 1 : -1, "line=%s", r && fgets(buf, sizeof buf, r) ? strtok(buf, "\n") : "-");
  r = freopen64(P("d/f"), "r", r);
  Out("freopen64", r ? 1 : -1, NULL);
  if (r) fclose(r);
  DIR* d = opendir(P("d"));
  int entries = 0;
  if (d) { while (readdir(d)) ++entries; closedir(d); }
  Out("opendir", d ? 1 : -1, "entries=%d", entries);
  strcpy(buf, P("d/tmpXXXXXX"));
  Fd("mkstemp", mkstemp(buf)); unlink(buf);
  strcpy(buf, P("d/tmpXXXXXX"));
  Fd("mkstemp64", mkstemp64(buf)); unlink(buf);
  strcpy(buf, P("d/tmpXXXXXX"));
  Fd("mkostemp", mkostemp(buf, O_CLOEXEC)); unlink(buf);
  strcpy(buf, P("d/tmpXXXXXX"));
  Fd("mkostemp64", mkostemp64(buf, O_CLOEXEC)); unlink(buf);
  strcpy(buf, P("d/tmpXXXXXX.c"));
  Fd("mkstemps", mkstemps(buf, 2)); Out("mkstemps suffix", 0, "%s", buf + strlen(buf) - 2); unlink(buf);
  strcpy(buf, P("d/tmpXXXXXX.c"));
  Fd("mkstemps64", mkstemps64(buf, 2)); unlink(buf);
  strcpy(buf, P("d/tmpXXXXXX.c"));
  Fd("mkostemps", mkostemps(buf, 2, 0)); unlink(buf);
  strcpy(buf, P("d/tmpXXXXXX.c"));
  Fd("mkostemps64", mkostemps64(buf, 2, 0)); unlink(buf);
  strcpy(buf, P("d/tmpdXXXXXX"));
  char* td = mkdtemp(buf);
  Out("mkdtemp", td ? 1L : -1L, NULL);
  if (td) { St("mkdtemp mode", stat(td, &st), &st); rmdir(td); }
  strcpy(buf, P("d/bad"));
  Fd("mkstemp bad template", mkstemp(buf));

  // file_stat
  St("stat", stat(P("d/f"), &st), &st);
  St("stat64", stat64(P("d/f"), &st64), (struct stat*)&st64);
  CALL("symlink", symlink("f", P("d/l")));
  St("lstat", lstat(P("d/l"), &st), &st);
  St("lstat64", lstat64(P("d/l"), &st64), (struct stat*)&st64);
  St("fstatat", fstatat(AT_FDCWD, P("d/l"), &st, 0), &st);
  St("fstatat nofollow", fstatat(AT_FDCWD, P("d/l"), &st, AT_SYMLINK_NOFOLLOW), &st);
  St("fstatat64", fstatat64(AT_FDCWD, P("d/f"), &st64, 0), (struct stat*)&st64);
  St("fstatat dirfd", fstatat(dfd, "f", &st, 0), &st);
  St("__xstat", __xstat(1, P("d/f"), &st), &st);
  St("__xstat64", __xstat64(1, P("d/f"), &st64), (struct stat*)&st64);
  St("__lxstat", __lxstat(1, P("d/l"), &st), &st);
  St("__lxstat64", __lxstat64(1, P("d/l"), &st64), (struct stat*)&st64);
  St("__fxstatat", __fxstatat(1, AT_FDCWD, P("d/f"), &st, 0), &st);
  St("__fxstatat64", __fxstatat64(1, AT_FDCWD, P("d/f"), &st64, 0), (struct stat*)&st64);
  St("stat missing", stat(P("d/none"), &st), &st);
  struct statx sx;
  errno = 0;
  int sxr = statx(AT_FDCWD, P("d/l"), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &sx);
  Out("statx", sxr, "mode=%o size=%llu", sxr == 0 ? sx.stx_mode : 0, sxr == 0 ? (unsigned long long)sx.stx_size : 0ull);
  CALL("access", access(P("d/f"), R_OK | W_OK));
  CALL("access missing", access(P("d/none"), F_OK));
  CALL("faccessat", faccessat(AT_FDCWD, P("d/f"), X_OK, 0));
  CALL("euidaccess", euidaccess(P("d/f"), R_OK));
  CALL("eaccess", eaccess(P("d"), X_OK));
  ssize_t n = readlink(P("d/l"), buf, sizeof buf);
  Out("readlink", n, "%.*s", n > 0 ? (int)n : 0, buf);
  n = readlinkat(AT_FDCWD, P("d/l"), buf, sizeof buf);
  Out("readlinkat", n, "%.*s", n > 0 ? (int)n : 0, buf);
  n = __readlink_chk(P("d/l"), buf, sizeof buf, sizeof buf);
  Out("__readlink_chk", n, NULL);
  n = __readlinkat_chk(AT_FDCWD, P("d/l"), buf, sizeof buf, sizeof buf);
  Out("__readlinkat_chk", n, NULL);
  CALL("readlink not a link", readlink(P("d/f"), buf, sizeof buf));
  struct statfs sfs;
  CALL("statfs", statfs(P("d"), &sfs));
  struct statfs64 sfs64;
  CALL("statfs64", statfs64(P("d"), &sfs64));
  struct statvfs svfs;
  CALL("statvfs", statvfs(P("d"), &svfs));
  struct statvfs64 svfs64;
  CALL("statvfs64", statvfs64(P("d"), &svfs64));
  char* rp = realpath(P("d/l"), buf);
  Out("realpath", rp ? 1 : -1, "%s", Rel(rp));
  rp = __realpath_chk(P("d/./l"), buf, sizeof buf);
  Out("__realpath_chk", rp ? 1 : -1, "%s", Rel(rp));
  rp = canonicalize_file_name(P("d/../d/f"));
  Out("canonicalize_file_name", rp ? 1 : -1, "%s", Rel(rp));
  free(rp);
  rp = realpath(P("d/none"), buf);
  Out("realpath missing", rp ? 1 : -1, NULL);

  // file_dir
  CALL("mkdir exists", mkdir(P("d"), 0755));
  CALL("mkdirat", mkdirat(AT_FDCWD, P("d/sub"), 0700));
  CALL("rmdir", rmdir(P("d/sub")));
  CALL("rmdir not empty", rmdir(P("d")));
  CALL("unlink", unlink(P("d/c")));
  CALL("unlinkat", unlinkat(AT_FDCWD, P("d/c64"), 0));
  CALL("unlink missing", unlink(P("d/c")));
  CALL("rename", rename(P("d/g"), P("d/g2")));
  CALL("renameat", renameat(AT_FDCWD, P("d/g2"), AT_FDCWD, P("d/g3")));
  CALL("renameat2 noreplace", renameat2(AT_FDCWD, P("d/g3"), AT_FDCWD, P("d/f"), RENAME_NOREPLACE));
  CALL("link", link(P("d/f"), P("d/h")));
  CALL("linkat", linkat(AT_FDCWD, P("d/f"), AT_FDCWD, P("d/h2"), 0));
  St("link count", stat(P("d/f"), &st), &st);
  CALL("symlinkat", symlinkat("g3", AT_FDCWD, P("d/l2")));
  CALL("chmod", chmod(P("d/f"), 0604));
  CALL("fchmodat", fchmodat(AT_FDCWD, P("d/l"), 0644, 0));
  CALL("lchmod", lchmod(P("d/f"), 0640));  /* glibc's own calls fchmodat inside libc */
  CALL("lchmod back", lchmod(P("d/f"), 0604));
  St("mode after chmod", stat(P("d/f"), &st), &st);
  CALL("chown", chown(P("d/f"), getuid(), getgid()));
  CALL("lchown", lchown(P("d/l"), getuid(), getgid()));
  CALL("fchownat", fchownat(AT_FDCWD, P("d/f"), getuid(), getgid(), 0));
  CALL("truncate", truncate(P("d/f"), 3));
  CALL("truncate64", truncate64(P("d/f"), 4));
  St("size after truncate", stat(P("d/f"), &st), &st);
  struct timespec ts[2] = {{1000000000, 0}, {1200000000, 0}};
  CALL("utimensat", utimensat(AT_FDCWD, P("d/f"), ts, 0));
  stat(P("d/f"), &st);
  Out("mtime after utimensat", 0, "%ld", (long)st.st_mtime);
  struct timeval tv[2] = {{1300000000, 0}, {1400000000, 0}};
  CALL("utimes", utimes(P("d/f"), tv));
  stat(P("d/f"), &st);
  Out("mtime after utimes", 0, "%ld", (long)st.st_mtime);
  struct utimbuf ub = {1500000000, 1600000000};
  CALL("utime", utime(P("d/f"), &ub));
  stat(P("d/f"), &st);
  Out("mtime after utime", 0, "%ld", (long)st.st_mtime);
  CALL("mknod fifo", mknod(P("d/fifo"), S_IFIFO | 0600, 0));
  CALL("mkfifo", mkfifo(P("d/fifo2"), 0600));
  CALL("mknodat", mknodat(AT_FDCWD, P("d/fifo3"), S_IFIFO | 0600, 0));
  CALL("mkfifoat", mkfifoat(AT_FDCWD, P("d/fifo4"), 0600));
  CALL("mkfifoat exists", mkfifoat(AT_FDCWD, P("d/fifo4"), 0600));
  struct timeval ftv[2] = {{1700000000, 0}, {1700000001, 0}};
  CALL("futimesat", futimesat(AT_FDCWD, P("d/f"), ftv));
  stat(P("d/f"), &st);
  Out("mtime after futimesat", 0, "%ld", (long)st.st_mtime);
  St("fifo", lstat(P("d/fifo2"), &st), &st);
  char* cwd0 = getcwd(NULL, 0);
  CALL("chdir", chdir(P("d")));
  char* c = getcwd(buf, sizeof buf);
  Out("getcwd", c ? 1 : -1, "%s", Rel(c));
  c = __getcwd_chk(buf, sizeof buf, sizeof buf);
  Out("__getcwd_chk", c ? 1 : -1, "%s", Rel(c));
  St("relative stat", stat("f", &st), &st);
  char* gcd = get_current_dir_name();
  Out("get_current_dir_name", gcd ? 1 : -1, "%s", Rel(gcd));
  free(gcd);
  CALL("chdir ..", chdir(".."));
  CALL("fchdir", fchdir(dfd));
  char* cwd = getcwd(NULL, 0);
  Out("getcwd malloc", cwd ? 1 : -1, "%s", Rel(cwd));
  free(cwd);
  Out("getcwd too small", getcwd(buf, 2) ? 1 : -1, NULL);
  CALL("chdir missing", chdir(P("none")));
  chdir(cwd0);
  free(cwd0);

  // file_xattr
  CALL("setxattr", setxattr(P("d/f"), "user.probe", "v1", 2, 0));
  CALL("lsetxattr", lsetxattr(P("d/f"), "user.probe2", "v2", 2, 0));
  n = getxattr(P("d/f"), "user.probe", buf, sizeof buf);
  Out("getxattr", n, "%.*s", n > 0 ? (int)n : 0, buf);
  n = lgetxattr(P("d/f"), "user.probe2", buf, sizeof buf);
  Out("lgetxattr", n, "%.*s", n > 0 ? (int)n : 0, buf);
  n = listxattr(P("d/f"), buf, sizeof buf);
  Out("listxattr", n, "bytes=%zd", n);
  n = llistxattr(P("d/l"), buf, sizeof buf);
  Out("llistxattr", n, "bytes=%zd", n);
  n = listxattr(P("d/f"), NULL, 0);
  Out("listxattr size", n, "bytes=%zd", n);
  CALL("removexattr", removexattr(P("d/f"), "user.probe"));
  CALL("lremovexattr", lremovexattr(P("d/f"), "user.probe2"));
  CALL("getxattr missing", getxattr(P("d/f"), "user.none", buf, sizeof buf));
  int xfd = open(P("d/f"), O_RDONLY);
  CALL("fsetxattr", fsetxattr(xfd, "user.probe3", "v3", 2, 0));
  n = fgetxattr(xfd, "user.probe3", buf, sizeof buf);
  Out("fgetxattr", n, "%.*s", n > 0 ? (int)n : 0, buf);
  n = flistxattr(xfd, buf, sizeof buf);
  Out("flistxattr", n, "bytes=%zd", n);
  n = flistxattr(xfd, buf, 1);
  Out("flistxattr too small", n, NULL);
  CALL("fremovexattr", fremovexattr(xfd, "user.probe3"));
  CALL("fremovexattr missing", fremovexattr(xfd, "user.probe3"));
  close(xfd);

  // Bad path pointers: NULL, and an address nothing maps (pjdfstest's).
  // The kernel says EFAULT; so must the shim, without crashing.
  const char* bad = (const char*)0xdeadc0deUL;
  for (int which = 0; which < 2; ++which) {
    const char* b = which ? bad : NULL;
    Fd(which ? "open unmapped" : "open NULL", open(b, O_RDONLY));
    CALL(which ? "stat unmapped" : "stat NULL", stat(b, &st));
    CALL(which ? "lstat unmapped" : "lstat NULL", lstat(b, &st));
    CALL(which ? "mkdir unmapped" : "mkdir NULL", mkdir(b, 0755));
    CALL(which ? "unlink unmapped" : "unlink NULL", unlink(b));
    CALL(which ? "chmod unmapped" : "chmod NULL", chmod(b, 0644));
    CALL(which ? "access unmapped" : "access NULL", access(b, F_OK));
    CALL(which ? "truncate unmapped" : "truncate NULL", truncate(b, 0));
    CALL(which ? "rename from unmapped" : "rename from NULL", rename(b, P("d/none")));
    CALL(which ? "rename to unmapped" : "rename to NULL", rename(P("d/f"), b));
    CALL(which ? "link to unmapped" : "link to NULL", link(P("d/f"), b));
    CALL(which ? "symlink at unmapped" : "symlink at NULL", symlink("t", b));
    CALL(which ? "getxattr unmapped" : "getxattr NULL", getxattr(b, "user.x", buf, sizeof buf));
    CALL(which ? "chdir unmapped" : "chdir NULL", chdir(b));
  }

  // file_walk
  struct dirent** list = NULL;
  int cnt = scandir(P("d"), &list, NULL, alphasort);
  Out("scandir", cnt, "entries=%d first=%s", cnt, cnt > 0 ? list[0]->d_name : "-");
  for (int i = 0; i < cnt; ++i) free(list[i]);
  free(list);
  struct dirent64** list64 = NULL;
  cnt = scandir64(P("d"), &list64, NULL, alphasort64);
  Out("scandir64", cnt, "entries=%d", cnt);
  for (int i = 0; i < cnt; ++i) free(list64[i]);
  free(list64);
  glob_t g;
  int gr = glob(P("d/h*"), 0, NULL, &g);
  Out("glob", gr, "matches=%zu %s", g.gl_pathc, g.gl_pathc ? Rel(g.gl_pathv[0]) : "-");
  globfree(&g);
  glob64_t g64;
  gr = glob64(P("d/f*"), 0, NULL, &g64);
  Out("glob64", gr, "matches=%zu", g64.gl_pathc);
  globfree64(&g64);
  CALL("mkdir for walk", mkdir(P("w"), 0755) | mkdir(P("w/x"), 0755));
  close(creat(P("w/x/y"), 0644));
  CALL("nftw", nftw(P("w"), walk_cb, 8, FTW_PHYS));
  CALL("nftw64", nftw64(P("w"), walk64_cb, 8, FTW_PHYS | FTW_DEPTH));
  CALL("ftw", ftw(P("w"), ftw_cb, 8));
  CALL("ftw64", ftw64(P("w"), ftw64_cb, 8));

  // exec
  CALL("mkdir bin", mkdir(P("bin"), 0755));
  f = fopen(P("bin/prog.sh"), "w");
  if (f) { fputs("#!/bin/sh\necho \"  prog ran with $# args\"\n", f); fclose(f); }
  CALL("chmod +x", chmod(P("bin/prog.sh"), 0755));
  RunChild("execve", 0);
  RunChild("execv", 1);
  RunChild("execvp", 2);
  RunChild("execvpe", 3);
  RunChild("execl", 4);
  RunChild("execlp", 5);
  RunChild("execle", 6);
  fflush(stdout);
  pid_t pid;
  char* sargv[] = {"prog.sh", NULL};
  int sr = posix_spawn(&pid, P("bin/prog.sh"), NULL, NULL, sargv, environ);
  int status = 0;
  if (sr == 0) waitpid(pid, &status, 0);
  printf("%-24s rc=%d exit=%d\n", "posix_spawn", sr, WEXITSTATUS(status));
  setenv("PATH", P("bin"), 1);
  sr = posix_spawnp(&pid, "prog.sh", NULL, NULL, sargv, environ);
  if (sr == 0) waitpid(pid, &status, 0);
  printf("%-24s rc=%d exit=%d\n", "posix_spawnp", sr, WEXITSTATUS(status));
  // PATH with an empty entry, a directory named like the program, and the program itself.
  mkdir(P("bin2"), 0755);
  mkdir(P("bin2/prog.sh"), 0755);
  char path2[8192];
  snprintf(path2, sizeof path2, ":%s:%s", P("bin2"), P("bin"));
  setenv("PATH", path2, 1);
  fflush(stdout);
  sr = posix_spawnp(&pid, "prog.sh", NULL, NULL, sargv, environ);
  if (sr == 0) waitpid(pid, &status, 0);
  printf("%-24s rc=%d exit=%d\n", "posix_spawnp skips dirs", sr, sr == 0 ? WEXITSTATUS(status) : -1);
  setenv("PATH", P("bin2"), 1);
  sr = posix_spawnp(&pid, "prog.sh", NULL, NULL, sargv, environ);
  printf("%-24s rc=%d\n", "posix_spawnp only a dir", sr);
  setenv("PATH", P("bin"), 1);
  void* h = dlopen(P("bin/prog.sh"), RTLD_NOW);  // not a library: refused the same way
  Out("dlopen not a library", h ? 1 : -1, NULL);
  h = dlopen(P("bin/none.so"), RTLD_NOW);
  const char* why = h ? "" : dlerror();
  Out("dlopen missing", h ? 1 : -1, "says missing: %d", why != NULL && strstr(why, "No such file") != NULL);

  // file_sync
  int sfd = open(P("d/f"), O_WRONLY | O_APPEND);
  CALL("fsync", fsync(sfd));
  CALL("fdatasync", fdatasync(sfd));
  close(sfd);
  CALL("fsync bad fd", fsync(-1));

  // file_write: on an O_SYNC file every write is a durability point
  int wfd = open(P("d/sync"), O_WRONLY | O_CREAT | O_SYNC, 0644);
  struct iovec wv[2] = {{(void*)"ab", 2}, {(void*)"cd", 2}};
  CALL("write", write(wfd, "12", 2));
  CALL("pwrite", pwrite(wfd, "34", 2, 2));
  CALL("pwrite64", pwrite64(wfd, "56", 2, 4));
  CALL("writev", writev(wfd, wv, 2));
  CALL("pwritev", pwritev(wfd, wv, 2, 10));
  CALL("pwritev64", pwritev64(wfd, wv, 2, 14));
  CALL("pwritev2", pwritev2(wfd, wv, 2, 18, 0));
  CALL("pwritev64v2", pwritev64v2(wfd, wv, 2, 22, 0));
  int wdup = dup(wfd);  // a copy of an O_SYNC fd writes durably too
  CALL("write on a dup", write(wdup, "ef", 2));
  close(wdup);
  close(wfd);
  wfd = open(P("d/dsync"), O_WRONLY | O_CREAT, 0644);
  CALL("pwritev2 RWF_DSYNC", pwritev2(wfd, wv, 2, 0, RWF_DSYNC));
  CALL("pwritev64v2 RWF_SYNC", pwritev64v2(wfd, wv, 2, 4, RWF_SYNC));
  close(wfd);
  St("stat RWF_DSYNC file", stat(P("d/dsync"), &st), &st);
  CALL("write bad fd", write(-1, "x", 1));
  St("stat O_SYNC file", stat(P("d/sync"), &st), &st);

  // edges: a path's last component, flags open() ignores, odd sizes
  St("stat file/", stat(P("d/f/"), &st), &st);
  Fd("open new/ O_CREAT", open(P("d/new/"), O_CREAT | O_WRONLY, 0644));
  CALL("mkdir e/", mkdir(P("d/e/"), 0755));
  CALL("rmdir e/.", rmdir(P("d/e/.")));
  CALL("rmdir e/..", rmdir(P("d/e/..")));
  CALL("rmdir e/", rmdir(P("d/e/")));
  CALL("unlink f/", unlink(P("d/f/")));
  CALL("unlink d/.", unlink(P("d/.")));
  CALL("rename d/.. x", rename(P("d/.."), P("x")));
  CALL("mkdir d/.", mkdir(P("d/."), 0755));
  Fd("O_PATH|O_RDWR", open(P("d/f"), O_PATH | O_RDWR));
  Fd("O_PATH|O_NONBLOCK", open(P("d/f"), O_PATH | O_NONBLOCK));
  f = fopen("/dev/null", "r");
  r = freopen(P("d/fx"), "wx", f);
  Out("freopen wx", r ? 1 : -1, NULL);
  if (r) fclose(r);
  c = getcwd(buf, 0);
  Out("getcwd size 0", c ? 1 : -1, NULL);
  int ufd = open(P("d/gone"), O_CREAT | O_WRONLY, 0644);
  unlink(P("d/gone"));
  CALL("fsync unlinked", fsync(ufd));
  close(ufd);

  // A signal interrupts a blocking call: EINTR reaches the program, as natively.
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnAlarm;  // no SA_RESTART
  sigaction(SIGALRM, &sa, NULL);
  mkfifo(P("d/blocking"), 0600);
  alarm(1);
  Fd("open fifo, interrupted", open(P("d/blocking"), O_RDONLY));  // no writer: blocks until the alarm
  alarm(0);

  // raw_syscall: system calls made directly
  Fd("syscall openat", (int)syscall(SYS_openat, AT_FDCWD, P("d/f"), O_RDONLY, 0));
  St("syscall newfstatat", (int)syscall(SYS_newfstatat, AT_FDCWD, P("d/f"), &st, 0), &st);
  CALL("syscall mkdir", syscall(SYS_mkdir, P("d/viasys"), 0755));
  CALL("syscall rmdir", syscall(SYS_rmdir, P("d/viasys")));
  CALL("syscall access missing", syscall(SYS_access, P("d/none"), F_OK));
  CALL("syscall getpid", syscall(SYS_getpid) > 0 ? 0 : -1);
  char* sc = getcwd(NULL, 0);
  chdir(P("d"));
  long gl = syscall(SYS_getcwd, buf, sizeof buf);
  Out("syscall getcwd", gl, "%s", gl > 0 ? Rel(buf) : "-");
  chdir(sc);
  free(sc);

  // file_lock: with a lone agent locks are the kernel's, as natively
  int lk = open(P("d/f"), O_RDWR);
  CALL("flock", flock(lk, LOCK_EX | LOCK_NB));
  CALL("flock bad operation", flock(lk, 77));
  CALL("lockf", lockf(lk, F_TLOCK, 10));
  CALL("lockf64", lockf64(lk, F_TEST, 10));
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 5};
  CALL("fcntl F_SETLK", fcntl(lk, F_SETLK, &fl));
  fl.l_type = F_RDLCK;
  CALL("fcntl F_GETLK", fcntl(lk, F_GETLK, &fl));
  CALL("fcntl F_GETLK answer", fl.l_type);
  CALL("flock unlock", flock(lk, LOCK_UN));
  close(lk);

  // fd_guard: the program's own descriptors behave as ever
  int a = open(P("d/f"), O_RDONLY);
  int dupped = dup(a);
  CALL("dup", dupped > a ? 0 : -1);
  close(dupped);
  CALL("fcntl", fcntl(a, F_DUPFD, 210) == 210 ? 0 : -1);
  CALL("fcntl64", fcntl64(a, F_DUPFD_CLOEXEC, 211) == 211 ? 0 : -1);
  CALL("fcntl F_GETFD", fcntl(211, F_GETFD));
  CALL("fcntl64 F_GETFL", fcntl64(a, F_GETFL) & O_ACCMODE);
  close(210);
  close(211);
  CALL("fcntl bad fd", fcntl(-1, F_DUPFD, 0));
  CALL("dup2", dup2(a, 200) == 200 ? 0 : -1);
  CALL("dup3", dup3(a, 201, O_CLOEXEC) == 201 ? 0 : -1);
  CALL("close", close(200) | close(201) | close(a));
  CALL("close bad fd", close(a));
  a = open(P("d/f"), O_RDONLY);
  dup2(a, 300);
  dup2(a, 301);
  CALL("close_range", close_range(300, 301, 0));
  CALL("close_range closed them", fcntl(300, F_GETFD));
  dup2(a, 400);
  closefrom(400);
  CALL("closefrom closed it", fcntl(400, F_GETFD));
  Fd("open after closes", open(P("d/f"), O_RDONLY));
  /* Signals: local pids are libc's; a gpid of a node no cluster has (index 511) names no process. */
  CALL("kill", kill(getpid(), 0));
  CALL("kill gpid of no node", kill((511 << 22) | 1, 0));
  CALL("killpg", killpg(getpgrp(), 0));
  union sigval v = {.sival_int = 7};
  CALL("sigqueue", sigqueue(getpid(), 0, v));
  /* Sockets: a cluster port is claimed first (one agent: it wins), port 0 and UDP are libc's. */
  struct sockaddr_in loopback = {.sin_family = AF_INET, .sin_port = htons(47391), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  CALL("bind cluster port", bind(tcp, (struct sockaddr*)&loopback, sizeof loopback));
  close(tcp);
  loopback.sin_port = 0;
  tcp = socket(AF_INET, SOCK_STREAM, 0);
  CALL("bind port 0", bind(tcp, (struct sockaddr*)&loopback, sizeof loopback));
  CALL("bind NULL", bind(tcp, NULL, sizeof loopback));
  CALL("bind bad pointer", bind(tcp, (struct sockaddr*)0xdeadc0de, sizeof loopback));
  /* A connection on an ephemeral port: libc's connect and accept. */
  CALL("listen port 0", listen(tcp, 4));
  struct sockaddr_in bound;
  socklen_t bound_len = sizeof bound;
  CALL("getsockname port 0", getsockname(tcp, (struct sockaddr*)&bound, &bound_len));
  int caller = socket(AF_INET, SOCK_STREAM, 0);
  CALL("connect port 0's", connect(caller, (struct sockaddr*)&bound, sizeof bound));
  Fd("accept", accept(tcp, NULL, NULL));
  fcntl(tcp, F_SETFL, O_NONBLOCK);
  Fd("accept4 nothing waiting", accept4(tcp, NULL, NULL, SOCK_NONBLOCK));
  close(caller);
  close(tcp);
  int udp = socket(AF_INET, SOCK_DGRAM, 0);
  loopback.sin_port = htons(47392);
  CALL("bind udp", bind(udp, (struct sockaddr*)&loopback, sizeof loopback));
  CALL("connect udp", connect(udp, (struct sockaddr*)&loopback, sizeof loopback));
  close(udp);
  /* A Unix socket at a cluster path: bound in the view, claimed, connected to. */
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  snprintf(un.sun_path, sizeof un.sun_path, "%s", P("probe.sock"));
  int listener = socket(AF_UNIX, SOCK_STREAM, 0);
  CALL("bind unix", bind(listener, (struct sockaddr*)&un, sizeof un));
  CALL("listen unix", listen(listener, 1));
  int client = socket(AF_UNIX, SOCK_STREAM, 0);
  CALL("connect unix", connect(client, (struct sockaddr*)&un, sizeof un));
  char byte = 'x';
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  CALL("sendmsg", sendmsg(client, &msg, 0));
  struct sockaddr_storage name;
  socklen_t name_len = sizeof name;
  CALL("getpeername", getpeername(client, (struct sockaddr*)&name, &name_len));
  name_len = sizeof name;
  CALL("getsockname", getsockname(client, (struct sockaddr*)&name, &name_len));
  CALL("getpeername bad pointer", getpeername(client, (struct sockaddr*)0xdeadc0de, &name_len));
  CALL("getsockname NULL length", getsockname(client, (struct sockaddr*)&name, NULL));
  close(client);
  close(listener);
  unlink(P("probe.sock"));
  snprintf(un.sun_path, sizeof un.sun_path, "%s", P("no-such.sock"));
  client = socket(AF_UNIX, SOCK_STREAM, 0);
  CALL("connect unix, nothing there", connect(client, (struct sockaddr*)&un, sizeof un));
  close(client);
  close(dfd);
  return 0;
}
