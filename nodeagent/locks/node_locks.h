// This node's side of cluster-wide advisory locks: the flock, fcntl, OFD
// and lockf calls of programs here (sent by the shim, local/shim_requests.h)
// go to each file's lock home (locks/lock_home.h), and the locks they hold
// end as the kernel would end them.
//
// Owners. A process's POSIX locks belong to "p<pid>.<start time>"; an open
// file description's flock and OFD locks to "o<token>". The token is a byte
// lock the agent places on the program's own open file description (through
// pidfd_getfd) far past any file's end, at kShadowBase + token: the kernel
// keeps it exactly as long as that description lives, across dup, fork and
// exec, and /proc/self/fdinfo names it, so every later call through any
// copy of the description finds the same owner.
//
// Ends. An unlock goes to the home at once. A POSIX owner's locks end when
// its process exits (a pidfd) or the shim says the process closed an fd of
// the file; an OFD owner's when its token is gone (checked at every close of
// the file: an inotify watch on the agent's own open of it). A node declared
// dead loses its locks at every home.
//
// Coherence. Before a lock of this node's programs is released, the agent
// records its view and gives the home its log position (the fence); a lock
// granted here after another node released it waits until this node has
// applied that node's log that far and put it in the view. So a program
// that takes a lock reads what the last holder elsewhere wrote before it
// unlocked, as NFS's lock-to-read coherence promises.
//
// Leases. A program's lock on a file nobody holds a lock on may bring this
// node a lease on the file's locks (locks/lease_slots.h): its programs then
// lock the file with the kernel until another node asks for the file's
// locks, when the lease ends and the kernel's locks on it are sent to the
// home as the owners' (a return). A lease is not asked again for a second
// after it was refused or recalled: a file several nodes lock stays with
// its home.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "consistency/status.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/local/shim_server.h"
#include "nodeagent/locks/lock_home.h"
#include "nodeagent/locks/kernel_locks.h"
#include "nodeagent/locks/lease_slots.h"
#include "nodeagent/locks/locked_paths.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "onebox/v1/shim.pb.h"
#include "proto/state_page.h"

namespace onebox {

class NodeLocks {
 public:
  // Where tokens lie on a file: past any offset a program locks in practice.
  static constexpr uint64_t kShadowBase = kLockMarkBase;  // proto/state_page.h
  // How long a grant waits for the fences' logs before it goes on without.
  static constexpr auto kFenceWait = std::chrono::seconds(5);
  static constexpr auto kNoLeaseAfterRefusal = std::chrono::seconds(1);

  struct Parts {
    std::string self_id;
    std::function<uint32_t()> self_index;  // for gpids (proto/gpid.h)
    std::string view_path;                 // where programs' descriptors of cluster files lead
    LockedPaths& locked;                   // every path a lock is set on, noted
    LockHome& home;
    Membership& members;
    PeerNetwork& network;
    // Records every change made to the view so far; this node's log position after it.
    std::function<Result<uint64_t>()> record_view;
    // Records the file at path now, as it is (a program may write it through
    // a descriptor it keeps open, which no event reports).
    std::function<Status(const std::string& path)> record_file;
    // Returns once this node applied node_id's log up to seq (Replicator::WaitAppliedFrom).
    std::function<Status(const std::string& node_id, uint64_t seq, std::chrono::milliseconds)> applied_from;
    // Returns once what this node applied is in its view (ViewMaterializer::Drain).
    std::function<void()> settle_view;
    // The shims' lease slots; none: no leases.
    LockLeaseSlots* lease_slots = nullptr;
  };
  explicit NodeLocks(Parts parts);
  ~NodeLocks();

  void Start();
  // Ends the waits under way (their programs get ENOLCK) and the watch.
  void Stop();
  // A shim's lock call from process pid, as this node's kernel names it:
  // answered through reply, from a thread of the pool (or one of its own
  // for a wait).
  void Serve(pid_t pid, uid_t uid, uint64_t connection, const v1::ShimLockRequest& req, ShimReply reply);
  // The shim's connection closed: a wait on it is given up (a signal
  // interrupted the program's call, or the program died).
  void ConnectionClosed(uint64_t connection);
  // Membership moved: locks held here whose home moved are reclaimed there.
  void MembersChanged();
  // Owners on this node holding locks now, for status and tests.
  size_t OwnerCount();
  // Leases this node holds now.
  size_t LeaseCount();
  // Another node asks for a file's locks (Peer/ReturnLockLease): this
  // node's lease on them ends, its programs' locks go to the home.
  Status OnReturnLease(const v1::ReturnLockLeaseRequest& req, v1::LockResponse* resp);
  // The members alive moved: without a majority, this node's leases end
  // here (its programs' next lock calls ask the agent, which grants none).
  void AliveChanged();
  // The lease slots' hooks (LockLeaseSlots::Hooks): whether they may be
  // trusted now, and that they all ended on their own.
  bool MayTrustLeases() { return Majority(); }
  void LeasesLapsed();


