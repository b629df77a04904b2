#include "nodeagent/locks/node_locks.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include "nodeagent/daemon/thread_name.h"
#include "nodeagent/locks/kernel_locks.h"
#include "naming/ns_key.h"
#include "nodeagent/locks/lock_wire.h"
#include "nodeagent/process/proc_table.h"
#include "proto/gpid.h"
#include "proto/state_page.h"

namespace onebox {

namespace {

constexpr auto kAwaitWindow = std::chrono::milliseconds(1000);
constexpr auto kRetryUnreachable = std::chrono::milliseconds(500);
constexpr auto kCallTimeout = std::chrono::milliseconds(2000);

// The token an open file description carries: its OFD lock at or past
// kShadowBase, as /proc/self/fdinfo of a copy of it lists its own locks.
uint64_t TokenOnDescription(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("lock:", 0) != 0 || line.find("OFDLCK") == std::string::npos) continue;
    // "lock:\t1: OFDLCK  ADVISORY  READ  -1 00:2d:1234 START END"
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (w.size() < 2) continue;
    const uint64_t start = std::strtoull(w[w.size() - 2].c_str(), nullptr, 10);
    if (start >= NodeLocks::kShadowBase) return start - NodeLocks::kShadowBase;
  }
  return 0;
}

// The shim's word is checked against the kernel's, on the agent's own copy
// of the caller's descriptor (pidfd_getfd: the file it names cannot change
// under the check): it must be a file of path in the view, open for reading
// for a read lock and for writing for a write lock (as the kernel requires),
// and not O_PATH. A file replaced or unlinked since it was opened (no link
// left) keeps the name it had.
int CheckCopy(int copy, const std::string& view, const std::string& path, int type) {
  const int flags = fcntl(copy, F_GETFL);
  if (flags < 0 || (flags & O_PATH) != 0) return EBADF;
  const int mode = flags & O_ACCMODE;
  if ((type == 0 && mode == O_WRONLY) || (type == 1 && mode == O_RDONLY)) return EBADF;
  struct stat theirs, ours;
  if (fstat(copy, &theirs) != 0) return EBADF;
  const std::string named = view + "/" + path;
  if (stat(named.c_str(), &ours) == 0 && ours.st_dev == theirs.st_dev && ours.st_ino == theirs.st_ino) return 0;
  if (theirs.st_nlink != 0) return EBADF;
  char link[PATH_MAX];
  const std::string self = fmt::format("/proc/self/fd/{}", copy);
  ssize_t n = readlink(self.c_str(), link, sizeof link - 1);
  return n > 0 && std::string_view(link, static_cast<size_t>(n)) == named + " (deleted)" ? 0 : EBADF;
}

int Errno(const Status& s) {
  return s.code() == Code::kInvalidArgument ? EINVAL : ENOLCK;
}

}  // namespace

NodeLocks::NodeLocks(Parts parts) : parts_(std::move(parts)) {
  // Tokens outlive an agent (they sit on programs' descriptions): a new
  // agent's start from a random point, in 40 bits.
  std::random_device rd;
  next_token_ = ((uint64_t{rd()} << 32 | rd()) & ((uint64_t{1} << 40) - 1)) | 1;
  lease_prefix_ = fmt::format("lease.{:016x}", uint64_t{rd()} << 32 | rd());
}

NodeLocks::~NodeLocks() {
  Stop();
  for (auto& [key, owner] : owners_) {
    if (owner.watch_fd >= 0) close(owner.watch_fd);
    if (owner.pidfd >= 0) close(owner.pidfd);
  }
  for (int fd : {epoll_fd_, inotify_fd_, wake_fd_})
    if (fd >= 0) close(fd);
}

void NodeLocks::Start() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  inotify_fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  for (int fd : {inotify_fd_, wake_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  watch_thread_ = std::thread([this] { WatchLoop(); });
  NameThread(watch_thread_, "onebox-lockwatch");
  if (parts_.lease_slots != nullptr) {
    // How the kernel names the view's file system in /proc/locks: without
    // it no lease (its locks could not be found again).
    kernel_dev_id_ = KernelDeviceId(parts_.view_path + "/" + kViewMarker, kShadowBase);
    if (kernel_dev_id_.empty()) spdlog::warn("locks: the kernel's name for the view's file system is unknown: no lock leases");
    reclaim_pool_.Submit([this] { RecoverLeasedLocks(); });
  }
}

void NodeLocks::RecoverLeasedLocks() {
  // Once the predecessor's shims distrust its slots: what they locked under
  // them is all in the kernel by then.
  std::this_thread::sleep_until(started_ + std::chrono::nanoseconds(kLockLeaseStartDelayNs));
  // And once the members are known (else every home looks like this node).
  for (int i = 0; i < 100 && !Majority(); ++i) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // The files this node is home to first: a lock that cannot be made the
  // cluster's is kept there only within this home's grace.
  std::vector<std::pair<std::string, bool>> files = KernelLockedFilesIn(parts_.view_path, kernel_dev_id_, kShadowBase);
  const std::vector<std::string> nodes = NotDead();
  std::stable_partition(files.begin(), files.end(),
                        [&](const auto& file) { return LockHome::HomeOf(file.first, nodes) == parts_.self_id; });
  for (const auto& [path, flock] : files) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (!IsValidNsKey(path)) continue;
    spdlog::info("locks: /{}: {} locks its programs hold from before this agent's start go to its home", path,
                 flock ? "flock" : "fcntl");
    bool unconverted = false;
    EndLease(path, flock, /*tell_home=*/true, "", &unconverted);
    if (unconverted && LockHome::HomeOf(path, NotDead()) == parts_.self_id) KeepWholeForUnconverted(path, flock);
  }
  recovered_.store(true);
}

void NodeLocks::Stop() {
  {
    std::unique_lock lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    waits_cv_.wait(lock, [&] { return waits_ == 0; });  // each sees stopping_ within its window
    // The shims ask the agent from now on (and find none); the home keeps
    // the leases until this node's successor returns them.
    for (const auto& [file_key, lease] : leases_) parts_.lease_slots->End(lease.slot, lease.seq);
  }
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
  if (watch_thread_.joinable()) watch_thread_.join();
  pool_.Drain();
  reclaim_pool_.Drain();
}

void NodeLocks::Serve(pid_t pid, uid_t uid, uint64_t connection, const v1::ShimLockRequest& req, ShimReply reply) {
  Asked asked{pid, uid, connection, 0, req};
  if (req.cmd() == v1::ShimLockRequest::SET_WAIT && req.type() != 2) {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      // Registered before its thread starts, so that the connection's close
      // (a signal in the program) always finds it.
      asked.wait_id = next_wait_id_++;
      waits_by_connection_[connection].insert(asked.wait_id);
      ++waits_;
      std::thread([this, asked = std::move(asked), reply = std::move(reply)]() mutable {
        reply.Send(Handle(asked));
        std::lock_guard done(mu_);
        if (auto it = waits_by_connection_.find(asked.connection); it != waits_by_connection_.end()) {
          it->second.erase(asked.wait_id);
          if (it->second.empty()) waits_by_connection_.erase(it);
        }
        cancelled_waits_.erase(asked.wait_id);
        --waits_;
        waits_cv_.notify_all();
      }).detach();
      return;
    }
  }
  pool_.Submit([this, asked = std::move(asked), reply = std::move(reply)]() mutable { reply.Send(Handle(asked)); });
}

