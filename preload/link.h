// The agent link's entry points for the path resolver (preload/agent_link.cc).
#pragma once

#include "naming/cluster_path.h"

namespace onebox {
struct LockLeases;
struct CreateSlots;
}

namespace onebox::shim {

// The cluster root this process uses (ONEBOX_ROOT, default /cluster).
const ClusterRoot& Root();
// The view root fd, connecting to the agent if needed; -1 with errno
// (ENOTCONN when no agent answers) otherwise.
int ViewFd();
// Asks the agent to record rel_path (below the view root) now, durably.
// Returns 0 or an errno.
int Publish(const char* rel_path);
// Asks the agent to put the whole content of the stub at rel_path (below the
// view root, no symlinks) in place. Returns 0 or an errno (EIO: nobody has it).
int Hydrate(const char* rel_path);
// O_CREAT|O_EXCL or mkdir of rel_path (below the view root): asks the agent
// to decide the name under its directory's lease first. ClaimAtOnce asks on
// the link, where the agent answers only what it can decide without a
// message (it holds the lease): 0 or an errno (EEXIST), -1 when it cannot.
// ClaimByVote then asks on a connection of its own (a vote may take
// seconds): 0 or an errno. directory: a mkdir (a directory made under a
// covering lease is covered too).
int ClaimAtOnce(const char* rel_path, bool directory);
int ClaimByVote(const char* rel_path, bool directory);
// A lock call on a cluster file (preload/file_lock.cc), as
// proto/onebox/v1/shim.proto's ShimLockRequest says (kind, cmd, type, the
// span [start, end) with end 2^64-1 for "to the end"). 0 or an errno:
// EAGAIN (held elsewhere), EINTR (a signal ended a wait), EBADF, EINVAL,
// ENOLCK (no agent, or no lock home answers). TEST fills answer; lease_ok:
// the caller can lock with the kernel under a lease, and answer->leased
// says when it should (nothing was done: proto/state_page.h).
struct LockAnswer {
  int type = 2;  // 2: no conflicting lock
  uint64_t start = 0, end = 0;
  int64_t pid = 0;
  bool leased = false;
};
int AskLock(const char* rel_path, int fd, int kind, int cmd, int type, uint64_t start, uint64_t end, bool lease_ok,
            LockAnswer* answer);
// The lock leases in the agent's state page (nullptr: none mapped).
const LockLeases* LockLeasesNow();
// The create slots in the agent's state page (nullptr: none mapped).
const CreateSlots* CreateSlotsNow();
// The view's kCreateLockFile (read-only, one of the shim's descriptors),
// opened at the first call after each new page; -1 when it cannot be.
int CreateLockFd();
// Maps the agent's state page if this process has none yet (once: a process
// that made no Hello, as flock(1) on a descriptor it inherited; the lock
// link's own handshake maps none).
void EnsureStatePage();
// kill, killpg or sigqueue of a gpid (negative: a process group): the
// agent sends it to the gpid's node, as this process's user. 0 or an errno
// (EPERM, ESRCH, EINVAL; ENOTCONN when no agent answers).
int SignalGpid(long long gpid, int sig, bool has_value, long long value);
// bind() of a cluster port, or of a Unix stream socket at path (below the
// view root; nullptr for a port) (preload/socket.cc): the agent claims it
// for this process across the cluster, or (release) gives back the claim of
// a bind the kernel refused. 0 or an errno (EADDRINUSE: another node's
// program holds it; EADDRNOTAVAIL: no majority answered; EACCES; ENOTCONN:
// no agent).
int BindPort(unsigned port, bool ipv6, const char* path, unsigned long long socket_inode, bool release);
// Whether the agent's state page says port is another node's cluster port
// now (the agent listens for it here): only then is DialPort worth asking.
bool PortIsRemote(unsigned port);
// connect() to another node's port: the agent opens a link to its owner,
// connected there to the port, and sends it. The link's fd (close-on-exec),
// or -errno (ENOENT: not another node's port now; ENOTCONN: no agent).
int DialPort(unsigned port);
// Whether the agent's state page says a connection from agent_port (one of
// the agent's loopback ports) may be waiting to be handed over: only then
// is TakeLink worth asking.
bool MayBeHandedOver(unsigned agent_port);
// accept() returned fd, a connection from the agent's agent_port to this
// process's port: the link behind it, from another node (close-on-exec), or
// -errno (ENOENT: none; ENOTCONN: no agent).
int TakeLink(unsigned port, unsigned agent_port, int fd);
// Whether fd is connected to a socket this process's agent listens on (the
// kernel names the same process on both): an abstract relay name anyone on
// the node could have bound first is trusted only then.
bool PeerIsAgent(int fd);
// True when the agent's state page says other members are alive: only then
// is an exclusive creation claimed across the cluster.
bool MayHavePeers();
// False only when the agent's state page says its view holds no stubs now:
// then an open needs no look at the file's stub mark.
bool MayBeStubs();
// The agent's `onebox` binary, which serves `onebox run` (the stand-in): ""
// when no agent answers or it named none.
const char* StandInProgram();
// False in a vfork child, which must not record descriptors in shared memory.
bool InOwnerProcess();
// Learns the view root from a real cwd inside a view, if it is one.
void DiscoverViewRoot(const char* real_cwd);

}  // namespace onebox::shim
