// Path resolution for every family: which calls concern the cluster, and where
// in the agent's view they land. Also the cwd: a chdir into the cluster is a
// real chdir into the view (so children inherit it), and relative paths from
// there are resolved as cluster paths, never by the kernel from the view's
// real location.
#include <dlfcn.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <emmintrin.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "naming/cluster_path.h"
#include "proto/state_page.h"
#include "preload/link.h"
#include "preload/shim.h"

namespace onebox::shim {

constinit HotPath hot_path{"/cluster"};

void ResolveHotReals() {
  hot_path.openat.store(reinterpret_cast<decltype(&::openat)>(dlsym(RTLD_NEXT, "openat")), std::memory_order_relaxed);
  hot_path.fstatat.store(reinterpret_cast<decltype(&::fstatat)>(dlsym(RTLD_NEXT, "fstatat")),
                         std::memory_order_relaxed);
  hot_path.close.store(reinterpret_cast<decltype(&::close)>(dlsym(RTLD_NEXT, "close")), std::memory_order_relaxed);
  hot_path.fcntl.store(reinterpret_cast<decltype(&::fcntl)>(dlsym(RTLD_NEXT, "fcntl")), std::memory_order_relaxed);
  hot_path.fcntl64.store(reinterpret_cast<decltype(&::fcntl64)>(dlsym(RTLD_NEXT, "fcntl64")),
                         std::memory_order_relaxed);
}

namespace {

// One bit per descriptor the shim opened in the view (up to 65536).
constexpr int kTrackedFds = 1 << 16;
std::atomic<uint64_t> view_fds[kTrackedFds / 64];
// A descriptor's O_SYNC state, for the write family (file_write.cc), in two
// bits: sync, opened O_SYNC or O_DSYNC in the view (or a copy of such an fd:
// every write is a durability point); quiet, known not to be (a write pays
// one bit test); neither, not known yet: a number the shim has not seen
// opened or copied since this program started (an fd inherited across exec,
// or one opened natively), whose first write asks the kernel for its flags.
// A number keeps its state over a close: the only ways to a sync fd the shim
// does not see made are inheritance (at start, before any state) and those
// it does not cover (SCM_RIGHTS, raw system calls).
std::atomic<uint64_t> sync_fds[kTrackedFds / 64];
std::atomic<uint64_t> quiet_fds[kTrackedFds / 64];

bool Bit(const std::atomic<uint64_t>* bits, int fd) {
  return (bits[fd / 64].load(std::memory_order_relaxed) >> (fd % 64)) & 1;
}
void SetBit(std::atomic<uint64_t>* bits, int fd, bool on) {
  uint64_t bit = uint64_t{1} << (fd % 64);
  if (on) bits[fd / 64].fetch_or(bit, std::memory_order_relaxed);
  else bits[fd / 64].fetch_and(~bit, std::memory_order_relaxed);
}

bool IsTracked(int fd) {
  return fd >= 0 && fd < kTrackedFds && (view_fds[fd / 64].load(std::memory_order_relaxed) >> (fd % 64)) & 1;
}

// The program's cwd as it sees it, when in the cluster. Readers take no lock
// (a cluster call may come from a signal handler or a forked child): chdir
// writes the inactive one of two states and then publishes it by bumping the
// generation; a reader that sees the generation move copies again.
struct CwdState {
  bool in_cluster = false;
  char path[kMaxPathBytes] = "/";
};
CwdState cwd_states[2];
std::atomic<unsigned> cwd_gen{0};
std::mutex cwd_write_mu;  // writers (chdir, fchdir) only

// Fills t for the normalized absolute path norm (length n), if it is in the cluster.
Target FromAbsolute(const char* norm, size_t n, char* buf, size_t cap) {
  Target t;
  char rel[kMaxPathBytes];
  if (!Root().Relative(std::string_view(norm, n), rel, sizeof rel)) return t;
  t.cluster = true;
  // Below the view root: ROOT without its leading "/", then the rest.
  std::string_view root = Root().root().substr(1);
  size_t rl = strlen(rel);
  if (root.size() + 1 + rl + 1 > cap) {
    t.err = ENAMETOOLONG;
    return t;
  }
  memcpy(buf, root.data(), root.size());
  size_t len = root.size();
  if (rl > 0) {
    buf[len++] = '/';
    memcpy(buf + len, rel, rl);
    len += rl;
  }
  buf[len] = '\0';
  t.rel = buf;
  t.dirfd = ViewFd();
  if (t.dirfd < 0) t.err = errno;
  return t;
}

// Whether a relative path has no ".." component (it cannot climb above the
// directory it starts from).
bool StaysBeneath(std::string_view path) {
  for (size_t from = 0; from <= path.size();) {
    size_t end = path.find('/', from);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(from, end - from) == "..") return false;
    from = end + 1;
  }
  return true;
}

}  // namespace