void NodeLocks::ConnectionClosed(uint64_t connection) {
  std::lock_guard lock(mu_);
  posix_keys_.erase(connection);
  auto it = waits_by_connection_.find(connection);
  if (it == waits_by_connection_.end()) return;
  cancelled_waits_.insert(it->second.begin(), it->second.end());
  waits_by_connection_.erase(it);
}

bool NodeLocks::Cancelled(uint64_t wait_id) {
  std::lock_guard lock(mu_);
  return stopping_ || cancelled_waits_.contains(wait_id);
}

int NodeLocks::Interrupted() {
  std::lock_guard lock(mu_);
  return stopping_ ? ENOLCK : EINTR;
}

std::vector<std::string> NodeLocks::NotDead() {
  std::vector<std::string> nodes;
  for (const v1::Node& n : parts_.members.Nodes())
    if (n.state() != v1::NODE_STATE_DEAD) nodes.push_back(n.node_id());
  if (std::find(nodes.begin(), nodes.end(), parts_.self_id) == nodes.end()) nodes.push_back(parts_.self_id);
  std::sort(nodes.begin(), nodes.end());
  return nodes;
}

std::optional<PeerAddress> NodeLocks::AddressOf(const std::string& node_id) {
  for (const v1::Node& n : parts_.members.Nodes())
    if (n.node_id() == node_id && !n.address().empty()) return PeerAddress{n.node_id(), n.address()};
  return std::nullopt;
}

Status NodeLocks::AskHome(v1::LockRequest& req, v1::LockResponse* resp, std::string* home_out) {
  const auto deadline = std::chrono::steady_clock::now() + LockHome::kGrace + std::chrono::seconds(2);
  for (;;) {
    resp->Clear();
    const std::string home = LockHome::HomeOf(req.path(), NotDead());
    Status s;
    if (home == parts_.self_id) {
      s = parts_.home.OnLock(req, resp);
    } else if (std::optional<PeerAddress> peer = AddressOf(home)) {
      s = parts_.network.To(peer->address).Lock(req, resp, CallOptions{.timeout = kCallTimeout});
    } else {
      s = Status::Unavailable("no address for node " + home);
    }
    if (!s.ok()) return s;
    if (home_out) *home_out = home;
    const bool again = resp->outcome() == v1::LockResponse::NOT_HOME || resp->outcome() == v1::LockResponse::GRACE;
    if (!again) return Status::Ok();
    if (std::chrono::steady_clock::now() >= deadline)
      return Status::Unavailable(fmt::format("no node takes /{} for its lock home now", req.path()));
    {
      std::lock_guard lock(mu_);
      if (stopping_) return Status::Unavailable("the agent is stopping");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(resp->outcome() == v1::LockResponse::GRACE ? 200 : 100));
  }
}

Status NodeLocks::AwaitAt(const std::string& home, const v1::AwaitLockRequest& req, v1::LockResponse* resp) {
  if (home == parts_.self_id) return parts_.home.OnAwaitLock(req, resp);
  std::optional<PeerAddress> peer = AddressOf(home);
  if (!peer) return Status::Unavailable("no address for node " + home);
  return parts_.network.To(peer->address)
      .AwaitLock(req, resp, CallOptions{.timeout = std::chrono::milliseconds(req.window_ms()) + kCallTimeout});
}

v1::LockFence NodeLocks::Fence(const std::string& written) {
  v1::LockFence fence;
  if (!written.empty() && parts_.record_file)
    if (Status s = parts_.record_file(written); !s.ok() && s.code() != Code::kNotFound)
      spdlog::warn("locks: /{} could not be recorded at its unlock: {}", written, s.message());
  Result<uint64_t> seq = parts_.record_view();
  if (!seq.ok()) {
    spdlog::warn("locks: the view could not be recorded before a release: {}", seq.status().message());
    return fence;
  }
  fence.set_node_id(parts_.self_id);
  fence.set_seq(*seq);
  spdlog::debug("locks: a release{}{} after this node's log up to {}", written.empty() ? "" : " of /", written, *seq);
  return fence;
}

void NodeLocks::ApplyFences(const v1::LockResponse& resp) {
  if (resp.fences().empty()) return;
  const auto deadline = std::chrono::steady_clock::now() + kFenceWait;  // for all of them together
  for (const v1::LockFence& f : resp.fences()) {
    spdlog::debug("locks: a grant waits for node {}'s log up to {}", f.node_id(), f.seq());
    if (Status s = parts_.applied_from(f.node_id(), f.seq(),
                                       std::max(std::chrono::milliseconds(0),
                                                std::chrono::duration_cast<std::chrono::milliseconds>(
                                                    deadline - std::chrono::steady_clock::now())));
        !s.ok())
      spdlog::warn("locks: granted without all that node {} wrote before its unlock: {}", f.node_id(), s.message());
  }
  parts_.settle_view();
}

int64_t NodeLocks::GetlkPid(const v1::LockOwner& holder) {
  if (holder.pid() <= 0) return -1;  // an OFD lock, as the kernel says
  return holder.node_id() == parts_.self_id ? gpid::LocalPid(holder.pid()) : holder.pid();
}

int NodeLocks::WatchOwner(Owner& owner, pid_t pid, int copy) {
  if (owner.posix) {
    owner.pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (owner.pidfd < 0) return errno == ESRCH ? ESRCH : ENOLCK;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = owner.pidfd;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, owner.pidfd, &ev);
    owners_by_pidfd_[owner.pidfd] = owner.id.key;
    return 0;
  }
  // The agent's own description of the file (not the program's: holding
  // that would keep it alive), and a watch on the file's closes.
  const std::string proc = fmt::format("/proc/self/fd/{}", copy);
  owner.watch_fd = open(proc.c_str(), O_RDONLY | O_CLOEXEC | O_NOATIME | O_NONBLOCK);
  if (owner.watch_fd < 0) owner.watch_fd = open(proc.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (owner.watch_fd < 0) return ENOLCK;
  const std::string self = fmt::format("/proc/self/fd/{}", owner.watch_fd);
  owner.wd = inotify_add_watch(inotify_fd_, self.c_str(), IN_CLOSE_WRITE | IN_CLOSE_NOWRITE);
  if (owner.wd < 0) return ENOLCK;
  owners_by_wd_[owner.wd].insert(owner.id.key);
  return 0;
}

