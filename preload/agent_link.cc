// The shim's connection to its agent: made on the first cluster call (Hello:
// which root, where the view is), checked for life at most every 10 ms (one
// non-blocking poll), remade when the agent comes back, dropped in a forked
// child, never recorded by a vfork child. Without an agent, cluster calls fail
// at once with ENOTCONN and the process says so on stderr once. fsync's
// Publish and open's Hydrate use a connection of their own. Hello's answer
// brings the agent's state page (a sealed memfd), mapped read-only.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "naming/cluster_path.h"
#include "proto/state_page.h"
#include "proto/shim_frame.h"
#include "onebox/v1/shim.pb-c.h"
#include "preload/link.h"
#include "preload/shim.h"

namespace onebox::shim {

void CloseInFlightInChild();  // below: the descriptors of other threads' symlink() calls

namespace {

// A missing agent is known at connect (refused, or no socket file): at once.
// A live agent answers Hello at once unless it is very busy: with a hundred
// `onebox run`s starting on two cores it took over 100 ms. So a process's
// first Hello waits long enough for a busy agent (costing only a stopped
// one); a reconnect, or a vfork child's Hello (it holds our lock while its
// parent waits), gives up sooner.
constexpr int kFirstHelloTimeoutMs = 2000;
constexpr int kTimeoutMs = 100;
// How long a request on the link (AskLinked) waits for its answer; other
// threads' cluster calls wait on mu meanwhile, so not long.
constexpr int kLinkAnswerTimeoutMs = 500;
bool said_hello = false;  // under mu: this process has had an answer to Hello

std::mutex mu;
// The Unix socket to the agent and the O_PATH of the view root (-1: none),
// kept on the hot paths' cache line: close() compares every fd with them.
int& link_fd = hot_path.link_fd;
int& view_fd = hot_path.view_fd;
// What link_fd and view_fd must still be: a program may close them and reuse
// the numbers, and then they are not ours to use or close.
struct FdId {
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const FdId&) const = default;
};
FdId link_id, view_id;
// The lock link (AskLock): a connection for lock calls, under its own mutex.
std::mutex lock_link_mu;
int lock_link_fd = -1;
FdId lock_link_id;
pid_t lock_link_pid = 0;
// The process the globals belong to. A vfork child shares our memory but not
// our descriptors: it must not record its own in the globals.
pid_t owner_pid = 0;
// The prefix real paths in the view have here (getcwd, /proc/self/fd): the
// view's path, or kDetachedRoot when the view came as a descriptor.
// view_len is stored last (release) and read first (acquire): whoever sees
// it sees view_root and the mode below as they were written.
char view_root[kMaxPathBytes] = "";
std::atomic<size_t> view_len{0};
// A program in another mount namespace (a pod that mounts only the socket
// and the shim) cannot open the view by the agent's path: the agent sends a
// detached copy of the view's mount instead (nodeagent/view/detached_view.h).
// The kernel names a cwd in it "(unreachable)/cluster/a" (not under our
// root) and an fd in it "/cluster/a" (from the top of its mount): both are
// named with this prefix (ViewLinkOf). Each process may hold its own copy
// (the agent makes one per ask, and children inherit their parent's cwd and
// fds), so the view's device, and the cluster root in an fd's name, tell
// the view's from the program's own.
constexpr std::string_view kDetachedRoot = "(unreachable)";
std::atomic<bool> view_detached{false};  // the view came as a detached mount
std::atomic<dev_t> view_dev{0};          // its device, when it did
// The agent's own path for its view (from Hello; the same as view_root
// unless detached): it names the agent's Unix relays.
char agent_view[kMaxPathBytes] = "";

// Records how real paths name the view here (root, shorter than
// view_root's buffer), the length last.
void SetViewRoot(std::string_view root, bool detached, dev_t dev) {
  view_dev = dev;
  view_detached = detached;
  memcpy(view_root, root.data(), root.size());
  view_root[root.size()] = '\0';
  view_len.store(root.size(), std::memory_order_release);
}
// The agent's `onebox` (the stand-in), from Hello: written under mu only
// when it changes, read by exec (preload/exec_place.cc).
char front_path[kMaxPathBytes] = "";
ClusterRoot cluster_root;
char socket_path[kMaxPathBytes] = ONEBOX_DEFAULT_AGENT_SOCKET;
std::atomic<bool> warned{false};
// The agent's state page; nullptr when the agent sent none we could trust.
std::atomic<const StatePage*> state_page{nullptr};
ino_t state_page_ino = 0;  // of its memfd (under mu)
std::atomic<const PortMaps*> port_maps{nullptr};  // in the same memfd, if the agent keeps them
std::atomic<const LockLeases*> lock_leases{nullptr};  // the same, after the port maps
std::atomic<const CreateSlots*> create_slots{nullptr};  // the same, after the lock leases
// The view's kCreateLockFile, at a high number, close-on-exec (CreateLockFd),
// and what it must still be (a program may close the number and reuse it).
std::atomic<int> create_lock_fd{-1};
std::atomic<dev_t> create_lock_dev{0};
std::atomic<ino_t> create_lock_ino{0};

// Our own close() guards the shim's fds and takes mu: call the real one here.
int RealClose(int fd) {
  ONEBOX_REAL(close);
  return real_close(fd);
}

// Moves fd to a high number (out of the way of programs that expect low ones).
int HighFd(int fd) {
  rlimit rl{};
  int floor = 100;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 1024) floor = 900;
  else if (rl.rlim_cur > 200) floor = static_cast<int>(rl.rlim_cur) - 100;
  int high = static_cast<int>(RealSyscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, floor));  // not our fcntl: no O_SYNC state
  if (high < 0) return fd;
  RealClose(fd);
  return high;
}

void Warn(const char* what, int err) {
  if (warned.exchange(true)) return;
  char msg[kMaxPathBytes + 256];
  int n = snprintf(msg, sizeof msg, "onebox: no agent at %s (%s: %s); calls under %.*s fail with ENOTCONN\n",
                   socket_path, what, strerror(err), static_cast<int>(cluster_root.root().size()),
                   cluster_root.root().data());
  if (n > 0) {
    RealSyscall(SYS_write, 2, msg, static_cast<size_t>(std::min<int>(n, sizeof msg - 1)));  // not ours: mu is held
  }
}

FdId IdOf(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return {};
  return {st.st_dev, st.st_ino};
}

