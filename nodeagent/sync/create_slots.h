// The create slots of the shared state page (proto/state_page.h): while a
// slot names a directory, this node's programs make new names in it with
// O_CREAT|O_EXCL through the kernel alone, the agent not asked
// (preload/cluster_paths.cc), so that tar, git and compilers making file
// after file in a directory this node holds the lease on (sync/dir_leases.h)
// pay no round trip per file. DirLeases installs a slot when it decides a
// create there itself and nothing another node made in the directory is
// still on its way into the view; it ends the slot first when the lease is
// recalled, and a peer's change in the directory ends it too. The rules are
// in docs/consistency.md (O_CREAT|O_EXCL and mkdir: "Decided in the shim").
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "proto/state_page.h"

namespace onebox {

class CreateSlotTable {
 public:
  // view_root: where kCreateLockFile is made. Without a lock file that takes
  // OFD locks no slot is installed. Where the file was there already (an
  // agent before this one), none is installed and Starting() holds for
  // kCreateSlotLifeNs: its slots may still be trusted by shims that map
  // its page.
  CreateSlotTable(CreateSlots& slots, const std::string& view_root);
  ~CreateSlotTable();  // every slot ends first

  // Moves at every peer change (PeerChanged): an Install told the value
  // read before the caller's look at the view installs nothing if a peer's
  // change came since.
  uint64_t peer_changes();
  // Names dir in a slot until until_ns (BootTimeNs; kCreateSlotLifeNs from
  // now at most): a slot that names it already keeps its seq and runs to
  // the later time. False when a peer changed something since
  // peer_changes_seen, while Starting(), when the key is too long for a
  // slot, or when every slot it may take names another directory.
  bool Install(const std::string& dir, int64_t until_ns, uint64_t peer_changes_seen);
  // The slots naming dir, or dir and every directory below it (below), end:
  // a shim that looks at one from now on asks the agent. A create a shim
  // began under one (its thread holds a read lock in the directory's span
  // of kCreateLockFile from before its look until the create is done) may
  // still be under way: WaitForCreates waits for it. Whether one ended.
  bool End(const std::string& dir, bool below = false);
  // Every slot ends, and none is installed again (the agent stops).
  void EndAll();
  // Whether every create begun under a slot of dir (or below it) that has
  // ended is done, and, the first time, every create begun under a slot of
  // an agent before this one: waits for them up to kCreatesWait (false
  // after that: a program stopped in the middle of its open). Not under a
  // lock that a shim's request needs.
  bool WaitForCreates(const std::string& dir, bool below = false);
  static constexpr auto kCreatesWait = std::chrono::seconds(1);
  // An agent before this one kept slots on this view, which shims may
  // still trust (kCreateSlotLifeNs from this one's start).
  bool Starting() const;
  // Started less than d ago.
  bool StartedWithin(std::chrono::nanoseconds d) const;
  // A peer's record of key won here: the slots of key's directory, and of
  // key and below if it is one, end (the view will change there: a shim must
  // not decide against what is on its way).
  void PeerChanged(const std::string& key);
  size_t InUse();

 private:
  struct Named {
    unsigned slot;
    uint64_t seq;
  };
  void EndLocked(std::map<std::string, Named>::iterator it);
  bool EndLocked(const std::string& dir, bool below);
  // Takes and drops a write lock on the span [base, base + len) of
  // kCreateLockFile (len 0: to its end): no read lock is held there. With
  // a wait of up to deadline.
  bool NoCreateUnderWay(uint64_t base, uint64_t len,
                        std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);

  CreateSlots& slots_;
  int lock_fd_ = -1;  // kCreateLockFile
  const int64_t started_ns_ = BootTimeNs();
  bool predecessor_ = false;  // the lock file was there: another agent kept slots on this view
  std::mutex mu_;
  std::map<std::string, Named> named_;  // the directories the slots name now
  // Directories whose slot ended while a create begun under it was under
  // way, with their spans: a recall waits for them.
  std::map<std::string, uint64_t> unsettled_;
  // Its creates under way were waited for; until then no slot is installed
  // (so only its shims' locks can be in the file).
  std::atomic<bool> predecessor_settled_{false};
  std::atomic<bool> stopped_{false};
  uint64_t peer_changes_ = 0;
};

}  // namespace onebox
