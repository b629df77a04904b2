// The lock home: the one node that keeps a file's cluster-wide advisory
// locks (flock, fcntl and OFD locks, lockf) and grants or refuses them for
// programs on every node, as a lock manager does (NFSv4's server, CephFS's
// MDS). Each file's home is chosen by rendezvous hashing of its path over
// the members not declared dead, so every node computes the same home from
// the same membership and a death moves only the dead node's files.
//
// The rules (docs/consistency.md, "Advisory locks"):
// - A home answers only while it sees a majority of the members alive; on
//   a partition's minority side no lock is granted (NO_QUORUM).
// - A node that became a file's home less than kGrace ago (its start, a
//   member's death or return, its own return as a new incarnation after it
//   was stopped) grants nothing there but reclaims: every node sends the
//   new home the locks its programs hold (locks/node_locks.h).
// - The locks of a member declared dead are dropped, and its waits too.
// - Each unlock carries a fence: the releasing node's log position after it
//   recorded its view. A grant names the fences other nodes left on the file,
//   and the new holder's node applies their logs that far before the
//   program's call returns: what a holder wrote before it unlocked is what
//   the next holder elsewhere reads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "consistency/status.h"
#include "nodeagent/locks/lock_ranges.h"
#include "nodeagent/peer/clock.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

class LockHome {
 public:
  static constexpr auto kGrace = std::chrono::seconds(3);

  struct Members {
    // Node ids of the members not declared dead, this node's included.
    std::function<std::vector<std::string>()> not_dead;
    // Whether this node sees a majority of the members it knows alive.
    std::function<bool()> majority;
    // This node's incarnation (Membership::incarnation), if it can change
    // while the agent runs: a new one forgets every table and starts a grace.
    std::function<uint64_t()> incarnation;
  };
  LockHome(std::string self_id, Members members, Clock& clock = SteadyClock());

  // The home of path's locks among nodes (rendezvous hashing).
  static std::string HomeOf(const std::string& path, const std::vector<std::string>& nodes);

  // The Lock call: answers at once.
  Status OnLock(const v1::LockRequest& req, v1::LockResponse* resp);
  // The AwaitLock call: waits up to its window for a queued lock.
  Status OnAwaitLock(const v1::AwaitLockRequest& req, v1::LockResponse* resp);
  // Membership moved: drops the locks and waits of members now dead and
  // the files now homed elsewhere, and grants what that frees.
  void MembersChanged();
  // Ends every await under way (the agent stops).
  void Stop();
  // Locks held here now, for status.
  size_t HeldCount();

 private:
  struct Waiter {
    uint64_t id = 0;
    LockOwner owner;
    LockType type = LockType::kRead;
    LockSpan span;
    bool granted = false;
  };
  struct File {
    FileLocks locks;
    std::deque<Waiter> waiters;
    std::map<std::string, uint64_t> fences;  // node id -> log seq of its last release
  };
  // The members as this node saw them, from since on.
  struct Era {
    Clock::time_point since;
    std::vector<std::string> nodes;  // empty: before the first look
    // Whether it saw a majority alive: a home cut off from the majority
    // does not know which of its files the others took meanwhile.
    bool majority = true;
  };

  // The members not dead as they are now; also notes whether a majority is
  // seen (MajorityLocked) and this node's incarnation. Every call that may
  // grant asks it first.
  std::vector<std::string> NodesLocked();
  bool MajorityLocked() const { return eras_.back().majority; }
  // Forgets everything kept here, as at a start, when this node's incarnation moved.
  void NoteIncarnationLocked();
  bool InGraceLocked(const std::string& path);
  void GrantWaitersLocked(const std::string& path, File& file);
  void FencesLocked(const File& file, const std::string& for_node, v1::LockResponse* resp) const;
  void KeepFenceLocked(File& file, const v1::LockRequest& req);

  const std::string self_;
  const Members members_;
  Clock& clock_;
  std::mutex mu_;
  std::condition_variable cv_;  // a waiter was granted, or Stop
  bool stopping_ = false;
  std::map<std::string, File> files_;  // by LockFileKey (lock_wire.h)
  std::deque<Era> eras_;               // the last few, oldest first
  uint64_t incarnation_ = 0;           // as last seen (0: not yet)
  std::optional<Clock::time_point> forgot_at_;  // when a new incarnation forgot every table
};

}  // namespace onebox
