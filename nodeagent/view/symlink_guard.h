// The symlink-free view: while the agent's view provably holds no symlink, a
// shim may stat a cluster path with one fstatat(view_fd, "cluster/a/b")
// instead of openat2(RESOLVE_IN_ROOT) + fstatat + close. A lexically clean
// relative path (no "..", ".", empty or leading "/" component; the shim
// normalizes every path) walked from the view root can leave the view only
// through a symlink: with none on the way it stays inside, and the kernel's
// answer is the one the confined lookup gives.
//
// The page (proto/state_page.h) holds `symlinks`, an upper bound of the
// symlinks in the view, and `symlink_epoch`, which moves whenever `symlinks`
// changes. The shim (SymlinkFreeBegin/Still in state_page.h):
//
//   e1 = epoch; if symlinks != 0 or the heartbeat is stale: slow path
//   r = fstatat(view_fd, rel, ...)
//   fence; if symlinks != 0 or epoch != e1 or the heartbeat is stale:
//     throw r away (errno restored), slow path
//   return r
//
// SAFETY. The invariant: at every instant, symlinks == 0 on the page implies
// the view holds no symlink (apart from the native writers' gap below). Given
// it, a fast stat whose lookup met a symlink S saw symlinks == 0 at e1, so S
// appeared after that; S's appearance was preceded by a raise (epoch + 1), so
// the second look sees epoch != e1 (or symlinks != 0) and the result is
// dropped. An epoch that moves on every change also covers a raise and a
// lowering both between the two looks. The invariant holds because:
//
// 1. Raises come first. Nothing under the agent's control makes a symlink in
//    the view without Announce() first, and Announce() returns only after the
//    page says symlinks != 0 (epoch moved): the shim's symlink()/symlinkat()
//    asks over the socket and calls the kernel after the answer; the
//    materializer announces before PlaceSymlink. A shim that cannot reach
//    the agent fails the call (ENOTCONN, as every cluster call without an
//    agent). rename() and link() from a native path into the cluster are
//    EXDEV in the shim (preload/file_dir.cc), so no symlink, and no
//    directory holding some, is moved in through it. link() of a symlink
//    already in the view makes a second one while the first keeps the count
//    above 0.
// 2. An announce holds the count up until the symlink exists, twice over.
//    The intent is released by the shim after its symlinkat() returned
//    (Release, checked against the caller's pid), when its process is gone
//    (a pidfd taken at Announce), or when the connection it announced on
//    closes (the shim keeps it open until after its symlinkat() returned;
//    exec and a cancelled thread close it); an intent of a process that
//    lives on without releasing keeps the fast path off, never on. And the
//    shim holds a read lock on the view's kSymlinkLockFile (an OFD lock,
//    taken before it announces, dropped after the symlink is made), while a
//    proof (3) ends under the write lock: intents die with the agent, the
//    lock does not (a shim that announced to an agent that died, and makes
//    its symlink under the next one, holds the next one's proofs off). A
//    child forked meanwhile closes its copies of both descriptors. Another
//    thread of the program that closes one of them loses one guard, not
//    both; one that closes both makes that symlink a native writer's (GAPS).
// 3. The count comes down to 0 only by proof (CommitProof): with no intent
//    outstanding and nothing raised since the attempt began, the recorder
//    walks the whole view (every directory listed, never following anything,
//    each subdirectory checked to be the inode the listing named) and finds
//    no symlink; then it reads every inotify event queued so far, and any
//    move, creation or queue overflow voids the proof. Last, it takes the
//    write lock and commits only if the inotify queue is still empty
//    (FIONREAD; else it unlocks, reads what came, and looks again), so the
//    lock is held for a moment, never for a walk. A shim's symlink S made
//    during the walk, announced to a dead agent or not at all, is no hole:
//    the shim unlocked after S existed, so before the write lock was taken,
//    and S's IN_CREATE was queued before that (read, and the proof void, or
//    still queued, and no commit); a shim that holds its lock then stops the
//    commit; one that locks after it announces after it. Why a walk
//    cannot miss a symlink S that existed throughout it unless a move or
//    creation event is then in the queue: S is missed only if S, or a
//    directory above it, was renamed out of a directory X that the walk
//    listed (in part) after the rename (before it, the listing names it, and
//    the walk enters exactly that inode). A rename holds X's inode lock from
//    before the move until after it queued its IN_MOVED_FROM/TO events;
//    getdents() takes that lock too. So the events were queued before the
//    walk's listing of X returned, hence before the drain after the walk.
//    Moves need watches: every directory is watched before the walk (a new
//    one's IN_CREATE is handled, or still queued and so voids the proof),
//    and a failed watch blocks proofs until a rescan. A hard link plus
//    unlink moves a symlink without move events: the link's IN_CREATE voids
//    the proof. Announces during the walk move the raise counter, which the
//    commit checks under the same mutex. Mounts: the walk fails at a mount
//    point (another device, or another inode than listed), and a mount made
//    during the walk changes the agent's mount table, which the recorder
//    looks at (poll on /proc/self/mountinfo) before it commits: that voids
//    the proof too.
// 4. A dead agent's page stays mapped in its shims, frozen. The agent writes
//    a heartbeat every kSymlinkHeartbeatNs while a shim holds the page (and
//    holds the count up while none does: PageMapped); the shim's second look requires
//    it to be at most kSymlinkTrustNs old (and not from the future, as a
//    shim in another time namespace might see it). A successor agent (it
//    can start only once the store's lock is free, so after the old one
//    died) lets no symlink be made until kSymlinkStartDelayNs after it took
//    the store: by then every shim's old page is stale at the second look,
//    whatever the scheduler did to the shim in between. A clean shutdown
//    also sets the count to "many" at once.
//
// The recorder's own count of symlinks (what it saw in the view, kept as
// they come and go) decides only when a walk is worth trying, and raises the
// count when it finds a symlink nobody announced.
//
// GAPS (docs/compatibility.md): a native writer (a process without the shim,
// or a shim process writing the view's real location, e.g. through a dirfd
// the shim did not open) that makes a symlink is seen only when the recorder
// handles its inotify event; until then a fast stat may follow it. So the
// count is 0 only while the recorder keeps up: it says how far it has got
// (RecorderCaughtUp: every event queued before then is handled;
// RecorderWaiting: it waits in poll() on an empty queue), and the heartbeat
// thread, every kSymlinkHeartbeatNs, holds the count up while the recorder is
// more than kRecorderLagNs behind (hashing a large file, rescanning, waiting
// for the materializer's lock). The gap is then the time a waiting recorder
// takes to wake and handle the event (plus its rest, ViewRecorder::kRestMs,
// while the materializer places a burst), and at most about kRecorderLagNs +
// kSymlinkHeartbeatNs when it was busy; if the agent gets no CPU at all, the
// heartbeat goes stale too and shims stop trusting the page after
// kSymlinkTrustNs. Mounts are seen the same way: any change of the agent's
// mount table raises the count (Unprove) when the recorder sees it (a mount
// in the view may bring symlinks no event names; a mount made in another
// mount namespace is not seen). Lost inotify events (a queue overflow) raise
// it too. A directory the agent cannot list (not root, another user's 0700),
// a mount point in the view, or nesting deeper than 512 keeps the count up:
// no fast path, never a wrong one. Such an obstacle is not walked into again
// and again: the next walk waits for an event that may have removed it (it,
// or a directory above it, removed, moved, or its mode or owner changed; the
// mount table changed; events lost), or kObstacleRetry.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "consistency/status.h"
#include "proto/state_page.h"

