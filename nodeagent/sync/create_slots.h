// The create slots of the shared state page (proto/state_page.h): while a
// slot names a directory, this node's programs make new names in it with
// O_CREAT|O_EXCL through the kernel alone, the agent not asked
// (preload/cluster_paths.cc), so that tar, git and compilers making file
// after file in a directory this node holds the lease on (sync/dir_leases.h)
// pay no round trip per file. DirLeases installs a slot when it decides a
// create there itself and nothing another node made in the directory is
// still on its way into the view; it ends the slot first when the lease is
// recalled, and a peer's change in the directory ends it too. The rules are
// in docs/consistency.md ("Exclusive creates").
#pragma once

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
  // view_root: where kCreateLockFile is made; without it no slot is installed.
  CreateSlotTable(CreateSlots& slots, const std::string& view_root);
  ~CreateSlotTable();  // every slot ends first

  // Moves at every peer change (PeerChanged): an Install told the value
  // read before the caller's look at the view installs nothing if a peer's
  // change came since.
  uint64_t peer_changes();
  // Names dir in a slot until until_ns (BootTimeNs): a slot that names it
  // already keeps its seq and runs to the later time. False when a peer
  // changed something since peer_changes_seen, when the key is too long
  // for a slot, or when every slot it may take names another directory.
  bool Install(const std::string& dir, int64_t until_ns, uint64_t peer_changes_seen);
  // The slots naming dir, or dir and every directory below it (below), end:
  // a shim that looks at one from now on asks the agent. A create a shim
  // began under one (it holds a read lock on the directory's byte of
  // kCreateLockFile from before its look until the create is done) may
  // still be under way: WaitForCreates waits for it.
  void End(const std::string& dir, bool below = false);
  // Whether every create begun under a slot of dir (or below it) that has
  // ended is done: waits for them up to kCreatesWait (false after that: a
  // program stopped in the middle of its open). Not under a lock that a
  // shim's request needs.
  bool WaitForCreates(const std::string& dir, bool below = false);
  static constexpr auto kCreatesWait = std::chrono::seconds(1);
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
  void EndLocked(const std::string& dir, bool below);
  // Takes and drops the write lock on byte: no read lock is held on it. With a wait of up to deadline.
  bool NoCreateUnderWay(unsigned byte, std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt);

  CreateSlots& slots_;
  int lock_fd_ = -1;  // kCreateLockFile
  std::mutex mu_;
  std::map<std::string, Named> named_;  // the directories the slots name now
  // Directories whose slot ended while a create begun under it was under
  // way, with their lock bytes: a recall waits for them.
  std::map<std::string, unsigned> unsettled_;
  uint64_t peer_changes_ = 0;
};

}  // namespace onebox
