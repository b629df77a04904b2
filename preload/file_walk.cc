// Interposed: the C library's directory walkers, which glibc runs on internal
// entries the other families cannot see: scandir (here, on the shim's
// opendir), glob (glibc's own, through its GLOB_ALTDIRFUNC hooks pointed at
// the shim's functions) and nftw/ftw (glibc's, over the view's real path, with
// every path handed to the callback named as the program knows it: ROOT/...).
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "naming/cluster_path.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace {

template <class Dirent>
int ScandirCluster(const Target& t, Dirent*** namelist, int (*filter)(const Dirent*),
                   int (*compar)(const Dirent**, const Dirent**)) {
  int fd = OpenInView(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  DIR* d = fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    close(fd);
    return Fail(err);
  }
  Dirent** list = nullptr;
  size_t n = 0, cap = 0;
  int err = 0;
  while (Dirent* e = reinterpret_cast<Dirent*>(readdir(d))) {
    if (filter != nullptr && !filter(e)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      auto* grown = static_cast<Dirent**>(realloc(list, cap * sizeof(Dirent*)));
      if (grown == nullptr) {
        err = ENOMEM;
        break;
      }
      list = grown;
    }
    size_t size = offsetof(Dirent, d_name) + strlen(e->d_name) + 1;
    auto* copy = static_cast<Dirent*>(malloc(size));
    if (copy == nullptr) {
      err = ENOMEM;
      break;
    }
    memcpy(copy, e, size);
    list[n++] = copy;
  }
  closedir(d);
  if (err != 0) {
    for (size_t i = 0; i < n; ++i) free(list[i]);
    free(list);
    return Fail(err);
  }
  if (compar != nullptr && n > 1)
    qsort(list, n, sizeof(Dirent*), reinterpret_cast<int (*)(const void*, const void*)>(compar));
  *namelist = list;
  return static_cast<int>(n);
}

bool ClusterPattern(const char* pattern) {
  char buf[kMaxPathBytes];
  if (pattern == nullptr) return false;
  if (pattern[0] == '/') return Resolve(pattern, buf, sizeof buf).cluster;
  return CwdInCluster();  // relative from a cwd in the view: the kernel resolves it there
}

// glob's hooks, typed as glob wants them, calling the shim's functions.
void* GlobOpendir(const char* path) { return opendir(path); }
void GlobClosedir(void* d) { closedir(static_cast<DIR*>(d)); }
struct dirent* GlobReaddir(void* d) { return readdir(static_cast<DIR*>(d)); }
struct dirent64* GlobReaddir64(void* d) { return readdir64(static_cast<DIR*>(d)); }

void UseShimDirFuncs(glob_t* g) {
  g->gl_opendir = GlobOpendir;
  g->gl_closedir = GlobClosedir;
  g->gl_readdir = GlobReaddir;
  g->gl_lstat = lstat;
  g->gl_stat = stat;
}
void UseShimDirFuncs(glob64_t* g) {
  g->gl_opendir = GlobOpendir;
  g->gl_closedir = GlobClosedir;
  g->gl_readdir = GlobReaddir64;
  g->gl_lstat = lstat64;
  g->gl_stat = stat64;
}

// nftw over the view's real path: the callback sees walk_name and then
// fpath past walk_skip bytes (the view root; or, for a detached view, the
// whole /proc/thread-self/fd/N/. the walk starts from, and walk_name the cluster
// name of the walk's top).
thread_local size_t walk_skip = 0;
thread_local const char* walk_name = "";
thread_local int (*walk_fn)(const char*, const struct stat*, int, struct FTW*) = nullptr;
thread_local int (*walk_fn64)(const char*, const struct stat64*, int, struct FTW*) = nullptr;
thread_local int (*walk_ftw)(const char*, const struct stat*, int) = nullptr;
thread_local bool walk_chdir_tl = false;

#define walk_chdir walk_chdir_tl  // FTW_CHDIR: glibc changes the cwd without our chdir

// The walk's callbacks, saved and restored around it: callbacks may walk too.
struct WalkScope {
  size_t skip = walk_skip;
  const char* name = walk_name;
  decltype(walk_fn) fn = walk_fn;
  decltype(walk_fn64) fn64 = walk_fn64;
  decltype(walk_ftw) f = walk_ftw;
  bool chdir = walk_chdir;
  ~WalkScope() {
    walk_skip = skip;
    walk_name = name;
    walk_fn = fn;
    walk_fn64 = fn64;
    walk_ftw = f;
    walk_chdir = chdir;
    CwdChanged();
  }
};

int WalkCallback(const char* fpath, const struct stat* st, int type, struct FTW* ftw) {
  if (walk_chdir) CwdChanged();
  struct FTW shifted = *ftw;
  char joined[kMaxPathBytes];
  const char* path = fpath + walk_skip;
  if (const size_t name_len = strlen(walk_name); name_len != 0) {
    if (name_len + strlen(path) + 1 > sizeof joined) return Fail(ENAMETOOLONG);
    memcpy(joined, walk_name, name_len);
    strcpy(joined + name_len, path);
    path = joined;
    shifted.base += static_cast<int>(name_len);
  }
  shifted.base -= static_cast<int>(walk_skip);
  if (ftw->level == 0) shifted.base = static_cast<int>(strrchr(path, '/') + 1 - path);  // the top's own name
  if (walk_ftw != nullptr) return walk_ftw(path, st, type);
  if (walk_fn64 != nullptr) return walk_fn64(path, reinterpret_cast<const struct stat64*>(st), type, &shifted);
  return walk_fn(path, st, type, &shifted);
}