 private:
  struct Owner {
    LockOwner id;
    bool posix = false;
    uint64_t token = 0;    // an OFD owner's
    int watch_fd = -1;     // an OFD owner's: this agent's own open of its file
    int wd = -1;           // inotify watch on watch_fd's file
    int pidfd = -1;        // a POSIX owner's process
    uid_t uid = 0;         // whose it is: a token is another's owner only for the same user
    dev_t dev = 0;         // an OFD owner's file
    ino_t ino = 0;
    std::map<std::string, FileLocks> files;  // by "f/" or "c/" + path: what its home holds for it
    std::map<std::string, std::string> homes;  // by the same key: where they were granted
  };
  struct Lease {
    std::string path;
    bool flock = false;
    dev_t dev = 0;
    ino_t ino = 0;
    int slot = -1;
    uint64_t seq = 0;  // the slot's, as installed
    std::string home;  // where it was granted
    std::string key;   // its owner key there ("lease.<id>")
  };
  // Lease calls on one file run one at a time (the holder of a turn may ask the home).
  class LeaseTurn {
   public:
    LeaseTurn(NodeLocks& locks, std::string file_key);
    ~LeaseTurn();

   private:
    NodeLocks& locks_;
    std::string file_key_;
  };
  struct Asked {
    pid_t pid;
    uid_t uid;
    uint64_t connection;
    uint64_t wait_id;  // a SET_WAIT's, registered by Serve
    v1::ShimLockRequest req;
  };