int TrackViewFd(int fd, int flags) {
  if (fd < 0 || fd >= kTrackedFds) return fd;
  view_fds[fd / 64].fetch_or(uint64_t{1} << (fd % 64), std::memory_order_relaxed);
  SetSyncState(fd, (flags & O_DSYNC) ? SyncState::kSync : SyncState::kQuiet);  // O_SYNC includes O_DSYNC
  return fd;
}

SyncState SyncStateOf(int fd) {
  if (fd < 0 || fd >= kTrackedFds) return SyncState::kQuiet;  // not tracked: never published on write
  return Bit(sync_fds, fd) ? SyncState::kSync : Bit(quiet_fds, fd) ? SyncState::kQuiet : SyncState::kUnknown;
}

bool WriteIsQuiet(int fd) { return fd < 0 || fd >= kTrackedFds || Bit(quiet_fds, fd); }

void SetSyncState(int fd, SyncState state) {
  // A vfork child's fd N is not its parent's: InOwnerProcess (a getpid) only
  // when the state changes.
  if (fd < 0 || fd >= kTrackedFds || SyncStateOf(fd) == state || !InOwnerProcess()) return;
  SetBit(sync_fds, fd, state == SyncState::kSync);
  SetBit(quiet_fds, fd, state == SyncState::kQuiet);
}

void ForgetSyncMark(int fd) { SetSyncState(fd, SyncState::kQuiet); }

void CopySyncState(int from, int to) { SetSyncState(to, SyncStateOf(from)); }

void ForgetFd(int fd) {  // on every close: a plain load unless the fd is tracked
  if (IsTracked(fd) && InOwnerProcess()) {  // a vfork child's closes are not the parent's
    view_fds[fd / 64].fetch_and(~(uint64_t{1} << (fd % 64)), std::memory_order_relaxed);
    ForgetSyncMark(fd);
  }
}

void ForgetFds(unsigned first, unsigned last) {
  for (unsigned fd = first; fd <= last && fd < static_cast<unsigned>(kTrackedFds); ++fd) {
    if (fd % 64 == 0 && fd + 63 <= last) {
      view_fds[fd / 64].store(0, std::memory_order_relaxed);
      sync_fds[fd / 64].store(0, std::memory_order_relaxed);
      fd += 63;
    } else {
      ForgetFd(static_cast<int>(fd));
    }
  }
}

// Whether an absolute path may normalize to something other than itself
// ("/." or "//" in it): one pass, for the paths that fail the prefix test.
// It runs on every native call with an absolute path (bench P1), so it looks
// at 16 bytes at a time; aligned loads never reach into a page past the
// string's end.
bool MayNormalizeElsewhere(const char* p) {
  const __m128i slash = _mm_set1_epi8('/'), dot = _mm_set1_epi8('.'), nul = _mm_setzero_si128();
  const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
  const char* block = reinterpret_cast<const char*>(addr & ~uintptr_t{15});
  unsigned before = ~(~0u << (addr & 15));  // the block's bytes before p
  unsigned carry = 0;                       // the last block ended with '/'
  for (;; block += 16, before = 0) {
    __m128i v = _mm_load_si128(reinterpret_cast<const __m128i*>(block));
    unsigned s = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, slash))) & ~before;
    unsigned d = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, dot))) & ~before;
    unsigned z = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, nul))) & ~before;
    unsigned in_string = z ? (z & (0u - z)) - 1 : 0xffffu;  // bytes before the NUL
    if ((((s << 1) | carry) & (s | d) & in_string) != 0) return true;  // "/." or "//"
    if (z) return false;
    carry = (s >> 15) & 1;
  }
}

