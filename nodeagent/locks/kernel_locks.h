// What the kernel holds: the flock and POSIX locks on a file, as
// /proc/locks and /proc/PID/fdinfo show them, for a lock lease's return
// (locks/lease_slots.h) to make them the cluster's, and for a restarted
// agent to find those its predecessor's leases left.
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace onebox {

// pidfd_open's PIDFD_THREAD (Linux 6.9; Debian 12's headers predate it): a
// pidfd of one thread, through which pidfd_getfd copies from that thread's
// descriptor table. Older kernels refuse it (EINVAL).
constexpr unsigned kPidfdThread = O_EXCL;

// A lock the kernel holds on a file, as /proc/locks and fdinfo name it.
struct KernelLock {
  pid_t pid = 0;          // POSIX: the owner process; FLOCK: a process with the description open
  int fd = -1;            // FLOCK: that process's descriptor of the description; -1: hidden from the agent
  bool write = false;
  uint64_t start = 0;
  uint64_t end = 0;       // exclusive; UINT64_MAX: to the end
  // FLOCK: the thread whose /proc directory lists fd, when not the process's
  // own (a thread with a descriptor table of its own, unshare(CLONE_FILES);
  // or any live one once the main thread ended with pthread_exit: the
  // leader, a zombie, has no descriptors); 0 otherwise.
  pid_t tid = 0;
  // FLOCK with tid: the other threads that had tid's table when it was
  // looked at (fd may be copied from any of them).
  std::vector<pid_t> sharers;
};

// A copy, in this process, of the descriptor a FLOCK lock names (through
// pidfd_getfd; from k.tid or one of k.sharers when k.tid is set, with
// PIDFD_THREAD, Linux 6.9 or later). -1 and *err when there is none: ESRCH
// when its process is gone or exiting (it holds nothing), else why not.
int CopyLockDescriptor(const KernelLock& k, int* err);

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