  v1::ShimResponse Handle(const Asked& asked);
  // The owner a request is for (found or made, with its watch), once the
  // caller's descriptor is checked for a lock of type (2: any); an errno.
  int OwnerFor(const Asked& asked, int type, std::string* key);
  // The POSIX owner of process pid (made if new); under mu_.
  int PosixOwnerLocked(pid_t pid, uid_t uid, std::string* key);
  // The owner of the description copy is the agent's copy of (its token
  // found or placed); under mu_.
  int OfdOwnerLocked(int copy, pid_t pid, uid_t uid, const struct stat& st, std::string* key);
  // The lease on file_key, asked of its home: true when this node holds it.
  bool TryLease(const std::string& path, bool flock);
  // The owner key of this node's lease on file_key; "" for none.
  std::string LeaseKeyOf(const std::string& file_key);
  // Returns once no lease call on the file is under way.
  void AwaitLeaseTurn(const std::string& file_key);
  bool Majority();
  // No lease is asked for on the file for kNoLeaseAfterRefusal (refused, or
  // recalled: several nodes lock it).
  void NoLeaseForAWhile(const std::string& file_key);
  // This node's lease on the file ends (if it holds one): its slot, then the
  // kernel's locks on the view file noted as their owners'; tell_home: and
  // sent to the home with the lease's end (else a reclaim sends them).
  // Whether every lock converted and (tell_home) the home took them.
  // named: the lease's owner key as another node's home named it (if known).
  // unconverted (if given): whether a lock the kernel holds could not be
  // made its owner's (the home was then not told).
  bool EndLease(const std::string& path, bool flock, bool tell_home, const std::string& named = "",
                bool* unconverted = nullptr);
  // After a restart, at this node as the file's home (whose tables went with
  // its predecessor): a lock the kernel holds that could not be converted
  // keeps the whole file this node's, as a lease its predecessor would have
  // kept there, reclaimed within the home's grace. Another node's call on
  // the file then has this node return it (EndLease named), which succeeds
  // once the lock is gone.
  void KeepWholeForUnconverted(const std::string& path, bool flock);
  // The lease of node_id on the file ends (asked of that node, if alive,
  // within timeout); whether the home took its locks.
  bool ReturnLeaseOf(const v1::LockOwner& lease, const std::string& path, bool flock,
                     std::chrono::milliseconds timeout);
  // How long a recall waits for the lease's node (then EAGAIN, or a wait asks again).
  static constexpr std::chrono::milliseconds kRecallTimeout{3'000};
  // A majority must have answered this node's gossip this lately for its leases to stand.
  static constexpr std::chrono::milliseconds kHeardWithin{4'000};
  // AskHome, and past a lease in the way: its node returns it, and the home is asked again.
  Status AskHomePastLeases(v1::LockRequest& req, v1::LockResponse* resp, std::string* home_out);
  LockOwner LeaseOwner(const std::string& key) const { return LockOwner{parts_.self_id, key, -1}; }
  // The leases which picks end: their slots at once, then (on the reclaim
  // pool) each as EndLease(tell_home), then after; how many.
  size_t EndLeases(const std::function<bool(const Lease&)>& which, bool tell_home, std::function<void()> after = {});
  // Reclaims the locks whose home moved or restarted, and the leases whose home restarted.
  void ReclaimMoved(const std::set<std::string>& restarted);
  // At the start: the locks programs here took under a predecessor's leases
  // (the kernel's on view files) go to their homes, as a lease's return.
  void RecoverLeasedLocks();
  // copy: the agent's copy of the program's descriptor (an OFD owner's).
  int WatchOwner(Owner& owner, pid_t pid, int copy);
  // This node's account of what key holds on file_key, after the home's answer.
  void Note(const std::string& key, const std::string& file_key, const std::string& home,
            std::optional<LockType> type, const LockSpan& span, bool release_all);
  // What key holds on file_key, as this node's account says.
  std::vector<HeldLock> HeldOn(const std::string& key, const std::string& file_key);
  // Whether key holds a write lock on file_key (its release records the file first).
  bool HoldsWrite(const std::string& key, const std::string& file_key);
  // A lock granted to a wait that was given up: unlocked at its home.
  void GiveBack(const v1::LockRequest& granted, const std::string& key);
  void DropOwnerLocked(const std::string& key);
  bool TokenAlive(const Owner& owner) const;
  // Sends req to path's home (this node's own LockHome or a peer's),
  // following NOT_HOME and waiting out GRACE; Unavailable when no home answers.
  Status AskHome(v1::LockRequest& req, v1::LockResponse* resp, std::string* home_out);
  Status AwaitAt(const std::string& home, const v1::AwaitLockRequest& req, v1::LockResponse* resp);
  std::optional<PeerAddress> AddressOf(const std::string& node_id);
  std::vector<std::string> NotDead();
  // Waits for the logs a grant names (see the header comment).
  void ApplyFences(const v1::LockResponse& resp);
  // The fence of a release by this node: its view recorded (and path, the
  // file a write lock is released on, if given), its log position.
  v1::LockFence Fence(const std::string& written = "");
  // A release the home did not take: retried until a home does, in the background.
  void RetryRelease(v1::LockRequest release);
  // A wait: SET with wait until granted, cancelled or stopped.
  v1::ShimResponse Wait(const Asked& asked, v1::LockRequest& ask, const std::string& key);
  bool Cancelled(uint64_t wait_id);
  // A wait given up: EINTR for its program, ENOLCK when the agent stops.
  int Interrupted();
  // Every lock of the owner ends (its process exited, its description closed).
  void ReleaseOwner(const std::string& key);
  void WatchLoop();
  int64_t GetlkPid(const v1::LockOwner& holder);

  Parts parts_;
  std::mutex mu_;
  std::condition_variable waits_cv_;  // a wait ended (Stop waits for all)
  bool stopping_ = false;
  size_t waits_ = 0;
  uint64_t next_wait_id_ = 1;
  std::map<uint64_t, std::set<uint64_t>> waits_by_connection_;
  std::set<uint64_t> cancelled_waits_;
  std::map<std::string, Owner> owners_;  // kept while they live, holding locks or not
  std::map<uint64_t, std::string> posix_keys_;  // by shim connection: its process's POSIX owner
  std::map<int, std::set<std::string>> owners_by_wd_;
  std::map<int, std::string> owners_by_pidfd_;
  uint64_t next_token_;
  int epoll_fd_ = -1, inotify_fd_ = -1, wake_fd_ = -1;
  std::thread watch_thread_;
  std::map<std::string, Lease> leases_;  // by file key
  std::set<std::string> lease_turns_;   // file keys with a lease call under way
  std::condition_variable lease_cv_;    // a turn ended
  std::map<std::string, std::chrono::steady_clock::time_point> no_lease_until_;  // by file key
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  std::string kernel_dev_id_;            // the view's file system in /proc/locks (set by Start)
  std::atomic<bool> recovered_{false};   // the predecessor's leased locks went to their homes
  std::string lease_prefix_;              // "lease.<random>", this agent's (lease_slots.h)
  std::atomic<uint64_t> next_lease_id_{1};
  std::atomic<uint64_t> members_generation_{0};  // moves at each MembersChanged
  std::map<std::string, uint64_t> incarnations_;  // by node id: as last seen (MembersChanged)
  WorkPool pool_{4, "onebox-locks"};
  WorkPool reclaim_pool_{1, "onebox-reclaim"};  // reclaims, ahead of calls waiting out a grace
};

}  // namespace onebox