// The cluster path of a tracked descriptor (written to out), from its real
// path; false when it is not in the view after all (a stale mark: glibc's
// closedir closes without our close()), or, with errno ENAMETOOLONG, when its
// real path is longer than PATH_MAX.
bool ClusterPathOfFd(int fd, char* out, size_t cap) {
  char real[kMaxPathBytes];
  ssize_t n = ViewLinkOf(fd, real, sizeof real);
  if ((n < 0 && errno == ENAMETOOLONG) || n >= static_cast<ssize_t>(sizeof real) - 1) {
    errno = ENAMETOOLONG;
    return false;
  }
  std::string_view view = ViewRoot();
  if (n <= 0 || view.empty() || static_cast<size_t>(n) <= view.size() ||
      memcmp(real, view.data(), view.size()) != 0 || real[view.size()] != '/') {
    ForgetFd(fd);
    return false;
  }
  size_t len = static_cast<size_t>(n) - view.size();
  if (len + 1 > cap) return false;
  memcpy(out, real + view.size(), len);
  out[len] = '\0';
  return true;
}

bool CwdInCluster() { return cwd_states[cwd_gen.load(std::memory_order_acquire) & 1].in_cluster; }

void CwdLockForFork(bool lock) {
  if (lock) cwd_write_mu.lock();
  else cwd_write_mu.unlock();
}

const char* RealCwd(char* buf, size_t cap, char** deep) {
  *deep = nullptr;
  if (RealSyscall(SYS_getcwd, buf, cap) > 0) return buf;
  if (errno != ENAMETOOLONG) return nullptr;
  // Longer than the kernel's page: glibc's own getcwd walks up by "..".
  // (It allocates: only in a cwd this deep.)
  ONEBOX_REAL(getcwd);
  *deep = real_getcwd(nullptr, 0);
  return *deep;
}

const char* ClusterNameOfCwd(const char* real) {
  std::string_view view = ViewRoot();
  std::string_view cwd(real);
  if (view.empty() || cwd.size() <= view.size() || cwd.compare(0, view.size(), view) != 0 || cwd[view.size()] != '/' ||
      !InDetachedView(AT_FDCWD, ".", 0))
    return nullptr;
  return real + view.size();
}

void CwdChanged() {
  int saved = errno;
  char buf[kMaxPathBytes];
  std::lock_guard lock(cwd_write_mu);
  unsigned next = cwd_gen.load(std::memory_order_relaxed) + 1;
  CwdState& state = cwd_states[next & 1];
  state.in_cluster = false;
  state.path[0] = '\0';
  char* deep = nullptr;
  if (const char* real = RealCwd(buf, sizeof buf, &deep); real != nullptr) {
    if (deep == nullptr) DiscoverViewRoot(real);
    if (const char* name = ClusterNameOfCwd(real); name != nullptr) {
      // A cluster name longer than PATH_MAX is not kept: paths from there are
      // looked up beneath the cwd itself (Resolve).
      if (size_t n = strlen(name); n < sizeof state.path) memcpy(state.path, name, n + 1);
      state.in_cluster = true;
    }
  }
  free(deep);
  cwd_gen.store(next, std::memory_order_release);
  errno = saved;
}