namespace {

// A pidfd to copy the caller's descriptor through, or an errno. The shim
// names the calling thread unless it is the main one: its descriptor table
// may be its own (unshare(CLONE_FILES)), so the descriptor is copied
// through that thread (kPidfdThread). On an older kernel the process's serves if the thread shares its
// table (kcmp), else ENOLCK; a caller in another pid namespace than the
// agent's (its tid means nothing here) is served from its process's table.
int DescriptorPidfd(pid_t pid, pid_t tid, int* pidfd) {
  auto process = [&] {
    *pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    return *pidfd >= 0 ? 0 : ESRCH;
  };
  if (tid <= 0 || tid == pid) return process();
  static const std::optional<struct stat> ours = [] {
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? std::optional<struct stat>(st) : std::nullopt;
  }();
  struct stat theirs;
  if (!ours || stat(fmt::format("/proc/{}/ns/pid", pid).c_str(), &theirs) != 0 || theirs.st_ino != ours->st_ino ||
      theirs.st_dev != ours->st_dev)
    return process();
  *pidfd = static_cast<int>(syscall(SYS_pidfd_open, tid, kPidfdThread));
  if (*pidfd < 0 && errno == EINVAL) {  // no thread pidfds here
    const long order = syscall(SYS_kcmp, pid, tid, KCMP_FILES, 0, 0);
    if (order > 0) return ENOLCK;                  // a table of its own, out of reach
    if (order < 0 && errno == ESRCH) return ESRCH;
    return process();  // the same table (or no telling: as for every thread before)
  }
  if (*pidfd < 0) return errno == ESRCH ? ESRCH : ENOLCK;
  // One of pid's threads: tid is in pid's task list after the open, and the
  // pidfd's thread is still alive after that look (a live thread keeps its
  // number, so the look saw that thread, not a later one given its number).
  struct stat st;
  pollfd exited{*pidfd, POLLIN, 0};
  if (stat(fmt::format("/proc/{}/task/{}", pid, tid).c_str(), &st) != 0 || poll(&exited, 1, 0) != 0) {
    close(*pidfd);
    *pidfd = -1;
    return ESRCH;
  }
  return 0;
}

}  // namespace

int NodeLocks::OwnerFor(const Asked& asked, int type, std::string* key) {
  if (asked.pid <= 0) return ENOLCK;  // a process in a pid namespace this agent cannot name
  // The agent's copy of the program's descriptor: checked, and (flock, OFD)
  // the description whose token names the owner.
  int pidfd = -1;
  if (int err = DescriptorPidfd(asked.pid, asked.req.tid(), &pidfd); err != 0) return err;
  int copy = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, asked.req.fd(), 0));
  const int getfd_err = errno;
  close(pidfd);
  if (copy < 0) return getfd_err == EBADF ? EBADF : ENOLCK;
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{copy};
  if (int err = CheckCopy(copy, parts_.view_path, asked.req.path(), type); err != 0) return err;
  struct stat st;
  if (fstat(copy, &st) != 0) return EBADF;

  if (asked.req.kind() == v1::ShimLockRequest::POSIX) {
    {  // a connection's process is the same at each call (a fork child connects anew)
      std::lock_guard lock(mu_);
      auto known = posix_keys_.find(asked.connection);
      if (known != posix_keys_.end() && owners_.contains(known->second)) {
        *key = known->second;
        return 0;
      }
    }
    std::lock_guard lock(mu_);
    if (int err = PosixOwnerLocked(asked.pid, asked.uid, key); err != 0) return err;
    posix_keys_[asked.connection] = *key;
    return 0;
  }
  // Under the lock from the look for a token to its placing: two threads
  // locking one description at once make one owner.
  std::lock_guard lock(mu_);
  return OfdOwnerLocked(copy, asked.pid, asked.uid, st, key);
}

int NodeLocks::PosixOwnerLocked(pid_t pid, uid_t uid, std::string* key) {
  const uint64_t started = StartTicksOf(pid);
  if (started == 0) return ESRCH;
  *key = fmt::format("p{}.{}", pid, started);
  if (owners_.contains(*key)) return 0;
  Owner owner;
  owner.id = {parts_.self_id, *key, gpid::Make(parts_.self_index(), pid)};
  owner.posix = true;
  owner.uid = uid;
  if (int err = WatchOwner(owner, pid, -1); err != 0) return err;
  owners_.emplace(*key, std::move(owner));
  return 0;
}

int NodeLocks::OfdOwnerLocked(int copy, pid_t pid, uid_t uid, const struct stat& st, std::string* key) {
  uint64_t token = TokenOnDescription(copy);
  if (token == 0) token = next_token_++;
  *key = fmt::format("o{}", token);
  if (auto it = owners_.find(*key); it != owners_.end()) {
    // Anyone can put a byte lock there: a token is another's owner only for
    // the same user's description of the same file.
    if (it->second.uid != uid || it->second.dev != st.st_dev || it->second.ino != st.st_ino) return EPERM;
    return 0;
  }
  struct flock mark {};
  mark.l_type = (fcntl(copy, F_GETFL) & O_ACCMODE) == O_WRONLY ? F_WRLCK : F_RDLCK;
  mark.l_whence = SEEK_SET;
  mark.l_start = static_cast<off_t>(kShadowBase + token);
  mark.l_len = 1;
  if (fcntl(copy, F_OFD_SETLK, &mark) != 0) return errno == EBADF ? EBADF : ENOLCK;
  Owner owner;
  owner.id = {parts_.self_id, *key, -1};
  owner.token = token;
  owner.uid = uid;
  owner.dev = st.st_dev;
  owner.ino = st.st_ino;
  if (int err = WatchOwner(owner, pid, copy); err != 0) {
    if (owner.watch_fd >= 0) close(owner.watch_fd);
    mark.l_type = F_UNLCK;
    fcntl(copy, F_OFD_SETLK, &mark);
    return err;
  }
  owners_.emplace(*key, std::move(owner));
  return 0;
}

void NodeLocks::DropOwnerLocked(const std::string& key) {
  auto it = owners_.find(key);
  if (it == owners_.end()) return;
  Owner& owner = it->second;
  if (owner.pidfd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, owner.pidfd, nullptr);
    owners_by_pidfd_.erase(owner.pidfd);
    close(owner.pidfd);
  }
  if (owner.wd >= 0) {
    auto w = owners_by_wd_.find(owner.wd);
    if (w != owners_by_wd_.end()) {
      w->second.erase(key);
      if (w->second.empty()) {
        inotify_rm_watch(inotify_fd_, owner.wd);
        owners_by_wd_.erase(w);
      }
    }
  }
  if (owner.watch_fd >= 0) close(owner.watch_fd);
  owners_.erase(it);
}

bool NodeLocks::TokenAlive(const Owner& owner) const {
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  probe.l_start = static_cast<off_t>(kShadowBase + owner.token);
  probe.l_len = 1;
  if (fcntl(owner.watch_fd, F_OFD_GETLK, &probe) != 0) return true;  // cannot tell: keep it
  return probe.l_type != F_UNLCK;
}

