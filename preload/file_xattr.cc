// Interposed: the extended attribute family (get, set, list, remove; the l*
// variants do not follow a final symlink, the f* ones act on a descriptor).
// A cluster path's attributes are those of its file in the view, reached
// through an O_PATH fd's /proc link; the agent records and replicates them
// (nodeagent/view/file_xattrs.h). The agent's own marks on view files
// (user.onebox.*: a stub's, a placement's) are not the program's: lists
// leave them out, a read of one finds nothing (ENODATA), and setting or
// removing one is refused (EPERM), so that cp -a or rsync -X neither copy
// nor forge them: on cluster paths, and on any descriptor (a file that is
// not in a view has none). Other paths (the view's own, /proc/self/fd
// links) are the kernel's, as for every call of the shim.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "naming/cluster_path.h"
#include "preload/shim.h"
#include "proto/state_page.h"

using namespace onebox;
using namespace onebox::shim;

namespace {

// Runs fn(proc_path) on the cluster file (a final symlink followed unless
// nofollow). With nofollow on a symlink, on_symlink() answers instead: Linux
// keeps no user attributes on symlinks (a read finds none, ENODATA; a set or
// a removal is refused, EPERM), and /proc links cannot name the link.
template <class Fn, class OnSymlink>
ssize_t WithFile(const Target& t, bool nofollow, Fn fn, OnSymlink on_symlink) {
  int fd = OpenInView(t, O_PATH | O_CLOEXEC | (nofollow ? O_NOFOLLOW : 0), 0);
  if (fd < 0) return -1;
  struct stat st;
  ssize_t r;
  if (nofollow && fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
    r = on_symlink();
  } else {
    char link[kFdLinkBytes];
    FdLink(link, fd);
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

bool IsAgentMark(std::string_view name) { return name.starts_with(kAgentMarkPrefix); }
// (An unreadable name is no mark: libc's call says EFAULT.)
bool IsAgentMark(const char* name) { return name != nullptr && MayReadPage(name) && IsAgentMark(std::string_view(name)); }

// Compacts a list of NUL-terminated names (n bytes), leaving the agent's
// marks out; returns the new length.
ssize_t DropAgentMarks(char* list, ssize_t n) {
  ssize_t kept = 0;
  for (ssize_t at = 0; at < n;) {
    const char* name = list + at;
    size_t len = strnlen(name, static_cast<size_t>(n - at));
    size_t with_nul = len + (at + static_cast<ssize_t>(len) < n ? 1 : 0);
    if (!IsAgentMark(std::string_view(name, len))) {
      memmove(list + kept, name, with_nul);
      kept += static_cast<ssize_t>(with_nul);
    }
    at += static_cast<ssize_t>(with_nul);
  }
  return kept;
}

// A list call without the agent's marks: list(buf, size) is the real call.
// The length a program is told (size 0), and whether its buffer is big
// enough, are for the list without them, so the whole list is read first
// when the caller's buffer cannot take it.
template <class List>
ssize_t ListWithoutMarks(List list, char* out, size_t size) {
  if (size > 0) {
    ssize_t n = list(out, size);
    if (n >= 0) return DropAgentMarks(out, n);
    if (errno != ERANGE) return -1;
  }
  for (int attempt = 0; attempt < 3; ++attempt) {  // the list may grow between the two calls
    ssize_t need = list(nullptr, 0);
    if (need <= 0) return need;
    char* whole = static_cast<char*>(malloc(static_cast<size_t>(need)));
    if (whole == nullptr) return Fail(ENOMEM);
    ssize_t n = list(whole, static_cast<size_t>(need));
    if (n < 0) {
      int err = errno;
      free(whole);
      if (err == ERANGE) continue;
      return Fail(err);
    }
    n = DropAgentMarks(whole, n);
    if (size > 0 && static_cast<size_t>(n) > size) {
      free(whole);
      return Fail(ERANGE);
    }
    if (size > 0) memcpy(out, whole, static_cast<size_t>(n));
    free(whole);
    return n;
  }
  return Fail(ERANGE);
}

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
    ONEBOX_XATTR_CALL(getxattr, false, real_getxattr(path, name, value, size),
                      IsAgentMark(name) ? NoData() : real_getxattr(proc, name, value, size), NoData)
ssize_t lgetxattr(const char* path, const char* name, void* value, size_t size)
    ONEBOX_XATTR_CALL(lgetxattr, true, real_lgetxattr(path, name, value, size),
                      IsAgentMark(name) ? NoData() : getxattr(proc, name, value, size), NoData)
ssize_t listxattr(const char* path, char* list, size_t size)
    ONEBOX_XATTR_CALL(listxattr, false, real_listxattr(path, list, size),
                      ListWithoutMarks([&](char* l, size_t s) { return real_listxattr(proc, l, s); }, list, size), Empty)
ssize_t llistxattr(const char* path, char* list, size_t size)
    ONEBOX_XATTR_CALL(llistxattr, true, real_llistxattr(path, list, size),
                      ListWithoutMarks([&](char* l, size_t s) { return listxattr(proc, l, s); }, list, size), Empty)
int setxattr(const char* path, const char* name, const void* value, size_t size, int flags)
    ONEBOX_XATTR_CALL(setxattr, false, real_setxattr(path, name, value, size, flags),
                      IsAgentMark(name) ? NotSupported() : real_setxattr(proc, name, value, size, flags), NotSupported)
int lsetxattr(const char* path, const char* name, const void* value, size_t size, int flags)
    ONEBOX_XATTR_CALL(lsetxattr, true, real_lsetxattr(path, name, value, size, flags),
                      IsAgentMark(name) ? NotSupported() : setxattr(proc, name, value, size, flags), NotSupported)
int removexattr(const char* path, const char* name)
    ONEBOX_XATTR_CALL(removexattr, false, real_removexattr(path, name),
                      IsAgentMark(name) ? NotSupported() : real_removexattr(proc, name), NoData)
int lremovexattr(const char* path, const char* name)
    ONEBOX_XATTR_CALL(lremovexattr, true, real_lremovexattr(path, name),
                      IsAgentMark(name) ? NotSupported() : removexattr(proc, name), NotSupported)

// On a descriptor: whether it is in a view would cost a readlink; a file
// elsewhere carries no agent mark, so the marks are hidden on every one (a
// bad fd still says EBADF first, as the kernel would).
ssize_t fgetxattr(int fd, const char* name, void* value, size_t size) {
  ONEBOX_REAL(fgetxattr);
  if (IsAgentMark(name)) return fcntl(fd, F_GETFD) < 0 ? -1 : NoData();
  return real_fgetxattr(fd, name, value, size);
}
ssize_t flistxattr(int fd, char* list, size_t size) {
  ONEBOX_REAL(flistxattr);
  return ListWithoutMarks([&](char* l, size_t s) { return real_flistxattr(fd, l, s); }, list, size);
}
int fsetxattr(int fd, const char* name, const void* value, size_t size, int flags) {
  ONEBOX_REAL(fsetxattr);
  if (IsAgentMark(name)) return fcntl(fd, F_GETFD) < 0 ? -1 : static_cast<int>(NotSupported());
  return real_fsetxattr(fd, name, value, size, flags);
}
int fremovexattr(int fd, const char* name) {
  ONEBOX_REAL(fremovexattr);
  if (IsAgentMark(name)) return fcntl(fd, F_GETFD) < 0 ? -1 : static_cast<int>(NotSupported());
  return real_fremovexattr(fd, name);
}

#pragma GCC visibility pop
}  // extern "C"