// The cwd's cluster name into out ("" when it is longer than PATH_MAX);
// false when the cwd is not in the cluster.
bool VirtualCwd(char* out, size_t cap) {
  for (int attempt = 0; attempt < 64; ++attempt) {
    unsigned g = cwd_gen.load(std::memory_order_acquire);
    const CwdState& state = cwd_states[g & 1];
    if (!state.in_cluster) return false;
    size_t n = strnlen(state.path, sizeof state.path);  // 0: none kept, longer than PATH_MAX
    if (n + 1 > cap) return false;
    memcpy(out, state.path, n);
    out[n] = '\0';
    std::atomic_thread_fence(std::memory_order_acquire);
    if (cwd_gen.load(std::memory_order_relaxed) == g) return true;
  }
  return false;
}

// Lexical normalization drops what the kernel gives meaning to at the end of
// a path: a trailing "/" (the entry must be a directory) and a final "." or
// ".." (which calls on the last component refuse). Note them on t, and put a
// trailing "/" back for lookups.
static void KeepLastComponentSemantics(std::string_view raw, Target* t, char* buf, size_t cap) {
  size_t end = raw.size();
  bool slash = end > 0 && raw[end - 1] == '/';
  while (end > 0 && raw[end - 1] == '/') --end;
  size_t start = end == 0 ? std::string_view::npos : raw.rfind('/', end - 1);
  size_t from = start == std::string_view::npos ? 0 : start + 1;
  std::string_view last = raw.substr(from, end - from);
  t->dot_last = last == "." ? 1 : last == ".." ? 2 : 0;
  t->dir_only = slash || t->dot_last;
  size_t len = strlen(buf);
  if (t->dir_only && len + 2 <= cap && len > 0 && buf[len - 1] != '/') {
    buf[len] = '/';
    buf[len + 1] = '\0';
  }
}

// The root's prefix test without measuring the path first: most native
// paths differ from the root within a byte or two.
bool HasRootPrefix(const char* path) {
  std::string_view root = Root().root();
  for (size_t i = 0; i < root.size(); ++i)
    if (path[i] != root[i]) return false;  // stops at path's NUL too
  return true;
}

bool SurelyNative(int dirfd, const char* path) {
  // NULL or unmapped (libc's call says EFAULT), or "".
  if (path == nullptr || !MayReadPage(path) || path[0] == '\0') return true;
  if (path[0] == '/') return !HasRootPrefix(path) && !MayNormalizeElsewhere(path);
  if (dirfd == AT_FDCWD) return !CwdInCluster();
  return !IsTracked(dirfd);
}

Target Resolve(int dirfd, const char* path, char* buf, size_t cap) {
  Target none;
  // NULL, or unmapped: libc's call says EFAULT.
  if (path == nullptr || !MayReadPage(path) || path[0] == '\0') return none;
  char norm[kMaxPathBytes];
  if (path[0] == '/') {
    // The fast path: most paths fail the prefix test and cost nothing more.
    std::string_view p(path);
    if (!Root().MaybeCluster(p) && !MayNormalizeElsewhere(path)) return none;
    size_t n = NormalizePath(p, norm, sizeof norm);
    if (n == 0) return none;
    Target t = FromAbsolute(norm, n, buf, cap);
    if (t.cluster && !t.err) KeepLastComponentSemantics(p, &t, buf, cap);
    if (!t.cluster && Root().Holds(p) && n + 1 <= cap) {
      // ROOT/.. and the like: out of the cluster through its root, which does
      // not exist natively; libc gets the normalized path.
      memcpy(buf, norm, n + 1);
      t.native = buf;
    }
    return t;
  }
  char cwd[kMaxPathBytes];
  bool named = true;  // false: a cwd in the cluster whose name is longer than PATH_MAX
  if (dirfd == AT_FDCWD) {
    if (!CwdInCluster() || !VirtualCwd(cwd, sizeof cwd)) return none;  // relative to a native cwd
    named = cwd[0] != '\0';
  } else if (!IsTracked(dirfd)) {
    return none;  // relative to a native directory fd
  } else if (!ClusterPathOfFd(dirfd, cwd, sizeof cwd)) {
    if (errno != ENAMETOOLONG) return none;  // a stale mark
    named = false;
  }
  size_t n = named ? JoinPath(cwd, path, norm, sizeof norm) : 0;
  Target t = n == 0 ? Target{} : FromAbsolute(norm, n, buf, cap);
  if (n == 0 || (t.cluster && t.rel == nullptr && t.err == ENAMETOOLONG)) {
    // The cluster name does not fit in PATH_MAX, though the path may (as it
    // can natively, from a deep cwd): looked up from the directory itself.
    // Climbing by ".." from a directory whose own name is that long is left
    // to the kernel, as it always was: it may lead out of the view.
    const bool stays = StaysBeneath(path);
    if (!named && !stays) return none;
    t = Target{};
    t.cluster = true;
    size_t len = strlen(path);
    if (len + 1 > cap || !stays) {
      t.err = ENAMETOOLONG;
      return t;
    }
    memcpy(buf, path, len + 1);
    t.dirfd = dirfd;
    t.rel = buf;
    t.beneath = true;
  }
  if (t.cluster && !t.err) KeepLastComponentSemantics(path, &t, buf, cap);
  if (!t.cluster) {
    // Out of the cluster from a cwd inside it ("../../etc"): the kernel would
    // resolve it from the view's real location, so hand libc the absolute path.
    if (n + 1 > cap) {
      t.cluster = true;
      t.err = ENAMETOOLONG;
      return t;
    }
    memcpy(buf, norm, n + 1);
    t.native = buf;
  }
  return t;
}