v1::ShimResponse NodeLocks::Handle(const Asked& asked) {
  v1::ShimResponse resp;
  v1::ShimLockResponse* out = resp.mutable_lock();
  const v1::ShimLockRequest& req = asked.req;
  if (!IsValidNsKey(req.path()) || req.type() < 0 || req.type() > 2) {
    resp.set_err(EINVAL);
    return resp;
  }
  std::string key;
  if (req.cmd() == v1::ShimLockRequest::CLOSED) {  // no descriptor left: the process's POSIX owner
    if (req.kind() != v1::ShimLockRequest::POSIX || asked.pid <= 0) {
      resp.set_err(EINVAL);
      return resp;
    }
    std::lock_guard lock(mu_);
    auto known = posix_keys_.find(asked.connection);
    key = known != posix_keys_.end() ? known->second : fmt::format("p{}.{}", asked.pid, StartTicksOf(asked.pid));
    if (!owners_.contains(key)) return resp;  // it took no lock through this agent
  } else if (int err = OwnerFor(asked,
                                req.cmd() == v1::ShimLockRequest::TEST || req.kind() == v1::ShimLockRequest::FLOCK
                                    ? 2  // flock needs no access mode, a test neither
                                    : req.type(),
                                &key);
             err != 0) {
    resp.set_err(err);
    return resp;
  }
  const std::string file_key = LockFileKey(req.path(), req.kind() == v1::ShimLockRequest::FLOCK);
  // A lease's end under way on the file is over first: an unlock (or a
  // close) that the kernel saw after its look must reach the home after it.
  AwaitLeaseTurn(file_key);
  v1::LockRequest ask;
  ask.set_path(req.path());
  ask.set_flock(req.kind() == v1::ShimLockRequest::FLOCK);
  LockOwner owner;
  {
    std::lock_guard lock(mu_);
    auto it = owners_.find(key);
    if (it == owners_.end()) {  // ended under us (its process exited)
      resp.set_err(ESRCH);
      return resp;
    }
    owner = it->second.id;
  }
  ToWire(owner, ask.mutable_owner());
  const LockType type = TypeOf(req.type());
  const LockSpan span = req.end() <= req.start() ? LockSpan{req.start(), LockSpan::kToEnd} : LockSpan{req.start(), req.end()};
  ToWire(type, span, ask.mutable_span());

  auto holds_any = [&](std::optional<LockSpan> within) {
    for (const HeldLock& h : HeldOn(key, file_key))
      if (!within || h.span.Overlaps(*within)) return true;
    return false;
  };
  auto note = [&](const std::string& home, std::optional<LockType> set_type, bool release_all) {
    Note(key, file_key, home, set_type, span, release_all);
  };

  // This node holds a lease on the file: a shim that can is told to ask the
  // kernel (it looked before the lease was there); an unlock was done with
  // the kernel already (nothing of the file is held here but there); any
  // other call ends the lease first (a wait for a lock another program here
  // holds, an OFD lock, a shim without the lease's slot).
  if (const std::string lease_key = req.cmd() != v1::ShimLockRequest::CLOSED ? LeaseKeyOf(file_key) : "";
      !lease_key.empty()) {
    if (type == LockType::kUnlock) return resp;
    if (req.lease_ok() && req.kind() != v1::ShimLockRequest::OFD) {
      out->set_leased(true);
      return resp;
    }
    EndLease(req.path(), ask.flock(), /*tell_home=*/true, lease_key);
  }

  v1::LockResponse answer;
  std::string home;
  if (req.cmd() == v1::ShimLockRequest::CLOSED || type == LockType::kUnlock) {
    const bool closed = req.cmd() == v1::ShimLockRequest::CLOSED;
    // What this node holds is recorded first, for the next holder elsewhere;
    // an unlock of nothing known here (an agent restarted since the lock
    // was taken) still goes to the home, which may hold it.
    if (holds_any(closed ? std::nullopt : std::optional<LockSpan>(span)))
      *ask.mutable_fence() = Fence(HoldsWrite(key, file_key) ? req.path() : "");
    ask.set_op(closed ? v1::LockRequest::RELEASE : v1::LockRequest::SET);
    Status s = AskHome(ask, &answer, &home);
    // Released here at once; a home that did not take it hears it again.
    note(home, closed ? std::nullopt : std::optional<LockType>(LockType::kUnlock), closed);
    if (!s.ok()) {
      spdlog::warn("locks: release of /{} not delivered yet: {}", req.path(), s.message());
      RetryRelease(ask);
    }
    return resp;
  }
  if (req.cmd() == v1::ShimLockRequest::TEST) {
    ask.set_op(v1::LockRequest::TEST);
    if (Status s = AskHomePastLeases(ask, &answer, &home);
        !s.ok() || answer.outcome() == v1::LockResponse::NO_QUORUM) {
      resp.set_err(s.ok() ? ENOLCK : Errno(s));
      resp.set_message(s.ok() ? "no majority of the members is reachable" : s.message());
      return resp;
    }
    if (answer.outcome() == v1::LockResponse::CONFLICT) {
      out->set_type(answer.holder_span().type());
      out->set_start(answer.holder_span().start());
      out->set_end(answer.holder_span().end());
      out->set_pid(GetlkPid(answer.holder()));
    } else {
      out->set_type(2);
    }
    return resp;
  }
  ask.set_op(v1::LockRequest::SET);
  parts_.locked.Note(req.path());
  // A conversion or downgrade of a lock held here may let others in (a
  // failed flock conversion gives the old lock up): its fence goes with it.
  if (holds_any(span)) *ask.mutable_fence() = Fence(HoldsWrite(key, file_key) ? req.path() : "");
  // Nothing of the file held here: the lease may be had (nobody holds a
  // lock on it), and the shim asks the kernel.
  if (req.lease_ok() && req.kind() != v1::ShimLockRequest::OFD && !holds_any(std::nullopt) &&
      TryLease(req.path(), ask.flock())) {
    out->set_leased(true);
    return resp;
  }
  if (req.cmd() == v1::ShimLockRequest::SET_WAIT) return Wait(asked, ask, key);
  Status s = AskHomePastLeases(ask, &answer, &home);
  if (!s.ok() || answer.outcome() == v1::LockResponse::NO_QUORUM) {
    resp.set_err(s.ok() ? ENOLCK : Errno(s));
    resp.set_message(s.ok() ? "no majority of the members is reachable" : s.message());
    note(home, std::nullopt, false);
    return resp;
  }
  if (answer.outcome() == v1::LockResponse::CONFLICT) {
    resp.set_err(EAGAIN);
    note(home, std::nullopt, /*release_all=*/ask.flock());  // a failed flock conversion gave the old lock up
    return resp;
  }
  ApplyFences(answer);
  note(home, type, false);
  return resp;
}

std::vector<HeldLock> NodeLocks::HeldOn(const std::string& key, const std::string& file_key) {
  std::lock_guard lock(mu_);
  auto it = owners_.find(key);
  if (it == owners_.end()) return {};
  auto f = it->second.files.find(file_key);
  return f == it->second.files.end() ? std::vector<HeldLock>{} : f->second.all();
}

bool NodeLocks::HoldsWrite(const std::string& key, const std::string& file_key) {
  for (const HeldLock& h : HeldOn(key, file_key))
    if (h.type == LockType::kWrite) return true;
  return false;
}

void NodeLocks::RetryRelease(v1::LockRequest release) {
  reclaim_pool_.Submit([this, release = std::move(release)]() mutable {
    for (int attempt = 0; attempt < 40; ++attempt) {
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
      }
      std::this_thread::sleep_for(kRetryUnreachable);
      v1::LockResponse answer;
      if (AskHome(release, &answer, nullptr).ok()) return;
    }
    spdlog::warn("locks: release of /{} never delivered (its home drops it if it declares this node dead)",
                 release.path());
  });
}

void NodeLocks::Note(const std::string& key, const std::string& file_key, const std::string& home,
                     std::optional<LockType> type, const LockSpan& span, bool release_all) {
  std::lock_guard lock(mu_);
  auto it = owners_.find(key);
  if (it == owners_.end()) return;
  FileLocks& held = it->second.files[file_key];
  if (release_all) held.Release(it->second.id);
  if (type) held.Apply(it->second.id, *type, span);
  if (held.empty()) {
    it->second.files.erase(file_key);
    it->second.homes.erase(file_key);
  } else {
    it->second.homes[file_key] = home;
  }
}

