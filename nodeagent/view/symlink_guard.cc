#include "nodeagent/view/symlink_guard.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/daemon/thread_name.h"

namespace onebox {

namespace {

// What the page says after a clean shutdown: never 0 again.
constexpr uint64_t kMany = uint64_t{1} << 62;

}  // namespace

SymlinkGuard::SymlinkGuard(StatePage& page, const std::string& view_root)
    : page_(page),
      ready_(Clock::now() + std::chrono::nanoseconds(kSymlinkStartDelayNs)),
      wake_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!view_root.empty()) {
    // The same file across restarts (a shim may hold a lock on it that it
    // took under the agent before us): opened, never made anew.
    int root = open(view_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root >= 0) lock_fd_ = openat(root, kSymlinkLockFile, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (lock_fd_ >= 0) {
      fchmod(lock_fd_, 0644);  // every user's shim takes read locks
    } else {
      spdlog::warn("cannot open {}/{}: {}; stat keeps the confined lookup", view_root, kSymlinkLockFile,
                   strerror(errno));
    }
    if (root >= 0) close(root);
  }
  {
    std::lock_guard lock(mu_);
    PublishLocked();  // 1: unproven
  }
  page_.symlink_heartbeat_ns.store(CoarseMonotonicNs());
  page_.symlink_guard = StatePage::kSymlinkGuard;  // shims map the page only later (Hello)
  beat_ = std::thread([this] { Heartbeat(); });
  NameThread(beat_, "onebox-beat");
}

SymlinkGuard::~SymlinkGuard() {
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    PublishLocked();
    for (auto& [token, intent] : intents_)
      if (intent.pidfd >= 0) close(intent.pidfd);
    intents_.clear();
  }
  {
    std::lock_guard lock(beat_mu_);
    stopping_ = true;
  }
  beat_cv_.notify_all();
  if (beat_.joinable()) beat_.join();
  page_.symlink_heartbeat_ns.store(0);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (lock_fd_ >= 0) close(lock_fd_);
}

void SymlinkGuard::Heartbeat() {
  std::unique_lock lock(beat_mu_);
  while (!stopping_) {
    if (readers_.empty()) {
      RestLocked();
      beat_cv_.wait(lock, [&] { return stopping_ || !readers_.empty(); });
      continue;
    }
    BeatLocked();
    beat_cv_.wait_for(lock, std::chrono::nanoseconds(kSymlinkHeartbeatNs), [&] { return stopping_; });
  }
}

void SymlinkGuard::BeatLocked() {
  // GAPS in the header: the count stays up while the recorder is behind.
  int64_t now = CoarseMonotonicNs();
  int64_t caught_up = caught_up_ns_.load();
  bool behind = caught_up != kRecorderWaiting && now - caught_up > kRecorderLagNs;
  if (behind != beat_lagging_ || resting_) {
    beat_lagging_ = behind;
    std::lock_guard guard_lock(mu_);
    lagging_ = behind;
    resting_ = false;
    PublishLocked();
  }
  page_.symlink_heartbeat_ns.store(now);
}

void SymlinkGuard::RestLocked() {
  std::lock_guard guard_lock(mu_);
  resting_ = true;
  PublishLocked();
}

void SymlinkGuard::PageMapped(uint64_t connection) {
  if (connection == 0) return;
  std::lock_guard lock(beat_mu_);
  bool was_resting = readers_.empty();
  readers_.insert(connection);
  if (!was_resting) return;
  BeatLocked();  // before the shim has the page: fresh, and the count as it should be
  beat_cv_.notify_all();
}

void SymlinkGuard::PublishLocked() {
  uint64_t value = closed_                            ? kMany
                   : proven_ && !lagging_ && !resting_ ? 0
                                                       : std::max<uint64_t>(1, intents_.size() + known_);
  if (page_.symlinks.load() == value) return;
  // The epoch first: a shim that sees the new count also sees the new epoch.
  page_.symlink_epoch.fetch_add(1);
  page_.symlinks.store(value);
}

Result<uint64_t> SymlinkGuard::Announce(pid_t owner, uint64_t connection) {
  std::this_thread::sleep_until(ready_);  // see (4) in the header
  int pidfd = -1;
  if (owner > 0) {
    pidfd = static_cast<int>(syscall(SYS_pidfd_open, owner, 0));  // close-on-exec
    // Gone already: it will make nothing. Otherwise (no pidfd for it here)
    // only its Release ends the intent.
    if (pidfd < 0 && errno == ESRCH) return Status::Unavailable(fmt::format("process {} is gone", owner));
  }
  std::lock_guard lock(mu_);
  if (closed_) {
    if (pidfd >= 0) close(pidfd);
    return Status::Unavailable("the agent is stopping");
  }
  uint64_t token = next_token_++;
  intents_[token] = {owner, pidfd, connection};
  ++raises_;
  proven_ = false;
  PublishLocked();
  return token;
}