bool Target::IsRoot() const {
  if (!cluster || rel == nullptr || beneath) return false;
  std::string_view r(rel);
  while (r.size() > 1 && r.back() == '/') r.remove_suffix(1);  // "ROOT/" is the root too
  return Root().root().substr(1) == r;
}

int OpenWithResolve(int dirfd, const char* name, int flags, mode_t mode, uint64_t resolve) {
  open_how how{};
  // openat2 refuses flags open() ignores; keep the ones open() knows.
  constexpr int kValid = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC |
                         FASYNC | O_DIRECT | O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC |
                         O_PATH | O_TMPFILE | O_SYNC;
  how.flags = static_cast<uint64_t>(flags & kValid);
  // open() ignores the flags O_PATH does not use; openat2 refuses them.
  if (flags & O_PATH) how.flags &= O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  else if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) how.mode = mode & 07777;
  how.resolve = resolve;
  for (int attempt = 0;; ++attempt) {
    long fd = RealSyscall(SYS_openat2, dirfd, name, &how, sizeof how);
    // EAGAIN: a concurrent rename (anywhere on the machine) raced with ".."
    // resolution; the kernel asks to retry. Under a storm of renames a few
    // tries are not enough (seen under a parallel test run): yield, go on.
    if (fd < 0 && errno == EAGAIN && attempt < 200) {
      if (attempt >= 8) sched_yield();
      continue;
    }
    return static_cast<int>(fd);
  }
}

namespace {

// fd is open on a cluster file. If it is a stub (its content is on other
// nodes), asks the agent to bring the content and closes fd: 1 means open
// again, -1 failed (errno). 0: not a stub, fd kept.
int BringContent(int fd, bool o_path) {
  char proc[kFdLinkBytes];
  FdLink(proc, fd);
  long marked = o_path ? RealSyscall(SYS_getxattr, proc, kStubXattr, nullptr, 0)
                       : RealSyscall(SYS_fgetxattr, fd, kStubXattr, nullptr, 0);
  // No mark: whole content here. Any other answer (EACCES, ...) is for the agent to judge.
  if (marked < 0 && (errno == ENODATA || errno == ENOTSUP)) return 0;
  // The agent names files without symlinks: ask by where fd really is.
  char real[kMaxPathBytes];
  long n = ViewLinkOf(fd, real, sizeof real);
  RealSyscall(SYS_close, fd);
  static constexpr char kDeleted[] = " (deleted)";
  if (n >= static_cast<long>(sizeof kDeleted) - 1 &&
      memcmp(real + n - (sizeof kDeleted - 1), kDeleted, sizeof kDeleted - 1) == 0)
    return 1;  // replaced meanwhile (another process's hydration): open again
  std::string_view view = ViewRoot();
  if (n <= 0 || static_cast<size_t>(n) <= view.size() + 1 || memcmp(real, view.data(), view.size()) != 0 ||
      real[view.size()] != '/')
    return Fail(EIO);
  real[n] = '\0';
  // A vfork child shares the parent's memory: no agent conversation from it.
  if (!InOwnerProcess()) return Fail(EIO);
  int err = Hydrate(real + view.size() + 1);
  return err == 0 ? 1 : Fail(err);
}

}  // namespace