void NodeLocks::GiveBack(const v1::LockRequest& granted, const std::string& key) {
  v1::LockRequest unlock = granted;
  unlock.set_op(v1::LockRequest::SET);
  unlock.set_wait(false);
  unlock.mutable_span()->set_type(static_cast<int32_t>(LockType::kUnlock));
  unlock.clear_fence();
  v1::LockResponse answer;
  std::string home;
  if (Status s = AskHome(unlock, &answer, &home); !s.ok())
    spdlog::warn("locks: a lock on /{} granted to a wait given up is not given back yet: {}", granted.path(),
                 s.message());
  else
    Note(key, LockFileKey(granted.path(), granted.flock()), home, LockType::kUnlock, SpanOf(granted.span()), false);
}

v1::ShimResponse NodeLocks::Wait(const Asked& asked, v1::LockRequest& ask, const std::string& key) {
  v1::ShimResponse resp;
  resp.mutable_lock();
  const LockSpan span = SpanOf(ask.span());
  const LockType type = TypeOf(ask.span().type());
  const std::string file_key = LockFileKey(ask.path(), ask.flock());
  const uint64_t wait_id = asked.wait_id;
  ask.set_wait(true);
  ask.set_wait_id(wait_id);
  std::string home;  // where the wait is queued, once it is
  v1::AwaitLockRequest await;  // the waits at home, a window at a time (and the give-up)
  await.set_path(ask.path());
  await.set_flock(ask.flock());
  await.set_node_id(parts_.self_id);
  await.set_wait_id(wait_id);
  await.set_window_ms(static_cast<uint32_t>(kAwaitWindow.count()));
  // Granted: held here too; a wait given up meanwhile (the program's call
  // ended with EINTR, or the program is gone) gives it straight back.
  auto granted = [&](const v1::LockResponse& answer, const std::string& at) {
    Note(key, file_key, at, type, span, false);
    if (!Cancelled(wait_id)) ApplyFences(answer);
    if (Cancelled(wait_id)) {  // before or while the fences were waited for
      GiveBack(ask, key);
      resp.set_err(Interrupted());
    }
    return resp;
  };
  // Given up while queued: the home drops the wait, or says it was granted first.
  auto give_up = [&]() {
    if (!home.empty()) {
      v1::AwaitLockRequest cancel = await;
      cancel.set_cancel(true);
      cancel.set_window_ms(0);  // answered at once
      v1::LockResponse last;
      if (AwaitAt(home, cancel, &last).ok() && last.outcome() == v1::LockResponse::GRANTED) {
        Note(key, file_key, home, type, span, false);
        GiveBack(ask, key);
      }
    }
    resp.set_err(Interrupted());
    return resp;
  };
  for (;;) {
    if (Cancelled(wait_id)) return give_up();
    v1::LockResponse answer;
    std::string at;
    Status s = AskHome(ask, &answer, &at);
    if (!s.ok() || answer.outcome() == v1::LockResponse::NO_QUORUM) {  // the home is away: ask again
      std::this_thread::sleep_for(kRetryUnreachable);
      continue;
    }
    if (answer.outcome() == v1::LockResponse::GRANTED) return granted(answer, at);
    if (answer.outcome() != v1::LockResponse::QUEUED) {
      resp.set_err(ENOLCK);
      return resp;
    }
    home = at;
    if (ask.flock()) Note(key, file_key, home, std::nullopt, span, /*release_all=*/true);  // the kernel's conversion rule
    // A lease in the way is returned (asked again each window while the
    // home names it in the way).
    if (IsLeaseOwnerKey(answer.holder().key())) ReturnLeaseOf(answer.holder(), ask.path(), ask.flock(), kRecallTimeout);
    // Queued: wait at the home, a window at a time, until granted.
    for (;;) {
      if (Cancelled(wait_id)) return give_up();
      v1::LockResponse waited;
      Status w = AwaitAt(home, await, &waited);
      if (w.ok() && waited.outcome() == v1::LockResponse::GRANTED) return granted(waited, home);
      if (!w.ok() || waited.outcome() != v1::LockResponse::QUEUED) break;  // moved or away: queue again
      if (IsLeaseOwnerKey(waited.holder().key())) ReturnLeaseOf(waited.holder(), ask.path(), ask.flock(), kRecallTimeout);
    }
  }
}

void NodeLocks::ReleaseOwner(const std::string& key) {
  std::map<std::string, std::string> homes;  // file key -> home
  LockOwner id;
  {
    std::lock_guard lock(mu_);
    auto it = owners_.find(key);
    if (it == owners_.end()) return;
    id = it->second.id;
    for (const auto& [file_key, held] : it->second.files) homes[file_key] = it->second.homes[file_key];
    DropOwnerLocked(key);
  }
  if (homes.empty()) return;
  for (const auto& [file_key, home] : homes) AwaitLeaseTurn(file_key);  // as in Handle
  const v1::LockFence fence = Fence();
  for (const auto& [file_key, home] : homes) {
    v1::LockRequest release;
    release.set_path(file_key.substr(2));
    release.set_flock(file_key[0] == 'f');
    ToWire(id, release.mutable_owner());
    release.set_op(v1::LockRequest::RELEASE);
    *release.mutable_fence() = fence;
    v1::LockResponse answer;
    if (Status s = AskHome(release, &answer, nullptr); !s.ok()) {
      spdlog::warn("locks: the end of {}'s lock on /{} not delivered yet: {}", key, release.path(), s.message());
      RetryRelease(release);
    }
  }
}

void NodeLocks::MembersChanged() {
  ++members_generation_;
  // Members whose agent restarted (a new incarnation) forgot the locks they
  // were home to: those held here are reclaimed there, within its grace.
  std::set<std::string> restarted;
  bool self_restarted = false;
  const std::vector<v1::Node> members = parts_.members.Nodes();
  {
    std::lock_guard lock(mu_);
    for (const v1::Node& n : members) {
      if (n.incarnation() == 0) continue;
      uint64_t& known = incarnations_[n.node_id()];
      if (known != 0 && known != n.incarnation()) {
        if (n.self()) self_restarted = true;
        else restarted.insert(n.node_id());
      }
      known = n.incarnation();
    }
    // This node went on as a new incarnation (it was stopped): its own home
    // forgot its tables, and the others may have declared it dead and
    // dropped its locks. Its programs' locks are reclaimed at every home.
    if (self_restarted)
      for (const v1::Node& n : members) restarted.insert(n.node_id());
  }
  if (self_restarted) spdlog::info("locks: this node is a new incarnation: its programs' locks are reclaimed at every home");
  else
    for (const std::string& node : restarted) spdlog::info("locks: node {} restarted: its locks are reclaimed", node);
  ReclaimMoved(restarted);
  // A lease whose home moved ends here (the new home never granted it); the
  // locks its programs hold are reclaimed there as any others.
  const std::vector<std::string> nodes = NotDead();
  EndLeases([&](const Lease& lease) { return LockHome::HomeOf(lease.path, nodes) != lease.home; },
            /*tell_home=*/false, [this] { ReclaimMoved({}); });
}

size_t NodeLocks::EndLeases(const std::function<bool(const Lease&)>& which, bool tell_home,
                            std::function<void()> after) {
  std::vector<Lease> ended;
  {  // the slots at once: the shims ask the agent from their next call on
    std::lock_guard lock(mu_);
    for (const auto& [file_key, lease] : leases_)
      if (which(lease)) {
        if (parts_.lease_slots != nullptr) parts_.lease_slots->End(lease.slot, lease.seq);
        ended.push_back(lease);
      }
  }
  const size_t count = ended.size();
  if (count == 0) return 0;
  // The conversions wait their turn on the pool (EndLease reads the kernel and may ask the home).
  reclaim_pool_.Submit([this, ended = std::move(ended), tell_home, after = std::move(after)] {
    for (const Lease& lease : ended) EndLease(lease.path, lease.flock, tell_home, lease.key);
    if (after) after();
  });
  return count;
}