void CloseIfOurs(int fd, const FdId& id) {
  if (fd >= 0 && IdOf(fd) == id) RealClose(fd);
}

void DropLocked() {
  CloseIfOurs(link_fd, link_id);
  link_fd = -1;
}

bool SendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads one frame. A descriptor sent with it (SCM_RIGHTS) goes to *fd_out
// when given, else is closed. interruptible: a signal that interrupts a
// read (one whose handler did not ask SA_RESTART) ends it, errno EINTR.
bool RecvFrame(int fd, std::string* body, int* fd_out = nullptr, bool interruptible = false) {
  char hdr[kShimFrameHeaderBytes];
  size_t got = 0;
  while (got < sizeof hdr) {
    iovec iov{hdr + got, sizeof hdr - got};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR && !interruptible) continue;
    if (n <= 0) return false;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
      int passed;
      memcpy(&passed, CMSG_DATA(cm), sizeof passed);
      if (fd_out != nullptr && *fd_out < 0) *fd_out = passed;
      else RealClose(passed);
    }
    got += static_cast<size_t>(n);
  }
  uint32_t len = DecodeShimFrameHeader(hdr);
  if (len > (1u << 20)) return false;  // no answer of the agent comes near this
  body->resize(len);
  got = 0;
  while (got < len) {
    ssize_t n = recv(fd, body->data() + got, len - got, 0);
    if (n < 0 && errno == EINTR && !interruptible) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

// One request on fd (framed as the agent frames them).
bool SendRequest(int fd, const Onebox__V1__ShimRequest& req) {
  size_t body_len = onebox__v1__shim_request__get_packed_size(&req);
  std::string frame;
  AppendShimFrameHeader(frame, static_cast<uint32_t>(body_len));
  frame.resize(kShimFrameHeaderBytes + body_len);
  onebox__v1__shim_request__pack(&req, reinterpret_cast<uint8_t*>(frame.data() + kShimFrameHeaderBytes));
  return SendAll(fd, frame);
}

// One request and its answer on fd. The answer is freed by the caller
// (onebox__v1__shim_response__free_unpacked); nullptr when the link failed.
Onebox__V1__ShimResponse* RoundTrip(int fd, const Onebox__V1__ShimRequest& req, int* fd_out = nullptr) {
  std::string answer;
  if (!SendRequest(fd, req) || !RecvFrame(fd, &answer, fd_out)) return nullptr;
  return onebox__v1__shim_response__unpack(nullptr, answer.size(), reinterpret_cast<const uint8_t*>(answer.data()));
}

// Maps the agent's state page (read-only) at our one place for it, if the
// memfd is what it must be: sealed so that nobody can shrink it under us or
// write it but the agent. Otherwise open() keeps asking the file itself.
void MapStatePage(int page_fd) {
  struct stat st;
  int seals = static_cast<int>(RealSyscall(SYS_fcntl, page_fd, F_GET_SEALS, 0));
  const size_t bytes = fstat(page_fd, &st) == 0 ? StatePageMapBytes(seals, st.st_size) : 0;
  if (bytes != 0 && state_page.load() != nullptr && st.st_ino == state_page_ino) {
    RealClose(page_fd);  // the page we have (a reconnect to the same agent)
    return;
  }
  void* map = bytes != 0 ? mmap(nullptr, bytes, PROT_READ, MAP_SHARED, page_fd, 0) : MAP_FAILED;
  RealClose(page_fd);
  StatePageParts parts;
  const StatePage* page = map != MAP_FAILED ? TrustedStatePage(map, bytes, &parts) : nullptr;
  if (page == nullptr) {
    if (map != MAP_FAILED) munmap(map, bytes);
    port_maps.store(nullptr);
    lock_leases.store(nullptr);
    create_slots.store(nullptr);
    state_page.store(nullptr);
    return;
  }
  // A new agent's page: another thread may still read the old one, which
  // stays mapped (100 KiB per agent restart seen).
  state_page_ino = st.st_ino;
  port_maps.store(parts.ports);
  lock_leases.store(parts.leases);
  create_slots.store(parts.creates);
  // Opened again for this agent (its view may be another); the old one is
  // left open, as the old page is left mapped: a thread may be using it.
  create_lock_fd.store(-1);
  state_page.store(page);
}

struct HelloAnswer {
  std::string view;   // the agent's path for its view
  std::string front;  // its `onebox` (the stand-in)
  FdId view_id;       // the view root's identity ({} from an older agent)
};

// Connects to the agent and, when hello_out is given, says Hello. On success
// *fd_out is the connected socket and *hello_out the answer; with map_page,
// the state page that came with the answer is mapped (never in a vfork child:
// its mappings would be the parent's). Only raw system calls here: the
// interposed functions may need mu, which the caller holds.
int Handshake(int* fd_out, HelloAnswer* hello_out, int timeout_ms, bool map_page = false) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (strlen(socket_path) >= sizeof sa.sun_path) return ENAMETOOLONG;
  memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  // libc's connect, never ours (socket.cc): the agent's socket may lie under
  // the cluster root, and resolving it would need this very connection.
  ONEBOX_REAL(connect);
  if (real_connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int err = errno;
    RealClose(fd);
    Warn("connect", err);
    return ENOTCONN;
  }
  fd = HighFd(fd);
  if (hello_out == nullptr) {
    *fd_out = fd;
    return 0;
  }
  char root[kMaxPathBytes];
  memcpy(root, cluster_root.root().data(), cluster_root.root().size());
  root[cluster_root.root().size()] = '\0';
  char exe[256] = "";
  long n = RealSyscall(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) exe[n] = '\0';
  Onebox__V1__HelloRequest hello = ONEBOX__V1__HELLO_REQUEST__INIT;
  hello.root = root;
  hello.program = exe;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.id = 1;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_HELLO;
  req.hello = &hello;
  int page_fd = -1;
  Onebox__V1__ShimResponse* resp = RoundTrip(fd, req, &page_fd);
  if (resp == nullptr || resp->op_case != ONEBOX__V1__SHIM_RESPONSE__OP_HELLO || resp->hello->view_root == nullptr) {
    int err = resp != nullptr && resp->err != 0 ? resp->err : EIO;
    if (resp != nullptr) onebox__v1__shim_response__free_unpacked(resp, nullptr);
    if (page_fd >= 0) RealClose(page_fd);
    RealClose(fd);
    Warn("hello", err);
    return ENOTCONN;
  }
  if (page_fd >= 0 && map_page && resp->hello->state_page) MapStatePage(page_fd);
  else if (page_fd >= 0) RealClose(page_fd);
  hello_out->view = resp->hello->view_root;
  if (resp->hello->front != nullptr) hello_out->front = resp->hello->front;
  hello_out->view_id = {static_cast<dev_t>(resp->hello->view_dev), static_cast<ino_t>(resp->hello->view_ino)};
  onebox__v1__shim_response__free_unpacked(resp, nullptr);
  *fd_out = fd;
  return 0;
}