namespace onebox {

// How far behind the view the recorder may be while the count may be 0.
constexpr int64_t kRecorderLagNs = 10'000'000;
// How long a proof waits after one met an obstacle, if nothing says it may be gone.
constexpr std::chrono::minutes kObstacleRetry{5};

class SymlinkGuard {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts at "unproven" (symlinks 1) and with the heartbeat running. Makes
  // kSymlinkLockFile in view_root (without it, or with "", no proof is ever
  // made: the count stays up).
  SymlinkGuard(StatePage& page, const std::string& view_root);
  ~SymlinkGuard();  // the count goes to "many" and the heartbeat stops

  // Before a symlink may appear in the view. Returns (a token for Release)
  // once the page says the view may hold one. owner: the process that will
  // make it (its exit releases the intent too); 0 for the agent itself.
  // connection: the shim connection it came on (its close releases the
  // intent too: ConnectionClosed), 0 for none. Unavailable when owner is
  // gone already.
  Result<uint64_t> Announce(pid_t owner, uint64_t connection = 0);
  // A shim on `connection` was given the page (Hello): the heartbeat runs
  // while any such connection is open, and rests, with the count up, while
  // none is (an idle agent does not wake every kSymlinkHeartbeatNs for
  // nobody). A forked child that inherited the page but not its parent's
  // connection finds the count up, or the heartbeat stale, once its last
  // connected relative is gone, and takes the slow path until it connects.
  void PageMapped(uint64_t connection);
  void ConnectionClosed(uint64_t connection);
  bool ready() const { return Clock::now() >= ready_; }  // Announce will not wait
  // The symlink is made (or was not). False when token is not owner's.
  bool Release(uint64_t token, pid_t owner);