namespace {

// Why a create of t cannot be made: ENOENT or ENOTDIR when its parent
// directory is not there, as the kernel's call would fail (the same
// confined lookup); 0 otherwise.
int NoParentInView(const Target& t) {
  char buf[kMaxPathBytes];
  const char* base;
  int saved = errno;
  int parent = OpenParentInView(t, buf, sizeof buf, &base);
  int err = parent < 0 && (errno == ENOENT || errno == ENOTDIR) ? errno : 0;
  if (parent >= 0) RealSyscall(SYS_close, parent);
  errno = saved;
  return err;
}

}  // namespace

int ClaimInCluster(const Target& t, bool directory) {
  if (!MayHavePeers() || !InOwnerProcess()) return 0;  // alone (or a vfork child): the kernel decides
  // There already (mkdir -p over existing directories): the kernel says EEXIST.
  struct stat st;
  int saved_errno = errno;
  if (RealSyscall(SYS_newfstatat, t.dirfd, t.rel, &st, AT_SYMLINK_NOFOLLOW) == 0) return 0;
  errno = saved_errno;
  if (t.beneath) return ENAMETOOLONG;  // no name to claim it by: longer than the agent takes
  char key[kMaxPathBytes];
  size_t len = strlen(t.rel);
  while (len > 1 && t.rel[len - 1] == '/') --len;
  if (len >= sizeof key) return ENAMETOOLONG;
  memcpy(key, t.rel, len);
  key[len] = '\0';
  int saved = errno;
  int err = ClaimAtOnce(key, directory);
  // Not decided here: a vote with the other nodes. Only for a call that can
  // make the name: with something other than a directory in the way the
  // call fails as the kernel's would (ENOTDIR), never reaching the kernel.
  // With no directory in the view, the agent says whether the cluster has
  // one that is not in place here yet (it waits for it, then votes) or
  // none (ENOENT, with no vote: git tries each object's file in its
  // directory objects/xx first and makes the directory on ENOENT).
  if (err < 0) {
    err = NoParentInView(t);
    if (err == 0 || err == ENOENT) err = ClaimByVote(key, directory);
  }
  errno = saved;
  return err;
}