int OpenView(const std::string& view) {
  return static_cast<int>(RealSyscall(SYS_openat, AT_FDCWD, view.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC, 0));
}

dev_t DevOf(int dirfd, const char* path, int flags) {
  struct stat st;
  if (RealSyscall(SYS_newfstatat, dirfd, path, &st, flags) != 0) return static_cast<dev_t>(-1);
  return st.st_dev;
}

// The kernel names a cwd outside our root "(unreachable)/a/b": writes the
// way up to the top of its mount ("../..": at the top, ".." stays there).
bool UpFromUnreachable(std::string_view cwd, char* up, size_t cap) {
  if (cwd.size() <= kDetachedRoot.size() || cwd.compare(0, kDetachedRoot.size(), kDetachedRoot) != 0 ||
      cwd[kDetachedRoot.size()] != '/')
    return false;
  size_t len = 0;
  for (char ch : cwd.substr(kDetachedRoot.size() + 1)) {
    if (ch != '/') continue;
    if (len + 3 + 3 > cap) return false;
    memcpy(up + len, "../", 3);
    len += 3;
  }
  if (len + 3 > cap) return false;
  memcpy(up + len, "..", 3);  // with the NUL
  return true;
}

// The top of the mount the cwd is in, if the cwd is outside our root and
// that top is want (any when want is {}); else -1.
int OpenUnreachableTop(std::string_view cwd, const FdId& want) {
  char up[kMaxPathBytes];
  if (!UpFromUnreachable(cwd, up, sizeof up)) return -1;
  int fd = static_cast<int>(RealSyscall(SYS_openat, AT_FDCWD, up, O_PATH | O_DIRECTORY | O_CLOEXEC, 0));
  if (fd >= 0 && want != FdId{} && IdOf(fd) != want) {
    RealClose(fd);
    return -1;
  }
  return fd;
}

int OpenDetachedFromCwd(const FdId& want) {
  char cwd[kMaxPathBytes];
  if (RealSyscall(SYS_getcwd, cwd, sizeof cwd) <= 0) return -1;
  return OpenUnreachableTop(cwd, want);
}

// The view for the agent that answered hello on link: opened by its path
// when that is the agent's view, else (another mount namespace) sent by the
// agent as a detached copy of its mount (*detached).
// Returns the O_PATH descriptor, or -1 with errno.
int OpenAgentView(int link, const HelloAnswer& hello, bool* detached) {
  *detached = false;
  int vfd = OpenView(hello.view);
  if (vfd >= 0 && (hello.view_id == FdId{} || IdOf(vfd) == hello.view_id)) return vfd;
  // Another mount namespace: no such directory there, or another one. Any
  // other failure (EACCES, EMFILE, ...) is this process's own: said as it is.
  if (vfd < 0 && errno != ENOENT && errno != ENOTDIR) return -1;
  if (vfd >= 0) RealClose(vfd);  // a directory of that name, but not the agent's view
  vfd = -1;
  if (hello.view_id == FdId{}) {  // an agent that cannot send it
    errno = ENOENT;
    return -1;
  }
  // A process that started with its cwd in a detached view keeps that copy
  // (another would be another mount, and the cwd would not be in it).
  if (view_detached && (vfd = OpenDetachedFromCwd(hello.view_id)) >= 0) {
    *detached = true;
    return vfd;
  }
  Onebox__V1__ShimViewRequest view = ONEBOX__V1__SHIM_VIEW_REQUEST__INIT;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.id = 2;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_VIEW;
  req.view = &view;
  Onebox__V1__ShimResponse* resp = RoundTrip(link, req, &vfd);
  int err = resp == nullptr ? EIO : resp->err != 0 ? resp->err : resp->op_case != ONEBOX__V1__SHIM_RESPONSE__OP_VIEW ? EIO : 0;
  if (err == 0 && (vfd < 0 || IdOf(vfd) != hello.view_id)) err = EIO;  // not the view it named
  *detached = err == 0;
  if (err != 0 && resp != nullptr && resp->message != nullptr && resp->message[0] != '\0' && !warned.exchange(true)) {
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "onebox: %s; calls under %.*s fail with ENOTCONN\n", resp->message,
                     static_cast<int>(cluster_root.root().size()), cluster_root.root().data());
    if (n > 0) RealSyscall(SYS_write, 2, msg, static_cast<size_t>(std::min<int>(n, sizeof msg - 1)));  // not ours: mu is held
  }
  if (resp != nullptr) onebox__v1__shim_response__free_unpacked(resp, nullptr);
  if (err != 0) {
    if (vfd >= 0) RealClose(vfd);
    errno = err;
    return -1;
  }
  return vfd;
}