bool SymlinkGuard::Release(uint64_t token, pid_t owner) {
  {
    std::lock_guard lock(mu_);
    auto it = intents_.find(token);
    if (it == intents_.end() || it->second.owner != owner) return false;
    if (it->second.pidfd >= 0) close(it->second.pidfd);
    intents_.erase(it);
    PublishLocked();
  }
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  return true;
}

void SymlinkGuard::ConnectionClosed(uint64_t connection) {
  if (connection == 0) return;
  {
    std::lock_guard lock(beat_mu_);
    if (readers_.erase(connection) > 0 && readers_.empty()) RestLocked();  // now, not a beat later
  }
  bool released = false;
  {
    std::lock_guard lock(mu_);
    for (auto it = intents_.begin(); it != intents_.end();) {
      if (it->second.connection != connection) {
        ++it;
        continue;
      }
      if (it->second.pidfd >= 0) close(it->second.pidfd);
      it = intents_.erase(it);
      released = true;
    }
    if (released) PublishLocked();
  }
  if (released) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  }
}

void SymlinkGuard::ClearWake() {
  uint64_t n;
  [[maybe_unused]] ssize_t r = read(wake_fd_, &n, sizeof n);
}

uint64_t SymlinkGuard::intents() const {
  std::lock_guard lock(mu_);
  return intents_.size();
}

void SymlinkGuard::SetKnown(uint64_t n) {
  std::lock_guard lock(mu_);
  if (n > known_) {
    ++raises_;
    proven_ = false;
  }
  known_ = n;
  PublishLocked();
}

void SymlinkGuard::Unprove() {
  std::lock_guard lock(mu_);
  ++raises_;
  proven_ = false;
  PublishLocked();
}

void SymlinkGuard::ReapLocked() {
  bool reaped = false;
  for (auto it = intents_.begin(); it != intents_.end();) {
    pollfd p{it->second.pidfd, POLLIN, 0};
    if (it->second.pidfd >= 0 && poll(&p, 1, 0) > 0) {  // its process has exited
      close(it->second.pidfd);
      it = intents_.erase(it);
      reaped = true;
    } else {
      ++it;
    }
  }
  if (reaped) PublishLocked();
}

SymlinkGuard::Plan SymlinkGuard::PlanProof() {
  std::lock_guard lock(mu_);
  ReapLocked();
  Plan plan;
  if (closed_ || proven_) return plan;
  if (!intents_.empty()) {
    // Released by Release (which wakes the recorder) or by the owner's exit (looked at now and then).
    bool waits_for_exit = std::any_of(intents_.begin(), intents_.end(), [](auto& kv) { return kv.second.pidfd >= 0; });
    plan.timeout_ms = waits_for_exit ? 100 : -1;
    return plan;
  }
  if (known_ > 0) return plan;  // the recorder's events bring it down first
  Clock::time_point now = Clock::now();
  if (now < next_attempt_) {
    plan.timeout_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now).count() + 1);
    return plan;
  }
  plan.walk = true;
  plan.raises = raises_;
  return plan;
}

bool SymlinkGuard::LockForProof() {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  return lock_fd_ >= 0 && fcntl(lock_fd_, F_OFD_SETLK, &fl) == 0;
}

void SymlinkGuard::UnlockAfterProof() {
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fcntl(lock_fd_, F_OFD_SETLK, &fl);
}

bool SymlinkGuard::CommitProof(uint64_t raises, Clock::duration walk_took) {
  {
    std::lock_guard lock(mu_);
    if (!closed_ && raises == raises_ && intents_.empty() && known_ == 0) {
      proven_ = true;
      failures_ = 0;
      PublishLocked();
      return true;
    }
  }
  ProofFailed(walk_took);
  return false;
}

void SymlinkGuard::ProofFailed(Clock::duration walk_took) {
  std::lock_guard lock(mu_);
  // Back off, and never spend more than about a fifth of the time walking.
  failures_ = std::min(failures_ + 1, 7);
  Clock::duration wait = std::max<Clock::duration>(std::chrono::milliseconds(5) * (1 << failures_), 4 * walk_took);
  next_attempt_ = backoff_until_ = Clock::now() + wait;
}

void SymlinkGuard::ProofBlocked(Clock::duration walk_took) {
  ProofFailed(walk_took);
  std::lock_guard lock(mu_);
  next_attempt_ = Clock::now() + kObstacleRetry;
}

void SymlinkGuard::RetryProofSoon() {
  std::lock_guard lock(mu_);
  next_attempt_ = std::min(next_attempt_, backoff_until_);
}

}  // namespace onebox