namespace {

// openat2 of t below the view root, never out of it. While the view holds no
// symlink (the state page's word: only a hint here), first without following
// any: from the view root, a lexically clean path walked without symlinks
// stays in the view, and RESOLVE_NO_SYMLINKS skips the check RESOLVE_IN_ROOT
// makes at the end of every lookup (about 0.2 us of an open). A symlink on
// the way (one made meanwhile) fails that lookup with ELOOP before anything
// is opened or created, and the confined lookup answers.
// A path from another directory (t.beneath) stays beneath it: a symlink or
// ".." out of it, which only its too long cluster name could follow, gives
// ENAMETOOLONG, as the call did before there was a way to look it up.
int OpenConfined(const Target& t, int flags, mode_t mode) {
  SymlinkFree ticket;
  if (SymlinkFreeView(&ticket) && LexicallyClean(t.rel)) {
    int saved = errno;
    int fd = OpenWithResolve(t.dirfd, t.rel, flags, mode, RESOLVE_NO_SYMLINKS);
    if (fd >= 0 || errno != ELOOP) return fd;
    errno = saved;
  }
  if (!t.beneath) return OpenWithResolve(t.dirfd, t.rel, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
  int fd = OpenWithResolve(t.dirfd, t.rel, flags, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
  if (fd < 0 && errno == EXDEV) errno = ENAMETOOLONG;
  return fd;
}

// What an exclusive create that the agent refused after the kernel made it
// leaves: nothing (the entry made, if it is still the one fd opened, goes).
void UndoCreate(const Target& t, int fd) {
  struct stat made;
  const bool known = RealSyscall(SYS_fstat, fd, &made) == 0;
  RealSyscall(SYS_close, fd);
  if (!known) return;
  AtParent(t, [&](int parent, const char* base) {
    struct stat now;
    if (RealSyscall(SYS_newfstatat, parent, base, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == made.st_dev &&
        now.st_ino == made.st_ino)
      RealSyscall(SYS_unlinkat, parent, base, 0);
    return 0;
  });
}

// Returned by CreateInSlot when it made nothing and the create goes on as before.
constexpr int kNotInSlot = -2;
// The kernel's signal set (rt_sigprocmask's size), the first bytes of glibc's.
constexpr size_t kKernelSigsetBytes = 8;

// An exclusive create (O_CREAT|O_EXCL) in a directory whose create slot
// this node's agent keeps in the state page (proto/state_page.h): the node
// holds the directory's lease, so the kernel alone decides, with no round
// trip to the agent. The path is walked with no symlink on it, so that the
// directory the kernel creates in is the one the slot names by its key.
// kNotInSlot when no slot names the directory or a symlink is on the way
// (nothing made); else the kernel's descriptor, or -1 with its errno
// (EEXIST: the name is in this node's view). When the slot ended or ran
// out during the create, the agent decides after all; if the name went to
// another node (a recall that did not wait for this create: it was held up
// longer than CreateSlotTable::kCreatesWait), the create is undone.
int CreateInSlot(const Target& t, int flags, mode_t mode) {
  if (t.beneath || t.dir_only || !MayHavePeers() || !InOwnerProcess() || !LexicallyClean(t.rel)) return kNotInSlot;
  const size_t len = strlen(t.rel);
  if (len == 0 || t.rel[len - 1] == '/') return kNotInSlot;
  const char* slash = strrchr(t.rel, '/');
  const std::string_view dir(t.rel, slash != nullptr ? static_cast<size_t>(slash - t.rel) : 0);
  const CreateSlots* slots = CreateSlotsNow();
  unsigned slot = 0;
  if (CreateSlotBegin(slots, dir, &slot) == 0) return kNotInSlot;  // a first look: most directories have none
  // The look that counts and the create happen under a read lock on this
  // thread's byte of the directory's span of kCreateLockFile (threads and
  // forked children share the descriptor, so each takes its own byte): a
  // recall ends the slot, then waits for the span, so that what the create
  // made is in the view before the recall records it. Signals wait
  // meanwhile: a stop (SIGTSTP) or a handler's longjmp must not keep the
  // lock (SIGSTOP still can: consistency.md).
  const int saved = errno;
  const int lock = CreateLockFd();
  if (lock < 0) {
    errno = saved;
    return kNotInSlot;
  }
  // (Not the synchronous ones: a fault, or a seccomp trap a sandbox's
  // handler answers, must reach its handler, which a blocked one would not.)
  sigset_t all, mask;
  sigfillset(&all);
  for (int sync : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS}) sigdelset(&all, sync);
  RealSyscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, &mask, kKernelSigsetBytes);
  struct flock fl {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(CreateSlots::LockBase(dir) +
                                  static_cast<uint64_t>(RealSyscall(SYS_gettid)) % CreateSlots::kLockSpan);
  fl.l_len = 1;
  const bool locked = RealSyscall(SYS_fcntl, lock, F_OFD_SETLK, &fl) == 0;
  const uint64_t seq = locked ? CreateSlotBegin(slots, dir, &slot) : 0;
  int fd = kNotInSlot, open_err = 0;
  bool still = false;
  if (seq != 0) {
    fd = OpenWithResolve(t.dirfd, t.rel, flags, mode, RESOLVE_NO_SYMLINKS);
    open_err = errno;
    if (fd >= 0) still = CreateSlotStill(slots, slot, seq);
  }
  if (locked) {
    fl.l_type = F_UNLCK;
    RealSyscall(SYS_fcntl, lock, F_OFD_SETLK, &fl);
  }
  RealSyscall(SYS_rt_sigprocmask, SIG_SETMASK, &mask, nullptr, kKernelSigsetBytes);
  if (seq == 0 || (fd < 0 && open_err == ELOOP)) {
    errno = saved;
    return kNotInSlot;
  }
  if (fd < 0) return Fail(open_err);
  errno = saved;
  if (still) return fd;
  int err = ClaimAtOnce(t.rel, /*directory=*/false);
  if (err < 0) err = ClaimByVote(t.rel, /*directory=*/false);
  if (err == 0) {
    errno = saved;
    return fd;
  }
  UndoCreate(t, fd);
  return Fail(err);
}

// Opens t and, when the program will read what is in it, makes sure the
// content is here first (a file that came from another node may be a stub).
// An open that drops the content (O_TRUNC for writing) makes the file this
// node's own: its stub mark goes.
int OpenWithContent(const Target& t, int flags, mode_t mode, bool content) {
  if ((flags & O_CREAT) && (flags & O_EXCL)) {
    if (int fd = CreateInSlot(t, flags, mode); fd != kNotInSlot) return fd;
    if (int err = ClaimInCluster(t, /*directory=*/false); err != 0) return Fail(err);
  }
  for (int attempt = 0;; ++attempt) {
    int fd = OpenConfined(t, flags, mode);
    bool truncates = (flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY;
    if (fd < 0 || !MayBeStubs()) return fd;
    int saved = errno;
    if (truncates) {
      RealSyscall(SYS_fremovexattr, fd, kStubXattr);
      errno = saved;
      return fd;
    }
    if (!content) return fd;
    int r = BringContent(fd, flags & O_PATH);
    if (r < 0) return -1;
    errno = saved;
    if (r == 0) return fd;
    if (attempt == 2) return Fail(EIO);  // replaced by a stub again and again
  }
}

}  // namespace

int OpenInView(const Target& t, int flags, mode_t mode) {
  // O_PATH opens only name the file (stat and friends).
  return OpenWithContent(t, flags, mode, !(flags & (O_PATH | O_DIRECTORY)));
}

int OpenProgramInView(const Target& t, int flags) { return OpenWithContent(t, flags | O_PATH, 0, true); }

int OpenParentInView(const Target& t, char* buf, size_t cap, const char** base) {
  if (t.dot_last) return Fail(EINVAL);  // callers answer these first (DotLastErrno in file_dir.cc)
  size_t len = strlen(t.rel);
  while (len > 1 && t.rel[len - 1] == '/') --len;
  const char* slash = static_cast<const char*>(memrchr(t.rel, '/', len));
  Target parent = t;
  // buf holds "PARENT\0BASE\0" (the base without a trailing slash).
  size_t plen = slash == nullptr ? 0 : static_cast<size_t>(slash - t.rel);
  size_t boff = slash == nullptr ? 0 : plen + 1;
  if (plen + 2 + (len - boff) + 1 > cap) return Fail(ENAMETOOLONG);
  if (slash == nullptr) {
    memcpy(buf, ".", 2);
    plen = 1;
  } else {
    memcpy(buf, t.rel, plen);
    buf[plen] = '\0';
  }
  memcpy(buf + plen + 1, t.rel + boff, len - boff);
  buf[plen + 1 + (len - boff)] = '\0';
  parent.rel = buf;
  *base = buf + plen + 1;
  return OpenInView(parent, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
}

}  // namespace onebox::shim
