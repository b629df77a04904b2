// Leases on a file's locks: while this node holds one (granted by the
// file's lock home as a whole-file write lock of the owner "lease", when
// nobody holds a lock there), its programs lock the file with the kernel
// alone, the agent not asked (preload/file_lock.cc), so that a lock nobody
// on another node wants costs about what it costs natively. Another node's
// lock call meets the lease at the home and asks this node to return it
// (Peer/ReturnLockLease): the slot ends first, then the kernel's locks on
// the view file become locks at the home, owned as if asked through the
// agent (locks/node_locks.h). The rules are in docs/consistency.md
// ("Advisory locks").
//
// Here: the slots in the shared state page (proto/state_page.h) that tell
// the shims which files are leased, with their heartbeat; and the look at
// the kernel's locks on a file that a return converts.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "proto/state_page.h"

namespace onebox {

// The owner key of a node's lease at a lock home (LockOwner.key) is
// "lease.<id>", one id per grant, so that a late end of an old lease never
// ends a newer one. A RETURN that names the bare "lease" ends every lease
// of its node on the file (a restarted agent knows no ids).
constexpr const char* kLeaseOwnerKey = "lease";
inline bool IsLeaseOwnerKey(const std::string& key) { return key == kLeaseOwnerKey || key.rfind("lease.", 0) == 0; }

class LockLeaseSlots {
 public:
  explicit LockLeaseSlots(LockLeases& leases);
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

  LockLeases& leases_;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t in_use_ = 0;
  bool stopping_ = false;
  bool trusted_ = true;
  std::thread beat_;
};

// A lock the kernel holds on a file, as /proc/locks and fdinfo name it.
struct KernelLock {
  pid_t pid = 0;          // POSIX: the owner process; FLOCK: a process with the description open
  int fd = -1;            // FLOCK: that process's descriptor of the description
  bool write = false;
  uint64_t start = 0;
  uint64_t end = 0;       // exclusive; UINT64_MAX: to the end
};

// The granted locks on the file (dev, ino) from this pid namespace: flock's
// (each description once, with a descriptor of it) or POSIX ones (OFD locks
// are left out: the agent's own marks are such, and programs' go through
// the agent). Spans from shadow_base on are the agent's and are left out.
// dev_id: the file system's device as the kernel prints it there
// ("fd:01"; KernelDeviceId), which need not be stat's st_dev (btrfs, overlayfs).
std::vector<KernelLock> KernelLocksOn(const std::string& dev_id, dev_t dev, ino_t ino, bool flock,
                                      uint64_t shadow_base);
// The device of dir's file system as /proc/locks prints it, learned from a
// lock of the agent's own on path (a file there), far past any program's
// span; "" when it cannot be learned.
std::string KernelDeviceId(const std::string& path, uint64_t probe_offset);

// The files below view (a directory) that the kernel holds a flock or POSIX
// lock on now, by their path below it and whether flock's: what a
// restarted agent's predecessor may have left under its leases.
std::vector<std::pair<std::string, bool>> KernelLockedFilesIn(const std::string& view, const std::string& dev_id,
                                                              uint64_t shadow_base);

}  // namespace onebox