// Runs glibc's nftw on the real path of the cluster directory. -2: not a cluster path.
int WalkCluster(const char* dir, int nopenfd, int flags) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dir, buf, sizeof buf);
  if (!t.cluster) return -2;
  if (t.err) return Fail(t.err);
  int fd = OpenInView(t, O_PATH | O_CLOEXEC, 0);
  if (fd < 0) return -1;
  char real[kMaxPathBytes];
  ssize_t n = ViewLinkOf(fd, real, sizeof real);
  std::string_view view = ViewRoot();
  if (n <= 0 || static_cast<size_t>(n) <= view.size() || real[view.size()] != '/') {
    close(fd);
    return Fail(EIO);
  }
  // A detached view has no path here: the walk goes through fd's /proc entry.
  const bool detached = ViewIsDetached();
  char top[kFdLinkBytes + 2];  // "/.": the /proc entry itself is a symlink, which a physical walk would not enter
  FdLink(top, fd);
  strcat(top, "/.");
  walk_skip = detached ? strlen(top) : view.size();
  walk_name = detached ? real + view.size() : "";
  walk_chdir = flags & FTW_CHDIR;
  ONEBOX_REAL(nftw);
  // Physical walks only: glibc would follow symlinks with the kernel's
  // resolution, not the view's, and could leave the view.
  int r = real_nftw(detached ? top : real, WalkCallback, nopenfd, flags | FTW_PHYS);
  int err = errno;
  close(fd);
  errno = err;
  return r;
}

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

int scandir(const char* dir, struct dirent*** namelist, int (*filter)(const struct dirent*),
            int (*compar)(const struct dirent**, const struct dirent**)) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dir, buf, sizeof buf);
  ONEBOX_REAL(scandir);
  if (!t.cluster) return real_scandir(t.NativePath(dir), namelist, filter, compar);
  if (t.err) return Fail(t.err);
  return ScandirCluster(t, namelist, filter, compar);
}

int scandir64(const char* dir, struct dirent64*** namelist, int (*filter)(const struct dirent64*),
              int (*compar)(const struct dirent64**, const struct dirent64**)) {
  char buf[kMaxPathBytes];
  Target t = Resolve(dir, buf, sizeof buf);
  ONEBOX_REAL(scandir64);
  if (!t.cluster) return real_scandir64(t.NativePath(dir), namelist, filter, compar);
  if (t.err) return Fail(t.err);
  return ScandirCluster(t, namelist, filter, compar);
}

int glob(const char* pattern, int flags, int (*errfunc)(const char*, int), glob_t* g) {
  ONEBOX_REAL(glob);
  if (!(flags & GLOB_ALTDIRFUNC) && ClusterPattern(pattern)) {
    UseShimDirFuncs(g);
    flags |= GLOB_ALTDIRFUNC;
  }
  return real_glob(pattern, flags, errfunc, g);
}

int glob64(const char* pattern, int flags, int (*errfunc)(const char*, int), glob64_t* g) {
  ONEBOX_REAL(glob64);
  if (!(flags & GLOB_ALTDIRFUNC) && ClusterPattern(pattern)) {
    UseShimDirFuncs(g);
    flags |= GLOB_ALTDIRFUNC;
  }
  return real_glob64(pattern, flags, errfunc, g);
}

int nftw(const char* dir, int (*fn)(const char*, const struct stat*, int, struct FTW*), int nopenfd, int flags) {
  WalkScope scope;
  walk_fn = fn;
  walk_fn64 = nullptr;
  walk_ftw = nullptr;
  int r = WalkCluster(dir, nopenfd, flags);
  if (r != -2) return r;
  ONEBOX_REAL(nftw);
  return real_nftw(dir, fn, nopenfd, flags);
}

int nftw64(const char* dir, int (*fn)(const char*, const struct stat64*, int, struct FTW*), int nopenfd,
           int flags) {
  WalkScope scope;
  walk_fn = nullptr;
  walk_fn64 = fn;
  walk_ftw = nullptr;
  int r = WalkCluster(dir, nopenfd, flags);
  if (r != -2) return r;
  ONEBOX_REAL(nftw64);
  return real_nftw64(dir, fn, nopenfd, flags);
}

int ftw(const char* dir, int (*fn)(const char*, const struct stat*, int), int nopenfd) {
  WalkScope scope;
  walk_fn = nullptr;
  walk_fn64 = nullptr;
  walk_ftw = fn;
  int r = WalkCluster(dir, nopenfd, 0);
  if (r != -2) return r;
  ONEBOX_REAL(ftw);
  return real_ftw(dir, fn, nopenfd);
}

int ftw64(const char* dir, int (*fn)(const char*, const struct stat64*, int), int nopenfd) {
  WalkScope scope;
  walk_fn = nullptr;
  walk_fn64 = nullptr;
  walk_ftw = reinterpret_cast<int (*)(const char*, const struct stat*, int)>(fn);
  int r = WalkCluster(dir, nopenfd, 0);
  if (r != -2) return r;
  ONEBOX_REAL(ftw64);
  return real_ftw64(dir, fn, nopenfd);
}

#pragma GCC visibility pop
}  // extern "C"