bool NodeLocks::Majority() {
  return parts_.members.SeesMajority() && parts_.members.HeardByMajorityWithin(kHeardWithin);
}

void NodeLocks::LeasesLapsed() {
  spdlog::warn("locks: this node's lock leases lapsed (no majority hears it, or the agent was stopped): they end");
  EndLeases([](const Lease&) { return true; }, /*tell_home=*/true);
}

void NodeLocks::AliveChanged() {
  const bool majority = Majority();
  if (parts_.lease_slots != nullptr) parts_.lease_slots->SetTrusted(majority);
  if (majority) return;
  if (size_t ended = EndLeases([](const Lease&) { return true; }, /*tell_home=*/false); ended != 0)
    spdlog::warn("locks: no majority of the members is reachable: {} leases end", ended);
}

void NodeLocks::ReclaimMoved(const std::set<std::string>& restarted) {
  // Each held lock whose home moved (or restarted) is reclaimed at its
  // home, on a thread of its own (ahead of lock calls that may wait out the
  // grace); so is a lease whose home restarted.
  struct Claim {
    std::string key;
    LockOwner owner;
    std::string file_key;
    std::string home;
  };
  std::vector<Claim> claims;
  std::vector<Lease> leases;
  const std::vector<std::string> nodes = NotDead();
  {
    std::lock_guard lock(mu_);
    for (auto& [key, owner] : owners_)
      for (auto& [file_key, held] : owner.files) {
        const std::string home = LockHome::HomeOf(file_key.substr(2), nodes);
        if (owner.homes[file_key] != home || restarted.contains(home)) claims.push_back({key, owner.id, file_key, home});
      }
    for (const auto& [file_key, lease] : leases_)
      if (restarted.contains(lease.home)) leases.push_back(lease);
  }
  for (Lease& lease : leases) {
    reclaim_pool_.Submit([this, lease = std::move(lease)] {
      v1::LockRequest reclaim;
      reclaim.set_path(lease.path);
      reclaim.set_flock(lease.flock);
      ToWire(LeaseOwner(lease.key), reclaim.mutable_owner());
      reclaim.set_op(v1::LockRequest::RECLAIM);
      ToWire(LockType::kWrite, LockSpan{0, LockSpan::kToEnd}, reclaim.add_held());
      for (int attempt = 0; attempt < 20; ++attempt) {
        {
          std::lock_guard lock(mu_);
          auto it = leases_.find(LockFileKey(lease.path, lease.flock));
          if (stopping_ || it == leases_.end() || it->second.key != lease.key) return;  // ended meanwhile
        }
        v1::LockResponse answer;
        Status s = AskHome(reclaim, &answer, nullptr);
        if (s.ok() && answer.outcome() == v1::LockResponse::GRANTED) return;
        if (s.ok() && answer.outcome() == v1::LockResponse::CONFLICT) {
          spdlog::error("locks: the lease on /{} is lost: its home gave {} a lock meanwhile", lease.path,
                        answer.holder().key());
          EndLease(lease.path, lease.flock, /*tell_home=*/true, lease.key);  // what does not conflict is kept
          return;
        }
        std::this_thread::sleep_for(kRetryUnreachable);
      }
      spdlog::warn("locks: the lease on /{} could not be reclaimed at its restarted home: it ends", lease.path);
      EndLease(lease.path, lease.flock, /*tell_home=*/true, lease.key);
    });
  }
  for (Claim& c : claims) {
    reclaim_pool_.Submit([this, c = std::move(c)] {
      v1::LockRequest reclaim;
      reclaim.set_path(c.file_key.substr(2));
      reclaim.set_flock(c.file_key[0] == 'f');
      ToWire(c.owner, reclaim.mutable_owner());
      reclaim.set_op(v1::LockRequest::RECLAIM);
      for (int attempt = 0; attempt < 20; ++attempt) {
        {  // what the owner holds now (it may have unlocked since the move)
          std::lock_guard lock(mu_);
          if (stopping_) return;
          reclaim.clear_held();
          auto it = owners_.find(c.key);
          if (it == owners_.end() || !it->second.files.contains(c.file_key)) return;
          for (const HeldLock& h : it->second.files[c.file_key].Of(c.owner)) ToWire(h.type, h.span, reclaim.add_held());
        }
        v1::LockResponse answer;
        std::string home;
        Status s = AskHome(reclaim, &answer, &home);
        if (s.ok() && answer.outcome() == v1::LockResponse::GRANTED) {
          std::lock_guard lock(mu_);
          if (auto it = owners_.find(c.key); it != owners_.end() && it->second.files.contains(c.file_key))
            it->second.homes[c.file_key] = home;
          spdlog::info("locks: {}'s lock on /{} reclaimed at node {}", c.owner.key, reclaim.path(), home);
          return;
        }
        if (s.ok() && answer.outcome() == v1::LockResponse::CONFLICT) {
          // Granted to another while this node could not reach the home:
          // the program here holds it no more, and cannot be told.
          spdlog::error("locks: {}'s lock on /{} is lost: node {} gave it to {} meanwhile", c.owner.key,
                        reclaim.path(), home, answer.holder().key());
          std::lock_guard lock(mu_);
          if (auto it = owners_.find(c.key); it != owners_.end()) {
            it->second.files.erase(c.file_key);
            it->second.homes.erase(c.file_key);
          }
          return;
        }
        std::this_thread::sleep_for(kRetryUnreachable);
      }
      spdlog::warn("locks: {}'s lock on /{} not reclaimed at its new home", c.owner.key, reclaim.path());
    });
  }
}

NodeLocks::LeaseTurn::LeaseTurn(NodeLocks& locks, std::string file_key) : locks_(locks), file_key_(std::move(file_key)) {
  std::unique_lock lock(locks_.mu_);
  locks_.lease_cv_.wait(lock, [&] { return !locks_.lease_turns_.contains(file_key_); });
  locks_.lease_turns_.insert(file_key_);
}

NodeLocks::LeaseTurn::~LeaseTurn() {
  std::lock_guard lock(locks_.mu_);
  locks_.lease_turns_.erase(file_key_);
  locks_.lease_cv_.notify_all();
}

void NodeLocks::NoLeaseForAWhile(const std::string& file_key) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  if (no_lease_until_.size() >= 10'000) std::erase_if(no_lease_until_, [&](const auto& e) { return e.second <= now; });
  no_lease_until_[file_key] = now + kNoLeaseAfterRefusal;
}

void NodeLocks::AwaitLeaseTurn(const std::string& file_key) {
  std::unique_lock lock(mu_);
  lease_cv_.wait(lock, [&] { return !lease_turns_.contains(file_key); });
}

std::string NodeLocks::LeaseKeyOf(const std::string& file_key) {
  std::lock_guard lock(mu_);
  auto it = leases_.find(file_key);
  return it == leases_.end() ? "" : it->second.key;
}

size_t NodeLocks::LeaseCount() {
  std::lock_guard lock(mu_);
  return leases_.size();
}

