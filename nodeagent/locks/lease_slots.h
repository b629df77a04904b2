// Leases on a file's locks: while this node holds one (granted by the
// file's lock home as a whole-file write lock of a lease owner, when nobody
// holds a lock there), its programs lock the file with the kernel alone,
// the agent not asked (preload/file_lock.cc), so that a lock nobody on
// another node wants costs about what it costs natively. Another node's
// lock call meets the lease at the home and asks this node to return it
// (Peer/ReturnLockLease): the slot ends first, then the kernel's locks on
// the view file (locks/kernel_locks.h) become locks at the home, owned as
// if asked through the agent (locks/node_locks.h). The rules are in
// docs/consistency.md ("Advisory locks").
//
// Here: the slots in the shared state page (proto/state_page.h) that tell
// the shims which files are leased, and their heartbeat.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "nodeagent/peer/clock.h"
#include "proto/state_page.h"

namespace onebox {

// The owner key of a node's lease at a lock home (LockOwner.key) is
// "lease.<agent>.<n>": one per grant, so that a late end of an old lease
// never ends a newer one; <agent> is random at each agent start, so that a
// restarted agent can end its predecessors' leases (LockRequest.older_leases).
inline bool IsLeaseOwnerKey(const std::string& key) { return key.rfind("lease.", 0) == 0; }

class LockLeaseSlots {
 public:
  struct Hooks {
    // Asked every few beats (250 ms): may this node's slots be trusted now
    // (a majority hears it)? When not, every slot ends and lapsed runs.
    std::function<bool()> may_trust;
    // Every slot ended on its own (the node lost its majority, or the beat
    // itself stopped longer than the shims trust it: a paused agent, whose
    // leases the homes may have dropped meanwhile). Runs on the beat thread.
    std::function<void()> lapsed;
  };
  explicit LockLeaseSlots(LockLeases& leases, Hooks hooks = {});
  ~LockLeaseSlots();  // every slot ends first
  // Names the file in a slot (shims lock it with the kernel from now on);
  // -1 when every slot it may take is in use. *seq: the slot's, for End.
  int Install(uint64_t dev, uint64_t ino, bool flock, uint64_t* seq);
  // The slot names nothing from now on (if it still names what Install
  // put there as seq): a shim that read it before its kernel call sees the
  // change after it, and asks the agent.
  void End(int slot, uint64_t seq);
  // Whether shims may trust the slots at all: not while this node sees no
  // majority (the beat stops at once, and they ask the agent).
  void SetTrusted(bool trusted);
  size_t InUse();

 private:
  void BeatLoop();
  void EndAllLocked();

  LockLeases& leases_;
  const Hooks hooks_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t in_use_ = 0;
  bool stopping_ = false;
  bool trusted_ = true;
  // NowCountingSuspend (a suspend counts); none: no beat since the slots were idle.
  std::optional<Clock::time_point> last_beat_;
  uint64_t beats_ = 0;
  static constexpr uint64_t kBeatsPerTrustLook = 5;  // membership asked every 250 ms
  std::thread beat_;
};

}  // namespace onebox
