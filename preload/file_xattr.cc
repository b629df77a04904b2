// Interposed: the extended attribute family (get, set, list, remove; the l*
// variants do not follow a final symlink). A cluster path's attributes are
// those of its file in the view, reached through an O_PATH fd's /proc link.
// Attributes are local to the node: they are not recorded or replicated yet.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>

#include "naming/cluster_path.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace {

// Runs fn(proc_path) on the cluster file (a final symlink followed unless
// nofollow). With nofollow on a symlink, on_symlink() answers instead: Linux
// keeps no user attributes on symlinks, and /proc links cannot name the link.
template <class Fn, class OnSymlink>
ssize_t WithFile(const Target& t, bool nofollow, Fn fn, OnSymlink on_symlink) {
  int fd = OpenInView(t, O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0), 0);
  if (fd < 0) return -1;
  struct stat st;
  ssize_t r;
  if (nofollow && fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
    r = on_symlink();
  } else {
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    r = fn(link);
  }
  int err = errno;
  close(fd);
  errno = err;
  return r;
}

ssize_t NoData() { return Fail(ENODATA); }
ssize_t NotSupported() { return Fail(EPERM); }
ssize_t Empty() { return 0; }

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

#define ONEBOX_XATTR_CALL(name, nofollow, native_call, cluster_call, on_symlink) \
  {                                                                              \
    char buf[kMaxPathBytes];                                                     \
    Target t = Resolve(path, buf, sizeof buf);                                   \
    ONEBOX_REAL(name);                                                           \
    if (!t.cluster) {                                                            \
      path = t.NativePath(path);                                                 \
      return native_call;                                                        \
    }                                                                            \
    if (t.err) return Fail(t.err);                                               \
    return WithFile(t, nofollow, [&](const char* proc) { return cluster_call; }, on_symlink); \
  }

ssize_t getxattr(const char* path, const char* name, void* value, size_t size)
    ONEBOX_XATTR_CALL(getxattr, false, real_getxattr(path, name, value, size), real_getxattr(proc, name, value, size),
                      NoData)
ssize_t lgetxattr(const char* path, const char* name, void* value, size_t size)
    ONEBOX_XATTR_CALL(lgetxattr, true, real_lgetxattr(path, name, value, size), getxattr(proc, name, value, size),
                      NoData)
ssize_t listxattr(const char* path, char* list, size_t size)
    ONEBOX_XATTR_CALL(listxattr, false, real_listxattr(path, list, size), real_listxattr(proc, list, size), Empty)
ssize_t llistxattr(const char* path, char* list, size_t size)
    ONEBOX_XATTR_CALL(llistxattr, true, real_llistxattr(path, list, size), listxattr(proc, list, size), Empty)
int setxattr(const char* path, const char* name, const void* value, size_t size, int flags)
    ONEBOX_XATTR_CALL(setxattr, false, real_setxattr(path, name, value, size, flags),
                      real_setxattr(proc, name, value, size, flags), NotSupported)
int lsetxattr(const char* path, const char* name, const void* value, size_t size, int flags)
    ONEBOX_XATTR_CALL(lsetxattr, true, real_lsetxattr(path, name, value, size, flags),
                      setxattr(proc, name, value, size, flags), NotSupported)
int removexattr(const char* path, const char* name)
    ONEBOX_XATTR_CALL(removexattr, false, real_removexattr(path, name), real_removexattr(proc, name), NoData)
int lremovexattr(const char* path, const char* name)
    ONEBOX_XATTR_CALL(lremovexattr, true, real_lremovexattr(path, name), removexattr(proc, name), NoData)

#pragma GCC visibility pop
}  // extern "C"