  // The recorder's side. How many symlinks it knows in the view now.
  void SetKnown(uint64_t n);
  struct Plan {
    bool walk = false;     // walk the view now (attempt number `raises`)
    uint64_t raises = 0;
    int timeout_ms = -1;   // else: look again after this (-1: when woken)
  };
  Plan PlanProof();
  // At the end of a proof (and for a moment only: shims wait for it in
  // symlink()): no shim is between its announcement and its symlink while
  // this is held. False when a shim is (try later).
  bool LockForProof();
  void UnlockAfterProof();
  // The walk that began with plan `raises` found no symlink and nothing
  // moved meanwhile: the count goes to 0 unless anything was raised since.
  bool CommitProof(uint64_t raises, Clock::duration walk_took);
  // Something the recorder cannot follow changed (the mount table, lost
  // inotify events): the view may hold a symlink now; a proof under way is void.
  void Unprove();
  void ProofFailed(Clock::duration walk_took);
  // The walk met what it cannot pass (a mount point, a directory it may not
  // list): no walk for kObstacleRetry, or until RetryProofSoon.
  void ProofBlocked(Clock::duration walk_took);
  void RetryProofSoon();  // when the usual backoff allows
  // Readable when an intent was released (a proof may be worth trying).
  int wake_fd() const { return wake_fd_; }
  // How far the recorder has got (its thread): every inotify event queued
  // before as_of_ns (CoarseMonotonicNs) is handled, or it waits in poll() on
  // an empty queue. While it lags more than kRecorderLagNs behind, the count
  // on the page is up (GAPS above).
  void RecorderCaughtUp(int64_t as_of_ns) { caught_up_ns_.store(as_of_ns); }
  void RecorderWaiting() { caught_up_ns_.store(kRecorderWaiting); }
  void ClearWake();

  uint64_t symlinks() const { return page_.symlinks.load(); }
  uint64_t intents() const;

 private:
  struct Intent {
    pid_t owner;
    int pidfd;            // -1: not released by the owner's exit
    uint64_t connection;  // 0: not released by a close
  };
  void PublishLocked();
  void ReapLocked();
  void Heartbeat();
  void BeatLocked();  // under beat_mu_
  void RestLocked();  // under beat_mu_: the count up until the next PageMapped

  StatePage& page_;
  int lock_fd_ = -1;
  Clock::time_point ready_;  // no symlink is made before this
  int wake_fd_;
  mutable std::mutex mu_;
  std::map<uint64_t, Intent> intents_;
  uint64_t next_token_ = 1;
  uint64_t known_ = 0;
  uint64_t raises_ = 0;
  bool proven_ = false;  // no symlink in the view since the last proof
  bool closed_ = false;
  bool lagging_ = false;  // the recorder is behind (set by the heartbeat thread)
  bool resting_ = true;  // the heartbeat rests: no shim holds the page (written under beat_mu_ and mu_)
  int failures_ = 0;
  Clock::time_point next_attempt_{};
  Clock::time_point backoff_until_{};  // next_attempt_ but for an obstacle

  static constexpr int64_t kRecorderWaiting = INT64_MAX;
  std::atomic<int64_t> caught_up_ns_{kRecorderWaiting};  // none yet: nothing to lag behind

  std::mutex beat_mu_;
  std::condition_variable beat_cv_;
  bool stopping_ = false;
  std::set<uint64_t> readers_;  // connections given the page, still open
  bool beat_lagging_ = false;   // what the heartbeat last published of the recorder
  std::thread beat_;
};

}  // namespace onebox