// Connects and records the link and the view in the globals. Returns 0 or an errno.
int ConnectLocked() {
  int saved = errno;
  int fd = -1;
  HelloAnswer hello;
  int err = Handshake(&fd, &hello, said_hello ? kTimeoutMs : kFirstHelloTimeoutMs,
                      /*map_page=*/getpid() == owner_pid);
  if (err != 0) {
    errno = saved;
    return err;
  }
  said_hello = true;
  // From here the link carries only answers the agent gives at once
  // (AskLinked): wait for one as long as a busy agent may take.
  timeval tv{0, kLinkAnswerTimeoutMs * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const std::string& view = hello.view;
  if (view_fd < 0 || view != agent_view || (hello.view_id != FdId{} && hello.view_id != view_id)) {
    bool detached = false;
    int vfd = view.size() < sizeof view_root ? OpenAgentView(fd, hello, &detached) : -1;
    if (vfd < 0) {
      err = view.size() < sizeof view_root ? errno : ENAMETOOLONG;
      RealClose(fd);
      Warn("open view", err);
      errno = saved;
      return ENOTCONN;  // as the warning says: no view, no cluster
    }
    if (view_fd >= 0) CloseIfOurs(view_fd, view_id);
    view_fd = HighFd(vfd);
    view_id = IdOf(view_fd);
    SetViewRoot(detached ? kDetachedRoot : std::string_view(view), detached, hello.view_id.dev);
    memcpy(agent_view, view.c_str(), view.size() + 1);
  }
  const std::string& front = hello.front;
  if (front.size() < sizeof front_path && front != front_path) memcpy(front_path, front.c_str(), front.size() + 1);
  link_fd = fd;
  link_id = IdOf(link_fd);
  warned = false;  // a later outage is worth a line again
  errno = saved;
  return 0;
}

// fork() while another thread holds mu would leave the child's copy locked:
// hold it across the fork instead.
void BeforeFork() {
  CwdLockForFork(true);
  mu.lock();
  MayReadLockForFork(true);
}
void AfterForkInParent() {
  MayReadLockForFork(false);
  mu.unlock();
  CwdLockForFork(false);
}
void AfterForkInChild() {
  // The child shares the parent's socket: talking on it would mix both
  // conversations. Its first cluster call connects anew.
  if (link_fd >= 0) RealClose(link_fd);
  link_fd = -1;
  CloseInFlightInChild();  // another thread's symlink() under way is not ours
  ForgetPosixLocksInChild();
  new (&lock_link_mu) std::mutex();  // another thread may have held it at the fork
  CloseIfOurs(lock_link_fd, lock_link_id);  // the child's copy (unless the program reused the number)
  lock_link_fd = -1;
  // The child's own, opened at its first create under a slot: through the
  // parent's open file, a lock the child took would stay held while the
  // parent lives, though the child was killed in the middle of its create.
  CloseIfOurs(create_lock_fd.load(), FdId{create_lock_dev.load(), create_lock_ino.load()});
  create_lock_fd.store(-1);
  owner_pid = getpid();
  MayReadLockForFork(false);
  mu.unlock();
  CwdLockForFork(false);
}

__attribute__((constructor)) void Init() {
  if (const char* r = getenv("ONEBOX_ROOT"); r != nullptr && *r != '\0') {
    if (!cluster_root.Set(r)) {
      static const char kMsg[] = "onebox: ONEBOX_ROOT must be an absolute path other than /; using /cluster\n";
      [[maybe_unused]] ssize_t w = write(2, kMsg, sizeof kMsg - 1);
    }
    hot_path.SetRoot(cluster_root.root());
  }
  ResolveHotReals();  // after the root: the hot paths take the glance only from here on
  if (const char* s = getenv("ONEBOX_SOCKET"); s != nullptr && *s != '\0' && strlen(s) < sizeof socket_path)
    memcpy(socket_path, s, strlen(s) + 1);
  owner_pid = getpid();
  pthread_atfork(BeforeFork, AfterForkInParent, AfterForkInChild);
  CwdChanged();
}

}  // namespace

const ClusterRoot& Root() { return cluster_root; }

// How often a live link is checked: a dead agent is noticed within this.
constexpr int64_t kLivenessCheckNs = 10'000'000;
int64_t last_check_ns = 0;

// How long symlink() waits for the agent to unlock kSymlinkLockFile.
constexpr int64_t kSymlinkLockWaitNs = 2'000'000'000;

