// What the families of libonebox.so share: the real libc functions, the
// connection to the agent, and the resolution of a path the program named to
// a place in the agent's view. Internal to the shim (hidden symbols).
//
// A cluster path ROOT/a/b (ROOT = ONEBOX_ROOT, default /cluster) lives in the
// agent's view at VIEW/ROOT/a/b. The shim resolves it with
// openat2(view_fd, "ROOT/a/b", RESOLVE_IN_ROOT): the kernel treats VIEW as
// "/", so "..", absolute symlinks and magic links stay inside the view.
#pragma once

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "naming/cluster_path.h"  // kMaxPathBytes
#include "preload/libc_decls.h"  // every interposed function, so each wrapper is checked against it
#include "preload/native_path.h"

namespace onebox {
struct StatePage;
}

namespace onebox::shim {

// The next definition of a libc function (the real one), looked up once.
#define ONEBOX_REAL(name) \
  static auto* real_##name = reinterpret_cast<decltype(&::name)>(dlsym(RTLD_NEXT, #name))

// libc's syscall(), never ours: the shim's own system calls must not be
// routed through the interposed functions (they may hold the shim's locks).
long RealSyscall6(long number, long a, long b, long c, long d, long e);
template <class... Args>
long RealSyscall(long number, Args... args) {
  static_assert(sizeof...(Args) <= 5);
  long v[5] = {(long)(args)...};  // pointers and integers alike; the rest are 0
  return RealSyscall6(number, v[0], v[1], v[2], v[3], v[4]);
}

// Where a path leads.
struct Target {
  bool cluster = false;  // false: hand the call to libc unchanged
  int dirfd = -1;        // cluster: the view root fd, which the kernel treats as "/"
  const char* rel = nullptr;  // cluster: the path below the view root ("cluster/a/b")
  // A relative path whose cluster name is longer than PATH_MAX (the kernel
  // limits only the string a call gets): dirfd is the directory it is
  // relative to (AT_FDCWD or a descriptor in the view), rel the path as
  // given, looked up beneath dirfd. It has no "..", and no key for the agent.
  bool beneath = false;
  int err = 0;           // cluster, but unusable: the errno to fail with (ENOTCONN, ...)
  // Not cluster, but not the path as given either: a relative path from a cwd
  // in the cluster that leads out of it, as an absolute path for libc.
  const char* native = nullptr;
  // For libc: the path to use, with AT_FDCWD when it was rewritten.
  const char* NativePath(const char* given) const { return native ? native : given; }
  int NativeDirfd(int given) const { return native ? -100 /*AT_FDCWD*/ : given; }
  // The path ended in "/", "." or "..": it must name a directory (rel ends in "/").
  bool dir_only = false;
  // Its last component was "." (1) or ".." (2): calls on the last component
  // refuse it, each with its own errno (DotLastErrno).
  int dot_last = 0;
  // The cluster root itself (ROOT): like a mount point, it cannot be removed or renamed.
  bool IsRoot() const;
};

// NativeAtAGlance(path), the inlined first look of the hot entry points, and
// SurelyNative(dirfd, path), the exact check: preload/native_path.h.

// Classifies (dirfd, path) as a *at call would use it. buf holds rel.
Target Resolve(int dirfd, const char* path, char* buf, size_t cap);
inline Target Resolve(const char* path, char* buf, size_t cap) { return Resolve(-100 /*AT_FDCWD*/, path, buf, cap); }

// openat2 below the view root, confined to it. An open for reading or writing
// (not O_PATH, not O_TRUNC) of a stub waits until the agent has brought the
// file's content from another node.
int OpenInView(const Target& t, int flags, mode_t mode);
// Before an exclusive creation (O_CREAT|O_EXCL, mkdir) of t while other
// nodes are alive: wins the name from a majority of them. 0 or an errno.
// directory: for a mkdir.
int ClaimInCluster(const Target& t, bool directory);
// O_PATH open of a program or library to run: its content is brought first too.
int OpenProgramInView(const Target& t, int flags);
// openat2 with open()'s flags (masked as OpenInView does) and the given resolve flags.
int OpenWithResolve(int dirfd, const char* name, int flags, mode_t mode, uint64_t resolve);
// Splits t.rel at its last component: opens the parent (O_PATH) in the view
// and points *base at the last component. Returns the parent fd or -1 (errno).
int OpenParentInView(const Target& t, char* buf, size_t cap, const char** base);
// Runs fn(parent_fd, base) for the last component of a cluster path
// (OpenParentInView); the parent is closed after, errno kept.
template <class Fn>
int AtParent(const Target& t, Fn fn) {
  char buf[kMaxPathBytes + 2];  // "PARENT\0BASE\0", or ".\0BASE\0", of a path up to PATH_MAX
  const char* base = nullptr;
  int parent = OpenParentInView(t, buf, sizeof buf, &base);
  if (parent < 0) return -1;
  int r = fn(parent, base);
  int err = errno;
  close(parent);
  errno = err;
  return r;
}

// The symlink-free view (nodeagent/view/symlink_guard.h): while the agent's state
// page says the view holds no symlink, a lexically clean path below the view
// root cannot lead out of it, and one plain *at call on the view fd does what
// the confined lookup does. First look: may the call be tried? Second look,
// after it: does its answer stand (else: throw it away, take the slow path)?
struct SymlinkFree {
  const StatePage* page = nullptr;
  uint64_t epoch = 0;
};
bool SymlinkFreeView(SymlinkFree* ticket);
bool SymlinkFreeStill(const SymlinkFree& ticket);
// rel has no "", "." or ".." component and does not start with "/" (one
// trailing "/" allowed): from the view root it names a place in the view as
// long as no symlink is on the way.
bool LexicallyClean(const char* rel);
// symlink() of a cluster path: the agent's page says the view may hold a
// symlink when this returns 0 (else an errno to fail the call with). The
// symlink is made after it, and SymlinkMade said after that, whatever happened.
struct SymlinkAnnouncement {
  int lock_fd = -1;  // the view's kSymlinkLockFile, read-locked
  int fd = -1;       // the connection the announcement went on
  uint64_t token = 0;
  // Their identities: another thread may close them and reuse the numbers.
  dev_t lock_dev = 0, dev = 0;
  ino_t lock_ino = 0, ino = 0;
  int lock_slot = -1, slot = -1;  // where a forked child finds them to close
  SymlinkAnnouncement() = default;
  SymlinkAnnouncement(const SymlinkAnnouncement&) = delete;
  SymlinkAnnouncement& operator=(const SymlinkAnnouncement&) = delete;
  ~SymlinkAnnouncement();  // SymlinkMade, if not said yet (a cancelled thread unwinds through it)
};
int AnnounceSymlink(int view_fd, SymlinkAnnouncement* a);
void SymlinkMade(SymlinkAnnouncement* a);

// The prefix the view's real paths have in this process, "" when not
// connected: the view's absolute path, or "(unreachable)" when the agent sent
// the view as a detached mount (a program in another mount namespace).
std::string_view ViewRoot();
// The agent's own path for its view (it names the agent's Unix relays).
std::string_view AgentViewRoot();
// True when the view came as a detached mount: it has no path here.
bool ViewIsDetached();
// The /proc path of the calling thread's descriptor fd. /proc/thread-self,
// not /proc/self: a thread that unshared its descriptor table
// (unshare(CLONE_FILES)) has one of its own, and /proc/self/fd is the
// process's.
constexpr size_t kFdLinkBytes = 40;  // "/proc/thread-self/fd/" and up to 10 digits
template <size_t N>
void FdLink(char (&out)[N], int fd) {
  static_assert(N >= kFdLinkBytes);
  snprintf(out, N, "/proc/thread-self/fd/%d", fd);
}
// Whether the path link names the file fd names (two stats: not kcmp(2),
// which a seccomp filter may forbid).
bool NamesFd(const char* link, int fd);
// The /proc path of the calling thread's fd where a program sees the name
// (a program posix_spawn starts, a library dlopen opens, a Unix socket
// bound in the cluster): /proc/self/fd/N as natively named, unless that
// names another file or none, as it may in a thread whose descriptor table
// is its own (then FdLink's).
template <size_t N>
void SeenFdLink(char (&out)[N], int fd) {
  static_assert(N >= kFdLinkBytes);
  snprintf(out, N, "/proc/self/fd/%d", fd);
  if (!NamesFd(out, fd)) FdLink(out, fd);
}
// The real path of fd as ViewRoot() names the view (for a detached view,
// "(unreachable)/cluster/a" where the kernel says "/cluster/a"), NUL-ended
// in real; its length, or -1 (or 0) when the kernel names none.
ssize_t ViewLinkOf(int fd, char* real, size_t cap);
// False when the view is detached and dirfd/path (fstatat's) lies on another
// device: a cwd the kernel calls "(unreachable)/..." that is not the view.
bool InDetachedView(int dirfd, const char* path, int flags);
// Descriptors the shim opened in the view and handed to the program: a
// relative path against one of them is a cluster path, not left to the kernel
// (which would resolve ".." from the view's real location). Returns fd.
// flags: the open's; with O_SYNC or O_DSYNC every write on fd is published
// before it returns (file_write.cc).
int TrackViewFd(int fd, int flags = 0);
void ForgetFd(int fd);
// A descriptor's O_SYNC state for the write family (file_write.cc): sync, a
// file opened in the view with O_SYNC or O_DSYNC or a copy of such an fd (a
// mark that may outlive a close: check the fd's flags before trusting it);
// quiet, known not to be one; unknown, not seen opened or copied by the shim
// (inherited across exec, opened natively): its first write looks.
enum class SyncState { kUnknown, kQuiet, kSync };
SyncState SyncStateOf(int fd);
// True when a write on fd needs no look after it (quiet, or beyond the
// tracked numbers): the write family's one bit test.
bool WriteIsQuiet(int fd);
// Changes fd's state (not from a vfork child; a getpid only when it changes).
void SetSyncState(int fd, SyncState state);
void ForgetSyncMark(int fd);  // SetSyncState(fd, kQuiet)
// After a dup of from to to: the copy shares the open file and its O_SYNC.
void CopySyncState(int from, int to);
// After a successful kernel sync or O_SYNC write: if fd is a file in the
// view, the agent records it with a synced write and replicates it to its
// write quorum before this returns. 0, or -1 with errno (EIO, ENOTCONN).
// *in_view, if given, says whether fd is a file in the view at all.
int PublishIfInView(int fd, bool* in_view = nullptr);
// fd's path below the view root (pointing into real, which holds its real
// path), or nullptr when fd is no file in the view. deleted_ok: a file
// unlinked or replaced since it was opened answers the name it had.
const char* ViewRelPathOf(int fd, char* real, size_t cap, bool deleted_ok);

// Cluster-wide locks (file_lock.cc). fcntl's lock commands on fd: *handled
// false when fd is no cluster file (the kernel locks it alone). Otherwise
// fcntl's result, -1 with errno.
int ClusterFcntlLock(int fd, int cmd, void* arg, bool* handled);
inline bool IsLockCommand(int cmd) {
  return static_cast<unsigned>(cmd - F_GETLK) <= 2u || static_cast<unsigned>(cmd - F_OFD_GETLK) <= 2u;
}
// Files this process holds cluster POSIX locks on (0: close has nothing to look at).
extern std::atomic<int> posix_locked_files;
// close(fd) by a process holding cluster POSIX locks: the close (real_close),
// then, when fd was a descriptor of one of their files, the agent hears that
// they end (the kernel's rule: any close of the file by the process).
int CloseEndingPosixLocks(int fd, int (*real_close)(int));
// dup2/dup3 onto newfd closes it first: the path of newfd's file when this
// process holds POSIX locks there (looked at before the copy), then, once the
// copy is made, PosixLocksEnded(it) tells the agent.
std::string PosixLocksEndOnReplace(int newfd);
void PosixLocksEnded(const std::string& rel);
// A fork child holds none of its parent's POSIX locks.
void ForgetPosixLocksInChild();

// Real cwd inside the view: the program's cwd is in the cluster.
bool CwdInCluster();
void CwdChanged();
// The cwd's real path: in buf, or, longer than the kernel answers (PATH_MAX),
// in *deep, which glibc allocated (free it); nullptr with errno otherwise.
const char* RealCwd(char* buf, size_t cap, char** deep);
// The cluster name of the cwd whose real path is real (a pointer into it),
// or nullptr when the cwd is not in the view.
const char* ClusterNameOfCwd(const char* real);
// Held across fork() so that a child never inherits it locked.
void CwdLockForFork(bool lock);
// The shim's own descriptors: the program must not close them under us.
bool IsShimFd(int fd);
void ShimFdLost(int fd);
// The shim's own descriptors (-1 where none), for range closes.
std::array<int, 3> ShimFds();
// ForgetFd for every fd in [first, last].
void ForgetFds(unsigned first, unsigned last);

// Fails the call: sets errno, returns -1 (or nullptr via the caller).
inline int Fail(int err) {
  errno = err;
  return -1;
}

}  // namespace onebox::shim