bool NodeLocks::TryLease(const std::string& path, bool flock) {
  if (parts_.lease_slots == nullptr || kernel_dev_id_.empty() || !recovered_.load() || !Majority()) return false;
  const auto now = std::chrono::steady_clock::now();
  // A predecessor's shims may still trust its slots (proto/state_page.h).
  if (now < started_ + std::chrono::nanoseconds(kLockLeaseStartDelayNs)) return false;
  const std::string file_key = LockFileKey(path, flock);
  {
    std::lock_guard lock(mu_);
    if (stopping_) return false;
    if (auto it = no_lease_until_.find(file_key); it != no_lease_until_.end()) {
      if (now < it->second) return false;
      no_lease_until_.erase(it);
    }
  }
  LeaseTurn turn(*this, file_key);
  if (!LeaseKeyOf(file_key).empty()) return true;  // another program's call got it meanwhile
  struct stat st;
  if (stat((parts_.view_path + "/" + path).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  const std::string key = fmt::format("{}.{}", lease_prefix_, next_lease_id_++);
  const uint64_t generation = members_generation_.load();
  bool slot_kept = false;
  v1::LockRequest ask;
  ask.set_path(path);
  ask.set_flock(flock);
  ToWire(LeaseOwner(key), ask.mutable_owner());
  ask.set_op(v1::LockRequest::SET);
  ToWire(LockType::kWrite, LockSpan{0, LockSpan::kToEnd}, ask.mutable_span());
  v1::LockResponse answer;
  std::string home;
  if (Status s = AskHome(ask, &answer, &home); !s.ok() || answer.outcome() != v1::LockResponse::GRANTED) {
    NoLeaseForAWhile(file_key);
    return false;
  }
  ApplyFences(answer);  // what others wrote before their last unlock, as for any grant
  auto give_back = [&] {  // no program used it yet; not retried (see EndLease): a later return ends it
    v1::LockRequest back = ask;
    back.set_op(v1::LockRequest::RETURN);
    back.clear_span();
    (void)AskHome(back, &answer, nullptr);
    NoLeaseForAWhile(file_key);
    return false;
  };
  uint64_t seq = 0;
  const int slot = parts_.lease_slots->Install(st.st_dev, st.st_ino, flock, &seq);
  if (slot < 0) return give_back();  // every slot it may take is in use, or no majority hears this node
  {
    // Kept only if membership did not move while it was asked (MembersChanged
    // and AliveChanged looked at the leases before it was among them).
    std::lock_guard lock(mu_);
    if (!stopping_ && Majority() && members_generation_.load() == generation &&
        LockHome::HomeOf(path, NotDead()) == home) {
      leases_[file_key] = Lease{path, flock, st.st_dev, st.st_ino, slot, seq, home, key};
      // What this node noted of the file before is the kernel's now: only a
      // lease's end left such notes here (the home held nothing else), and
      // the kernel holds every lock they name.
      for (auto& [owner_key, owner] : owners_) {
        owner.files.erase(file_key);
        owner.homes.erase(file_key);
      }
      slot_kept = true;
    }
  }
  if (!slot_kept) {
    parts_.lease_slots->End(slot, seq);
    return give_back();
  }
  spdlog::debug("locks: /{}: this node holds the lease on its {} locks", path, flock ? "flock" : "fcntl");
  return true;
}

bool NodeLocks::EndLease(const std::string& path, bool flock, bool tell_home, const std::string& named,
                         bool* unconverted_out) {
  const std::string file_key = LockFileKey(path, flock);
  LeaseTurn turn(*this, file_key);
  std::optional<Lease> lease;
  {
    std::lock_guard lock(mu_);
    if (auto it = leases_.find(file_key); it != leases_.end()) {
      lease = it->second;
      leases_.erase(it);
    }
  }
  // The slot first: a shim's kernel call that saw it end asks the agent
  // after; one that did not is in the kernel's locks read below.
  if (lease && parts_.lease_slots != nullptr) parts_.lease_slots->End(lease->slot, lease->seq);
  struct stat st {};
  if (lease) {
    st.st_dev = lease->dev;
    st.st_ino = lease->ino;
  } else if (stat((parts_.view_path + "/" + path).c_str(), &st) != 0) {
    st.st_ino = 0;  // no file: no kernel locks to convert
  }
  const std::string home = lease && !tell_home ? lease->home : LockHome::HomeOf(path, NotDead());
  std::vector<v1::LockHeld> converted;
  std::set<std::string> seen;
  bool unconverted = false;
  for (const KernelLock& k : st.st_ino == 0 || kernel_dev_id_.empty()
                                 ? std::vector<KernelLock>{}
                                 : KernelLocksOn(kernel_dev_id_, st.st_dev, st.st_ino, flock, kShadowBase)) {
    std::string key;
    int err = ENOLCK;
    const uid_t uid = static_cast<uid_t>(EffectiveUidOf(k.pid));  // -1 (gone) matches no one's token
    if (!flock) {
      std::lock_guard lock(mu_);
      err = PosixOwnerLocked(k.pid, uid, &key);
    } else {
      int copy_err = ENOLCK;
      const int copy = CopyLockDescriptor(k, &copy_err);
      struct stat file;
      if (copy >= 0 && fstat(copy, &file) == 0 && file.st_dev == st.st_dev && file.st_ino == st.st_ino) {
        std::lock_guard lock(mu_);
        err = OfdOwnerLocked(copy, k.pid, uid, file, &key);
      } else if (copy < 0 && copy_err != ESRCH) {
        err = copy_err != 0 ? copy_err : ENOLCK;  // (why it cannot be copied, for the log)
      } else {
        // The descriptor is another file's now, or its process is exiting
        // (a shell's sleep that inherited it ends so): it holds nothing
        // here. Any other holder of the description has its own line.
        err = ESRCH;
      }
      if (copy >= 0) close(copy);
    }
    if (err != 0) {
      // Its process is gone, and its lock; not so a flock lock no descriptor
      // could be seen of (fd -1), which /proc/locks names by the process that
      // took it: that one may be gone while another holds the description.
      const bool hidden = flock && k.fd < 0;
      if (err == ESRCH || (!hidden && kill(k.pid, 0) != 0 && errno == ESRCH)) continue;
      spdlog::error("locks: /{}: the lock process {} holds under this node's lease cannot be made the cluster's "
                    "({}): the lease stays with the home, if it still holds it (not after the home's restart, unless "
                    "the home is this node: then it is kept there anew), until a later return finds the lock gone",
                    path, k.pid, strerror(err));
      unconverted = true;
      continue;
    }
    const LockType type = k.write ? LockType::kWrite : LockType::kRead;
    const LockSpan span{k.start, k.end};
    if (flock && !seen.insert(key).second) continue;  // one description, seen through two descriptors
    {  // noted and sent only while its owner lives (its end, if it came first, sent nothing)
      std::lock_guard lock(mu_);
      auto it = owners_.find(key);
      if (it == owners_.end()) continue;
      it->second.files[file_key].Apply(it->second.id, type, span);
      it->second.homes[file_key] = home;
      v1::LockHeld* held = &converted.emplace_back();
      ToWire(it->second.id, held->mutable_owner());
      ToWire(type, span, held->mutable_span());
    }
  }
  NoLeaseForAWhile(file_key);  // a file another node wants
  if (unconverted_out != nullptr) *unconverted_out = unconverted;
  spdlog::debug("locks: /{}: {} lease ends, {} locks converted", path, lease ? "the" : "no", converted.size());
  if (!tell_home || unconverted) return !unconverted;
  v1::LockRequest ret;
  ret.set_path(path);
  ret.set_flock(flock);
  // The lease it ends: this node's, else the one the home named, else every
  // one of this node's predecessors there.
  ToWire(LeaseOwner(lease ? lease->key : !named.empty() ? named : lease_prefix_), ret.mutable_owner());
  ret.set_older_leases(!lease && named.empty());
  ret.set_op(v1::LockRequest::RETURN);
  for (v1::LockHeld& h : converted) *ret.add_converted() = std::move(h);
  *ret.mutable_fence() = Fence(path);  // what its programs wrote under it, for the next holder elsewhere
  v1::LockResponse answer;
  // Not retried: the lease stays with the home, whose next asker has this
  // node return it again (from the kernel's locks then, and this node's
  // account has them meanwhile); a late retry could end a newer lease.
  Status s = AskHome(ret, &answer, nullptr);
  if (s.ok() && lease && !named.empty() && named != lease->key) {  // the home named another of ours (one it kept)
    v1::LockRequest other = ret;
    other.clear_converted();
    other.mutable_owner()->set_key(named);
    s = AskHome(other, &answer, nullptr);
  }
  if (!s.ok()) spdlog::warn("locks: the end of the lease on /{} not delivered: {}", path, s.message());
  return s.ok() && answer.outcome() == v1::LockResponse::GRANTED;
}

void NodeLocks::KeepWholeForUnconverted(const std::string& path, bool flock) {
  v1::LockRequest reclaim;
  reclaim.set_path(path);
  reclaim.set_flock(flock);
  ToWire(LeaseOwner(fmt::format("{}.{}", lease_prefix_, next_lease_id_++)), reclaim.mutable_owner());
  reclaim.set_op(v1::LockRequest::RECLAIM);
  ToWire(LockType::kWrite, LockSpan{0, LockSpan::kToEnd}, reclaim.add_held());
  v1::LockResponse answer;
  Status s = AskHome(reclaim, &answer, nullptr);
  if (s.ok() && answer.outcome() == v1::LockResponse::GRANTED) {
    spdlog::warn("locks: /{}: kept whole for this node at its home (here) until that lock is gone", path);
    return;
  }
  spdlog::error("locks: /{}: the file could not be kept for that lock ({}): other nodes may lock it", path,
                s.ok() ? "its home gave " + answer.holder().key() + " a lock meanwhile" : s.message());
}

Status NodeLocks::OnReturnLease(const v1::ReturnLockLeaseRequest& req, v1::LockResponse* resp) {
  if (!IsValidNsKey(req.path())) return Status::InvalidArgument("not a path in the cluster");
  std::this_thread::sleep_until(started_ + std::chrono::nanoseconds(kLockLeaseStartDelayNs));
  if (!EndLease(req.path(), req.flock(), /*tell_home=*/true, req.key()))
    return Status::Unavailable("the lease's locks did not reach the home (this node's log says why)");
  resp->set_outcome(v1::LockResponse::GRANTED);
  return Status::Ok();
}

bool NodeLocks::ReturnLeaseOf(const v1::LockOwner& lease, const std::string& path, bool flock,
                              std::chrono::milliseconds timeout) {
  const std::string& node_id = lease.node_id();
  if (node_id == parts_.self_id) return EndLease(path, flock, /*tell_home=*/true, lease.key());  // ours
  // A node not heard from lately is not waited for (its lease ends when it is declared dead).
  std::optional<PeerAddress> peer = parts_.members.AliveOther(node_id);
  if (!peer || peer->address.empty()) return false;
  v1::ReturnLockLeaseRequest req;
  req.set_path(path);
  req.set_flock(flock);
  req.set_key(lease.key());
  v1::LockResponse resp;
  // The holder records its view first (a fence): as long as a release's.
  Status s = parts_.network.To(peer->address).ReturnLockLease(req, &resp, CallOptions{.timeout = timeout});
  if (!s.ok()) spdlog::warn("locks: node {} did not return its lease on /{}: {}", node_id, path, s.message());
  return s.ok();
}

Status NodeLocks::AskHomePastLeases(v1::LockRequest& req, v1::LockResponse* resp, std::string* home_out) {
  for (int attempt = 0;; ++attempt) {
    Status s = AskHome(req, resp, home_out);
    if (!s.ok() || resp->outcome() != v1::LockResponse::CONFLICT || !IsLeaseOwnerKey(resp->holder().key()) ||
        attempt == 3)
      return s;
    if (!ReturnLeaseOf(resp->holder(), req.path(), req.flock(), kRecallTimeout))
      return s;  // held there, as far as we know
  }
}

size_t NodeLocks::OwnerCount() {
  std::lock_guard lock(mu_);
  return owners_.size();
}

void NodeLocks::WatchLoop() {
  // The kernel sends a close's inotify event before it drops the closed
  // description's locks: a token still seen then is looked at again, five
  // times 50 ms apart.
  std::map<std::string, int> recheck;  // owner key -> looks left
  epoll_event events[16];
  for (;;) {
    int n = epoll_wait(epoll_fd_, events, 16, recheck.empty() ? -1 : 50);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;
    std::set<std::string> check, ended;
    bool stop = false, overflow = false;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        stop = true;
      } else if (fd == inotify_fd_) {
        alignas(inotify_event) char buf[4096];
        ssize_t got;
        while ((got = read(inotify_fd_, buf, sizeof buf)) > 0) {
          for (char* p = buf; p < buf + got;) {
            auto* ev = reinterpret_cast<inotify_event*>(p);
            std::lock_guard lock(mu_);
            if (ev->mask & IN_Q_OVERFLOW) overflow = true;  // closes were lost: look at every token
            if (auto it = owners_by_wd_.find(ev->wd); it != owners_by_wd_.end())
              check.insert(it->second.begin(), it->second.end());
            p += sizeof(inotify_event) + ev->len;
          }
        }
      } else {
        // The pidfd is readable once its process exited; asked again under
        // the lock, since the owner may have gone and its number been reused.
        std::lock_guard lock(mu_);
        pollfd exited{fd, POLLIN, 0};
        if (auto it = owners_by_pidfd_.find(fd); it != owners_by_pidfd_.end() && poll(&exited, 1, 0) == 1)
          ended.insert(it->second);
      }
    }
    if (stop) return;
    {
      std::lock_guard lock(mu_);
      if (overflow)
        for (const auto& [key, owner] : owners_)
          if (!owner.posix) check.insert(key);
      for (const std::string& key : check) recheck[key] = 5;
      for (auto it = recheck.begin(); it != recheck.end();) {
        auto owner = owners_.find(it->first);
        if (owner == owners_.end() || owner->second.posix) {
          it = recheck.erase(it);
        } else if (!TokenAlive(owner->second)) {
          ended.insert(it->first);
          it = recheck.erase(it);
        } else if (--it->second <= 0) {
          it = recheck.erase(it);  // still open somewhere
        } else {
          ++it;
        }
      }
      for (const std::string& key : ended)  // no more events for it while its locks are released
        if (auto it = owners_.find(key); it != owners_.end() && it->second.pidfd >= 0)
          epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second.pidfd, nullptr);
    }
    for (const std::string& key : ended) pool_.Submit([this, key] { ReleaseOwner(key); });
  }
}

}  // namespace onebox