int64_t CoarseNowNs() {  // from the vDSO: no system call
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Connected (or reconnected) and alive; 0 or an errno. Holds mu.
int EnsureLinkLocked() {
  if (link_fd >= 0) {
    int64_t now = CoarseNowNs();
    if (now - last_check_ns >= kLivenessCheckNs) {
      last_check_ns = now;
      // The agent never speaks first: anything readable is its goodbye (EOF).
      pollfd p{link_fd, POLLIN, 0};
      if (poll(&p, 1, 0) != 0) DropLocked();
      // The view fd must still be the view: closed and reused behind our back,
      // it is reopened (and the number, now the program's, left alone).
      if (view_fd >= 0 && IdOf(view_fd) != view_id) {
        view_fd = -1;
        DropLocked();
      }
    }
  }
  return link_fd < 0 ? ConnectLocked() : 0;
}

// In a vfork child: the view opened for this call only (closed at exec).
int ViewFdInVforkChild() {
  if (view_fd >= 0 && IdOf(view_fd) == view_id) return view_fd;  // inherited, still valid
  if (const size_t len = view_len.load(std::memory_order_acquire); len > 0 && !view_detached)
    return OpenView(std::string(view_root, len));
  int fd = -1;
  HelloAnswer hello;
  int err = Handshake(&fd, &hello, kTimeoutMs);
  if (err != 0) {
    errno = err;
    return -1;
  }
  bool detached;
  int vfd = OpenAgentView(fd, hello, &detached);
  err = errno;
  RealClose(fd);
  errno = err;
  return vfd;
}

int ViewFd() {
  std::lock_guard lock(mu);
  if (link_fd < 0 && getpid() != owner_pid) return ViewFdInVforkChild();
  int err = EnsureLinkLocked();
  if (err != 0) {
    errno = err;
    return -1;
  }
  return view_fd;
}

// One request on a connection of its own: the agent may take a while (hash a
// file, fetch one from a peer), and other threads' cluster calls (and fork)
// must not wait on mu meanwhile. Returns 0 or an errno.
int AskAlone(Onebox__V1__ShimRequest& req, int timeout_ms) {
  int saved = errno;
  int fd = -1;
  int err = Handshake(&fd, nullptr, timeout_ms);
  if (err != 0) return err;
  req.id = 2;
  Onebox__V1__ShimResponse* resp = RoundTrip(fd, req);
  RealClose(fd);
  int result = EIO;
  if (resp != nullptr) {
    result = resp->err != 0 ? resp->err : (static_cast<int>(resp->op_case) == static_cast<int>(req.op_case) ? 0 : EIO);
    onebox__v1__shim_response__free_unpacked(resp, nullptr);
  }
  errno = saved;
  return result;
}

int Publish(const char* rel_path) {
  Onebox__V1__PublishRequest publish = ONEBOX__V1__PUBLISH_REQUEST__INIT;
  publish.path = const_cast<char*>(rel_path);
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_PUBLISH;
  req.publish = &publish;
  return AskAlone(req, 60'000);
}

int Hydrate(const char* rel_path) {
  Onebox__V1__HydrateRequest hydrate = ONEBOX__V1__HYDRATE_REQUEST__INIT;
  hydrate.path = const_cast<char*>(rel_path);
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_HYDRATE;
  req.hydrate = &hydrate;
  return AskAlone(req, 600'000);
}

// One request on the process's link, for answers the agent gives at once
// (its socket thread never waits for a vote or a fetch on it). nullptr when
// the link failed: it is dropped (an answer that comes late must not be
// taken for the next request's) and the caller asks alone.
Onebox__V1__ShimResponse* AskLinked(Onebox__V1__ShimRequest& req) {
  static uint64_t next_id = 3;  // (1: Hello; 2: alone) under mu
  std::lock_guard lock(mu);
  if (!InOwnerProcess() || EnsureLinkLocked() != 0) return nullptr;
  req.id = next_id++;
  Onebox__V1__ShimResponse* resp = RoundTrip(link_fd, req);
  if (resp != nullptr && resp->id != req.id) {
    onebox__v1__shim_response__free_unpacked(resp, nullptr);
    resp = nullptr;
  }
  if (resp == nullptr) DropLocked();
  return resp;
}

namespace {

Onebox__V1__ShimRequest ClaimRequest(Onebox__V1__ShimClaimRequest* claim, const char* rel_path, bool directory) {
  claim->path = const_cast<char*>(rel_path);
  claim->directory = directory;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_CLAIM;
  req.claim = claim;
  return req;
}

}  // namespace

int ClaimAtOnce(const char* rel_path, bool directory) {
  Onebox__V1__ShimClaimRequest claim = ONEBOX__V1__SHIM_CLAIM_REQUEST__INIT;
  Onebox__V1__ShimRequest req = ClaimRequest(&claim, rel_path, directory);
  // Under a lease this node holds (file after file in one directory) the
  // agent answers at once: on the link, without a connection per create.
  claim.at_once = true;
  int saved = errno;
  int result = -1;
  if (Onebox__V1__ShimResponse* resp = AskLinked(req)) {
    bool decided = resp->op_case == ONEBOX__V1__SHIM_RESPONSE__OP_CLAIM && !resp->claim->ask_alone;
    result = resp->err != 0 ? resp->err : (decided ? 0 : -1);
    onebox__v1__shim_response__free_unpacked(resp, nullptr);
  }
  errno = saved;
  return result;
}

int ClaimByVote(const char* rel_path, bool directory) {
  Onebox__V1__ShimClaimRequest claim = ONEBOX__V1__SHIM_CLAIM_REQUEST__INIT;
  Onebox__V1__ShimRequest req = ClaimRequest(&claim, rel_path, directory);
  return AskAlone(req, 10'000);
}

// A lock call's answer; false with errno EINTR when a signal ended a wait,
// unless the agent's answer had already come (a grant the program must not
// lose by taking the call for interrupted).
bool ReceiveLockAnswer(int link, std::string* frame, bool wait) {
  if (RecvFrame(link, frame, nullptr, /*interruptible=*/wait)) return true;
  if (errno != EINTR) return false;
  pollfd ready{link, POLLIN, 0};
  if (poll(&ready, 1, 0) == 1 && (ready.revents & POLLIN) != 0 && RecvFrame(link, frame)) return true;
  errno = EINTR;
  return false;
}

int AskLock(const char* rel_path, int fd, int kind, int cmd, int type, uint64_t start, uint64_t end, bool lease_ok,
            LockAnswer* answer) {
  Onebox__V1__ShimLockRequest lock = ONEBOX__V1__SHIM_LOCK_REQUEST__INIT;
  lock.path = const_cast<char*>(rel_path);
  lock.fd = fd;
  lock.kind = static_cast<Onebox__V1__ShimLockRequest__Kind>(kind);
  lock.cmd = static_cast<Onebox__V1__ShimLockRequest__Cmd>(cmd);
  lock.type = type;
  lock.start = start;
  lock.end = end;
  lock.lease_ok = lease_ok;
  // Any thread but the main one: its descriptor table may be its own.
  const long tid = RealSyscall(SYS_gettid);
  lock.tid = tid != RealSyscall(SYS_getpid) ? static_cast<int32_t>(tid) : 0;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_LOCK;
  req.lock = &lock;
  req.id = 2;
  // A wait has no timeout, and a signal may end it: it has a connection of
  // its own, which closes, giving the wait up at the agent. Other lock calls
  // share the process's lock link (its own, so that a lock call whose home
  // is another node never holds mu), answered within the agent's bounds (a
  // new home's grace, a fence).
  const bool wait = cmd == ONEBOX__V1__SHIM_LOCK_REQUEST__CMD__SET_WAIT;
  int saved = errno;
  std::unique_lock<std::mutex> shared;
  int link = -1;
  // The link is not waited for (another thread's call may be at a far home;
  // close() may call this from a signal handler): a busy link means a
  // connection of this call's own.
  if (!wait && InOwnerProcess() && (shared = std::unique_lock(lock_link_mu, std::try_to_lock)).owns_lock()) {
    // A program that closed it, or put another file at its number, took it
    // (a fork child's is its parent's conversation: it makes its own).
    if (lock_link_fd >= 0 && (lock_link_pid != getpid() || IdOf(lock_link_fd) != lock_link_id)) lock_link_fd = -1;
    if (lock_link_fd < 0 && Handshake(&lock_link_fd, nullptr, 30'000) == 0) {
      lock_link_id = IdOf(lock_link_fd);
      lock_link_pid = getpid();
    }
    link = lock_link_fd;
  } else if (Handshake(&link, nullptr, wait ? 0 : 30'000) != 0) {
    link = -1;
  }
  if (link < 0) {
    errno = saved;
    return ENOLCK;
  }
  std::string frame;
  int result = ENOLCK;
  bool broken = true;
  if (!SendRequest(link, req)) {
    // result stays
  } else if (!ReceiveLockAnswer(link, &frame, wait)) {
    if (errno == EINTR) result = EINTR;
  } else if (Onebox__V1__ShimResponse* resp = onebox__v1__shim_response__unpack(
                 nullptr, frame.size(), reinterpret_cast<const uint8_t*>(frame.data()))) {
    broken = false;
    result = resp->err;
    if (result == 0 && resp->op_case != ONEBOX__V1__SHIM_RESPONSE__OP_LOCK) result = ENOLCK;
    if (result == 0 && answer != nullptr) {
      answer->type = resp->lock->type;
      answer->start = resp->lock->start;
      answer->end = resp->lock->end;
      answer->pid = resp->lock->pid;
      answer->leased = resp->lock->leased;
    }
    onebox__v1__shim_response__free_unpacked(resp, nullptr);
  }
  if (!shared.owns_lock()) {
    RealClose(link);
  } else if (broken) {  // an answer that comes late must not be taken for the next call's
    RealClose(link);
    lock_link_fd = -1;
  }
  errno = saved;
  return result;
}

int SignalGpid(long long gpid, int sig, bool has_value, long long value) {
  Onebox__V1__ShimSignalRequest signal = ONEBOX__V1__SHIM_SIGNAL_REQUEST__INIT;
  signal.gpid = gpid;
  signal.signal = sig;
  signal.has_value = has_value;
  signal.value = value;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_SIGNAL;
  req.signal = &signal;
  return AskAlone(req, 10'000);
}

int BindPort(unsigned port, bool ipv6, const char* path, unsigned long long socket_inode, bool release) {
  Onebox__V1__ShimBindPortRequest bind = ONEBOX__V1__SHIM_BIND_PORT_REQUEST__INIT;
  bind.port = port;
  if (path != nullptr) bind.path = const_cast<char*>(path);
  bind.ipv6 = ipv6;
  bind.socket_inode = socket_inode;
  bind.release = release;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_BIND_PORT;
  req.bind_port = &bind;
  return AskAlone(req, 10'000);
}

// The port maps of the agent's page; before this process's first Hello,
// one is said to get them (once: without an agent, nothing is asked again).
const PortMaps* PortMapsNow() {
  const PortMaps* maps = port_maps.load(std::memory_order_acquire);
  static std::atomic<bool> asked_for_page{false};
  if (maps == nullptr && state_page.load(std::memory_order_acquire) == nullptr && !asked_for_page.exchange(true)) {
    std::lock_guard lock(mu);
    if (InOwnerProcess()) EnsureLinkLocked();
    maps = port_maps.load(std::memory_order_acquire);
  }
  return maps;
}

const LockLeases* LockLeasesNow() { return lock_leases.load(std::memory_order_acquire); }

const CreateSlots* CreateSlotsNow() { return create_slots.load(std::memory_order_acquire); }

int CreateLockFd() {
  int fd = create_lock_fd.load(std::memory_order_acquire);
  struct stat st;
  if (fd >= 0) {
    // Still the lock file: a lock taken on a program's file would hold no recall off.
    if (RealSyscall(SYS_fstat, fd, &st) == 0 && st.st_dev == create_lock_dev.load() &&
        st.st_ino == create_lock_ino.load())
      return fd;
    create_lock_fd.compare_exchange_strong(fd, -1);  // the program's now: let go of the number
  }
  std::lock_guard lock(mu);
  fd = create_lock_fd.load(std::memory_order_acquire);
  if (fd >= 0 || view_fd < 0) return fd;
  fd = static_cast<int>(
      RealSyscall(SYS_openat, view_fd, kCreateLockFile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0));
  if (fd < 0) return -1;
  fd = HighFd(fd);
  if (RealSyscall(SYS_fstat, fd, &st) != 0) {
    RealClose(fd);
    return -1;
  }
  create_lock_dev.store(st.st_dev);
  create_lock_ino.store(st.st_ino);
  create_lock_fd.store(fd, std::memory_order_release);
  return fd;
}

void EnsureStatePage() {
  static std::atomic<bool> asked_for_page{false};
  if (state_page.load(std::memory_order_acquire) == nullptr && !asked_for_page.exchange(true)) {
    std::lock_guard lock(mu);
    if (InOwnerProcess()) EnsureLinkLocked();
  }
}

bool PortIsRemote(unsigned port) {
  const PortMaps* maps = PortMapsNow();
  return maps != nullptr && maps->remote.Has(port);
}

bool MayBeHandedOver(unsigned agent_port) {
  // A server may accept for long after its agent restarted, on the old
  // agent's frozen page: once a second at most, whether the link to the
  // agent still stands (a new one brings the new page).
  static std::atomic<int64_t> looked_ns{0};
  if (const int64_t now = CoarseNowNs(); now - looked_ns.load(std::memory_order_relaxed) >= 1'000'000'000) {
    looked_ns.store(now, std::memory_order_relaxed);
    std::lock_guard lock(mu);
    if (InOwnerProcess()) EnsureLinkLocked();
  }
  const PortMaps* maps = PortMapsNow();
  return maps != nullptr && maps->handover.Has(agent_port);
}

namespace {

// One request on a connection of its own whose answer brings a descriptor:
// the descriptor, or -errno.
int AskForDescriptor(Onebox__V1__ShimRequest& req, int answer_case, int timeout_ms) {
  req.id = 2;
  const int saved = errno;
  int fd = -1;
  if (int err = Handshake(&fd, nullptr, timeout_ms); err != 0) return -err;
  int passed = -1;
  Onebox__V1__ShimResponse* resp = RoundTrip(fd, req, &passed);
  RealClose(fd);
  int err = resp == nullptr                                                        ? EIO
            : resp->err != 0                                                       ? resp->err
            : static_cast<int>(resp->op_case) != answer_case || passed < 0 ? EIO
                                                                                   : 0;
  if (resp != nullptr) onebox__v1__shim_response__free_unpacked(resp, nullptr);
  if (err != 0 && passed >= 0) RealClose(passed);
  errno = saved;
  return err != 0 ? -err : passed;
}

}  // namespace

int DialPort(unsigned port) {
  Onebox__V1__ShimDialPortRequest dial = ONEBOX__V1__SHIM_DIAL_PORT_REQUEST__INIT;
  dial.port = port;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_DIAL_PORT;
  req.dial_port = &dial;
  // The agent's dial and the owner's connect end within 8 s.
  return AskForDescriptor(req, ONEBOX__V1__SHIM_RESPONSE__OP_DIAL_PORT, 10'000);
}

int TakeLink(unsigned port, unsigned agent_port, int fd) {
  Onebox__V1__ShimTakeLinkRequest take = ONEBOX__V1__SHIM_TAKE_LINK_REQUEST__INIT;
  take.port = port;
  take.agent_port = agent_port;
  take.fd = fd;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_TAKE_LINK;
  req.take_link = &take;
  return AskForDescriptor(req, ONEBOX__V1__SHIM_RESPONSE__OP_TAKE_LINK, 2'000);
}

bool PeerIsAgent(int fd) {
  ucred peer{}, agent{};
  socklen_t len = sizeof peer;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0 || peer.pid <= 0) return false;
  std::lock_guard lock(mu);
  if (!InOwnerProcess() || EnsureLinkLocked() != 0) return false;
  len = sizeof agent;
  return getsockopt(link_fd, SOL_SOCKET, SO_PEERCRED, &agent, &len) == 0 && agent.pid == peer.pid &&
         agent.uid == peer.uid;
}

bool MayHavePeers() {
  const StatePage* page = state_page.load(std::memory_order_acquire);
  return page != nullptr && page->peers_alive.load(std::memory_order_relaxed) != 0;
}

bool SymlinkFreeView(SymlinkFree* ticket) {
  ticket->page = state_page.load(std::memory_order_acquire);
  return SymlinkFreeBegin(ticket->page, &ticket->epoch);
}

bool SymlinkFreeStill(const SymlinkFree& ticket) { return onebox::SymlinkFreeStill(ticket.page, ticket.epoch); }

bool LexicallyClean(const char* rel) {
  if (rel == nullptr) return false;
  for (const char* p = rel;;) {
    const char* end = strchrnul(p, '/');
    size_t n = static_cast<size_t>(end - p);
    if (n == 0 || (p[0] == '.' && (n == 1 || (n == 2 && p[1] == '.')))) return false;
    if (*end == '\0' || end[1] == '\0') return true;  // the end, or one trailing "/"
    p = end + 1;
  }
}

namespace {

// The descriptors of the symlink() calls under way (locks and connections):
// a child forked meanwhile closes its copies in AfterForkInChild. The lock
// belongs to the open file, which the child shares: it would hold the
// agent's proofs off for as long as the child lives.
struct InFlightFd {
  std::atomic<int> fd{-1};  // -2: being filled
  std::atomic<dev_t> dev{0};
  std::atomic<ino_t> ino{0};
};
constexpr int kInFlightSlots = 32;
InFlightFd in_flight[kInFlightSlots];

int TrackInFlight(int fd, FdId id) {
  for (int i = 0; i < kInFlightSlots; ++i) {
    int expected = -1;
    if (!in_flight[i].fd.compare_exchange_strong(expected, -2)) continue;
    in_flight[i].dev.store(id.dev);
    in_flight[i].ino.store(id.ino);
    in_flight[i].fd.store(fd);
    return i;
  }
  return -1;  // more at once than slots: a child forked meanwhile keeps this one's copies
}

void UntrackInFlight(int* slot) {
  if (*slot >= 0) in_flight[*slot].fd.store(-1);
  *slot = -1;
}

}  // namespace

void CloseInFlightInChild() {
  for (InFlightFd& f : in_flight) {
    int fd = f.fd.load();
    if (fd >= 0 && IdOf(fd) == FdId{f.dev.load(), f.ino.load()}) RealClose(fd);
    f.fd.store(-1);
  }
}

SymlinkAnnouncement::~SymlinkAnnouncement() { SymlinkMade(this); }  // a cancelled thread's too

int AnnounceSymlink(int view_fd, SymlinkAnnouncement* a) {
  int saved = errno;
  // The lock first: a proof of the agent (or of its successor) waits for us
  // from before the announcement until the symlink is made. Each descriptor
  // goes into *a as soon as it is open: SymlinkMade closes what is there,
  // whatever happens in between (a cancelled thread's destructor calls it).
  // Opened and noted under mu, which fork() holds (see SymlinkMade): no
  // child gets an open file that we lock afterwards without its note.
  std::unique_lock fork_lock(mu);
  int lock = static_cast<int>(
      RealSyscall(SYS_openat, view_fd, kSymlinkLockFile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0));
  if (lock < 0 && errno != ENOENT) {  // none: an older agent
    int err = errno;
    errno = saved;
    return err;
  }
  if (lock >= 0) {
    FdId id = IdOf(lock);
    a->lock_fd = lock;
    a->lock_dev = id.dev;
    a->lock_ino = id.ino;
    a->lock_slot = TrackInFlight(lock, id);
  }
  fork_lock.unlock();
  if (lock >= 0) {
    // The agent write-locks it only for a moment (the end of a proof): one
    // that holds it for kSymlinkLockWaitNs is stuck (stopped, say), and the
    // call fails as other calls do when the agent does not answer.
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    int64_t deadline = CoarseNowNs() + kSymlinkLockWaitNs;
    long pause_ns = 50'000;
    while (RealSyscall(SYS_fcntl, lock, F_OFD_SETLK, &fl) != 0) {
      int err = errno;
      if (err == EINTR) continue;
      bool held = err == EAGAIN || err == EACCES;
      if (held && CoarseNowNs() < deadline) {
        timespec pause{0, pause_ns};
        nanosleep(&pause, nullptr);
        pause_ns = std::min(pause_ns * 2, 10'000'000L);
        continue;
      }
      SymlinkMade(a);
      if (held) {
        Warn("symlink lock", ETIMEDOUT);
        err = ENOTCONN;
      }
      errno = saved;
      return err;
    }
  }
  int fd = -1;
  // The agent may make us wait for a moment after it starts (kSymlinkStartDelayNs).
  int err = Handshake(&fd, nullptr, 2'000);
  if (err != 0) {
    SymlinkMade(a);
    errno = saved;
    return err;
  }
  // Its close (ours, exec's) releases what the agent noted on it. (A child
  // forked before it is noted keeps a copy: the release then waits for
  // SymlinkMade's word, or for our exit.)
  {
    std::lock_guard fork_lock(mu);
    FdId id = IdOf(fd);
    a->fd = fd;
    a->dev = id.dev;
    a->ino = id.ino;
    a->slot = TrackInFlight(fd, id);
  }
  Onebox__V1__AnnounceSymlinkRequest announce = ONEBOX__V1__ANNOUNCE_SYMLINK_REQUEST__INIT;
  Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
  req.id = 3;
  req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_ANNOUNCE_SYMLINK;
  req.announce_symlink = &announce;
  Onebox__V1__ShimResponse* resp = RoundTrip(fd, req);
  int result = EIO;
  if (resp != nullptr) {
    if (resp->err == ENOSYS) {
      result = 0;  // an older agent: it keeps no count, and no shim trusts its page to
    } else if (resp->err != 0) {
      result = resp->err;
    } else if (resp->op_case == ONEBOX__V1__SHIM_RESPONSE__OP_ANNOUNCE_SYMLINK && resp->announce_symlink->token != 0) {
      a->token = resp->announce_symlink->token;
      result = 0;
    }
    onebox__v1__shim_response__free_unpacked(resp, nullptr);
  }
  if (result != 0) SymlinkMade(a);
  errno = saved;
  return result;
}

void SymlinkMade(SymlinkAnnouncement* a) {
  int saved = errno;
  {
    // A descriptor and its note go together under mu, which fork() holds:
    // the child's copy of our descriptors and of the notes is taken at two
    // moments of the fork, and must not fall between.
    std::lock_guard fork_lock(mu);
    if (a->lock_fd >= 0) CloseIfOurs(a->lock_fd, FdId{a->lock_dev, a->lock_ino});
    a->lock_fd = -1;
    UntrackInFlight(&a->lock_slot);
  }
  // Still our socket (another thread may have closed it and taken the number):
  // else the agent holds the intent until we exit. No need to wait for the
  // answer: a late release only keeps the fast path off a little longer.
  bool ours = a->fd >= 0 && IdOf(a->fd) == FdId{a->dev, a->ino};
  if (ours && a->token != 0) {
    Onebox__V1__SymlinkMadeRequest made = ONEBOX__V1__SYMLINK_MADE_REQUEST__INIT;
    made.token = a->token;
    Onebox__V1__ShimRequest req = ONEBOX__V1__SHIM_REQUEST__INIT;
    req.id = 4;
    req.op_case = ONEBOX__V1__SHIM_REQUEST__OP_SYMLINK_MADE;
    req.symlink_made = &made;
    SendRequest(a->fd, req);
  }
  {
    std::lock_guard fork_lock(mu);
    if (ours) RealClose(a->fd);
    a->fd = -1;
    a->token = 0;
    UntrackInFlight(&a->slot);
  }
  errno = saved;
}

bool MayBeStubs() {
  const StatePage* page = state_page.load(std::memory_order_acquire);
  return page == nullptr || page->stubs.load(std::memory_order_relaxed) != 0;
}

std::string_view ViewRoot() { return {view_root, view_len.load(std::memory_order_acquire)}; }

bool ViewIsDetached() { return view_detached; }

std::string_view AgentViewRoot() { return view_detached ? std::string_view(agent_view) : ViewRoot(); }

bool InDetachedView(int dirfd, const char* path, int flags) {
  return !view_detached || DevOf(dirfd, path, flags) == view_dev;
}

ssize_t ViewLinkOf(int fd, char* real, size_t cap) {
  char link[kFdLinkBytes];
  FdLink(link, fd);
  const size_t skip = view_detached ? kDetachedRoot.size() : 0;
  if (cap <= skip + 1) return -1;
  ssize_t n = RealSyscall(SYS_readlinkat, AT_FDCWD, link, real + skip, cap - skip - 1);
  if (n <= 0) return n;
  if (skip != 0) {
    // "/cluster/a" is the view's only on the view's device; elsewhere it is the pod's own.
    if (!cluster_root.Holds(std::string_view(real + skip, static_cast<size_t>(n))) ||
        !InDetachedView(fd, "", AT_EMPTY_PATH)) {
      memmove(real, real + skip, static_cast<size_t>(n));
      real[n] = '\0';
      return n;
    }
    memcpy(real, kDetachedRoot.data(), skip);
    n += static_cast<ssize_t>(skip);
  }
  real[n] = '\0';
  return n;
}

const char* StandInProgram() {
  // Says hello if no one has yet; never in a vfork child (it would not keep what it learns).
  if (front_path[0] == '\0' && InOwnerProcess()) ViewFd();
  return front_path;
}

bool InOwnerProcess() { return getpid() == owner_pid; }

bool NamesFd(const char* link, int fd) {
  const int saved = errno;
  struct stat theirs, ours;
  const bool same = RealSyscall(SYS_newfstatat, AT_FDCWD, link, &theirs, 0) == 0 &&
                    RealSyscall(SYS_newfstatat, fd, "", &ours, AT_EMPTY_PATH) == 0 && theirs.st_dev == ours.st_dev &&
                    theirs.st_ino == ours.st_ino;
  errno = saved;
  return same;
}

namespace {

// A cwd not under our root, "(unreachable)/a/b": in a detached view (a pod's
// parent was there) if the view's marker is at the top of its mount.
void DiscoverDetachedView(std::string_view cwd) {
  int top = OpenUnreachableTop(cwd, {});
  if (top < 0) return;
  const bool marked = RealSyscall(SYS_faccessat, top, kViewMarker, F_OK, 0) == 0;
  const FdId id = IdOf(top);
  RealClose(top);
  if (marked && id != FdId{}) SetViewRoot(kDetachedRoot, true, id.dev);
}

}  // namespace

// A process that starts with its cwd in a view (a child of a shell that did
// `cd /cluster/...`) learns the view root from the path itself: the agent
// marks its view root with a file. Costs nothing unless a component is "view".
void DiscoverViewRoot(const char* real_cwd) {
  if (view_len.load(std::memory_order_acquire) != 0) return;
  std::string_view cwd(real_cwd);
  if (cwd.compare(0, kDetachedRoot.size(), kDetachedRoot) == 0) {
    DiscoverDetachedView(cwd);
    return;
  }
  for (size_t pos = cwd.find("/view/"); pos != std::string_view::npos; pos = cwd.find("/view/", pos + 1)) {
    size_t end = pos + 5;  // candidate view root: cwd[0..end)
    char marker[kMaxPathBytes];
    int n = snprintf(marker, sizeof marker, "%.*s/%s", static_cast<int>(end), real_cwd, kViewMarker);
    if (n <= 0 || static_cast<size_t>(n) >= sizeof marker) return;
    if (RealSyscall(SYS_faccessat, AT_FDCWD, marker, F_OK, 0) == 0) {
      SetViewRoot(cwd.substr(0, end), false, 0);
      return;
    }
  }
}

bool IsShimFd(int fd) {
  return fd >= 0 && (fd == link_fd || fd == view_fd || fd == create_lock_fd.load(std::memory_order_relaxed));
}

std::array<int, 3> ShimFds() { return {link_fd, view_fd, create_lock_fd.load()}; }

void ShimFdLost(int fd) {
  // The name of the view stays known (getcwd keeps translating); the next
  // cluster call says Hello again and reopens it.
  std::lock_guard lock(mu);
  if (int expected = fd; create_lock_fd.compare_exchange_strong(expected, -1)) {
    RealClose(fd);  // opened again at the next create under a slot
    return;
  }
  if (fd == link_fd) DropLocked();
  if (fd == view_fd) {
    CloseIfOurs(view_fd, view_id);
    view_fd = -1;
    DropLocked();
  }
}

}  // namespace onebox::shim
