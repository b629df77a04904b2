// The agent's shared state page: one 4 KiB memfd that the agent writes and
// every shim maps read-only (it travels with the Hello answer, SCM_RIGHTS).
// Sealed against shrinking, growing and new writers, so no program can make a
// shim's read of it fault or lie. Plain lock-free atomics, no locks: the shim
// reads a field with one load on its hot path.
#pragma once

#include <fcntl.h>
#include <time.h>

#include <atomic>
#include <cstdint>
#include <string_view>

namespace onebox {

struct StatePage {
  static constexpr uint64_t kMagic = 0x316567617073626fULL;  // "obspage1"
  uint64_t magic;
  // Stubs in the view now (entries whose content is on other nodes):
  // open() looks for one only while this is not 0.
  std::atomic<uint64_t> stubs;
  // Other members alive now, and right after the agent's start those it
  // knew of and has not heard of yet (Membership::UnheardSinceStart): an
  // exclusive create asks them (Claim) only when this is not 0.
  std::atomic<uint64_t> peers_alive;

  // The symlink-free view (nodeagent/view/symlink_guard.h has the protocol and
  // why it is safe). Fields added after the first version: a page from an
  // older agent has zeros here, and symlink_guard tells the shim whether the
  // three below are kept at all.
  static constexpr uint64_t kSymlinkGuard = 0x316b6e696c6d7973ULL;  // "symlink1"
  uint64_t symlink_guard;  // kSymlinkGuard when the agent keeps the fields below
  // Moves on every change of `symlinks` (so a shim that saw 0 before and
  // after a call knows it stayed 0 in between).
  std::atomic<uint64_t> symlink_epoch;
  // Symlinks the view may hold now, announced ones not yet made included: 0
  // only while the view provably holds none.
  std::atomic<uint64_t> symlinks;
  // The agent's CLOCK_MONOTONIC_COARSE, in ns, written every few ms: a shim
  // trusts `symlinks` only while this is fresh (a dead agent's page stays
  // mapped in its shims, frozen).
  std::atomic<int64_t> symlink_heartbeat_ns;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(sizeof(StatePage) <= 4096);

// After the page, at kPortMapsOffset of the same memfd: bits by TCP port
// for the cluster's ports (nodeagent/sockets/port_relay.h). A page from an
// older agent is 4 KiB: no bits, nothing asked.
struct PortBits {
  static constexpr unsigned kPorts = 65536;
  std::atomic<uint64_t> words[kPorts / 64];
  bool Has(unsigned port) const {
    return port < kPorts && (words[port / 64].load(std::memory_order_relaxed) >> (port % 64) & 1) != 0;
  }
};
struct PortMaps {
  // Set while another node's program holds the port (this node's agent
  // listens for it): a shim's connect() to it asks the agent for a direct
  // link to the owner; every other connect is libc's at once.
  PortBits remote;
  // By the agent's own port on loopback: set while a connection the agent
  // made to a server here for another node's client waits to be accepted.
  // A server's shim whose accept() returns a connection from such a port
  // asks the agent for the link itself (the connection then needs no relay).
  PortBits handover;
};
constexpr size_t kPortMapsOffset = 4096;
constexpr size_t kStateMapBytes = kPortMapsOffset + sizeof(PortMaps);

// After the port maps, at kLockLeasesOffset: the files whose locks this
// node holds a lease on (nodeagent/locks/lease_slots.h). While a file's
// slot names it, this node's programs lock it with the kernel alone
// (preload/file_lock.cc); the agent ends the lease (slot first) before any
// other node may lock the file. A slot is a seqlock: seq is odd while it
// names a lease and moves at every change, so a shim that read the same
// odd seq before and after its kernel call knew the lease held all along.
struct LockLeaseSlot {
  std::atomic<uint64_t> seq;
  std::atomic<uint64_t> dev;
  std::atomic<uint64_t> ino;
  std::atomic<uint64_t> flock;  // 1: flock's locks, 0: fcntl's
};
struct LockLeases {
  static constexpr unsigned kSlots = 512;
  static constexpr unsigned kProbe = 8;  // a file's slot is one of the kProbe after its hash
  // The agent's CoarseMonotonicNs, written every kLockLeaseBeatNs while it
  // holds a lease: a dead agent's page stays mapped, frozen.
  std::atomic<int64_t> heartbeat_ns;
  std::atomic<uint64_t> held;  // slots in use: 0, and a shim looks no further
  LockLeaseSlot slots[kSlots];
  static unsigned FirstSlot(uint64_t dev, uint64_t ino, bool flock) {
    uint64_t h = (ino * 0x9e3779b97f4a7c15ULL) ^ (dev * 0xc2b2ae3d27d4eb4fULL) ^ (flock ? 0x165667b19e3779f9ULL : 0);
    return static_cast<unsigned>((h >> 32) % kSlots);
  }
};
constexpr size_t kLockLeasesOffset = kStateMapBytes;
// Where the agent's marks on programs' open file descriptions begin (OFD
// locks of one byte, nodeagent/locks/node_locks.h): a span the kernel keeps
// for a shim under a lease ends before it.
constexpr uint64_t kLockMarkBase = uint64_t{1} << 62;
constexpr size_t kStateMapBytesWithLeases = kLockLeasesOffset + sizeof(LockLeases);
// A shim trusts a lease while the beat is at most kLockLeaseTrustNs old; an
// agent ends no lease for another node (and grants none) before
// kLockLeaseStartDelayNs after its start: a predecessor's frozen leases are
// distrusted by then, and the kernel holds every lock taken under them.
constexpr int64_t kLockLeaseBeatNs = 50'000'000;
constexpr int64_t kLockLeaseTrustNs = 200'000'000;
constexpr int64_t kLockLeaseStartDelayNs = 500'000'000;

// After the lock leases, at kCreateSlotsOffset: the directories in which
// this node's programs decide their exclusive creates (O_CREAT|O_EXCL) with
// the kernel alone, under the node's lease on the directory
// (nodeagent/sync/create_slots.h, sync/dir_leases.h): the kernel's EEXIST
// answers for this node's view, the lease for the other nodes. A slot names
// a directory by its key below the view root ("cluster/src"), and is a
// seqlock as a lock lease's is; it also ends on its own at until_ns
// (CLOCK_BOOTTIME), set before the lease's renewal is due, so that a frozen
// page (an agent stopped or gone) is never trusted past the term the other
// members count. A recall of the lease ends the slot first, waits for the
// creates under way there (kCreateLockFile), and then records what the
// directory holds; a shim whose slot changed during its create asks the
// agent, and undoes the create if the name went to another node (only a
// create held up longer than the recall waits).
struct CreateSlot {
  static constexpr unsigned kKeyWords = 29;  // keys of up to 232 bytes get a slot
  std::atomic<uint64_t> seq;
  std::atomic<int64_t> until_ns;
  std::atomic<uint64_t> key_bytes;
  std::atomic<uint64_t> key[kKeyWords];  // the key's bytes, zero after its end
};
struct CreateSlots {
  static constexpr unsigned kSlots = 256;
  static constexpr unsigned kProbe = 8;  // a directory's slot is one of the kProbe after its hash
  // What the agent and the shim agree the slots and kCreateLockFile's
  // spans mean: a shim uses no slot of a page that says another version.
  static constexpr uint64_t kVersion = 2;
  std::atomic<uint64_t> version;
  std::atomic<uint64_t> held;  // slots naming a directory: 0, and a shim looks no further
  CreateSlot slots[kSlots];
  static uint64_t Hash(std::string_view dir) {
    uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
    for (char c : dir) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
    return h;
  }
  static unsigned FirstSlot(std::string_view dir) { return static_cast<unsigned>((Hash(dir) >> 32) % kSlots); }
  // dir's span of kCreateLockFile: [LockBase(dir), + kLockSpan). A thread
  // locks the byte of its tid in it (threads and forked children share
  // a process's descriptor, and with it its locks on a byte).
  static constexpr uint64_t kLockSpan = uint64_t{1} << 22;  // pid_max's limit
  static uint64_t LockBase(std::string_view dir) { return (Hash(dir) >> 24) << 22; }
  // Bytes [8 * i, 8 * i + 8) of key, zero past its end.
  static uint64_t KeyWord(std::string_view key, unsigned i) {
    uint64_t word = 0;
    for (unsigned b = 0; b < 8 && 8 * i + b < key.size(); ++b)
      word |= uint64_t{static_cast<unsigned char>(key[8 * i + b])} << (8 * b);
    return word;
  }
};
constexpr size_t kCreateSlotsOffset = kStateMapBytesWithLeases;
// No slot runs longer than this after the agent last wrote it: an agent
// that starts after another on the same view installs none, and gives no
// directory up to another node, until its predecessor's slots have run out.
constexpr int64_t kCreateSlotLifeNs = 2'500'000'000;
constexpr size_t kStateMapBytesWithCreates = kCreateSlotsOffset + sizeof(CreateSlots);

// The shim's look at a page's memfd before it maps it (preload/agent_link.cc;
// tests/fuzz/state_page_fuzz.cc): how many bytes to map, 0 for none. Only a
// memfd that nobody can shrink, grow or reseal, and that only the agent's
// own mapping writes (F_SEAL_WRITE or F_SEAL_FUTURE_WRITE), is mapped: a
// read past a file's end would be SIGBUS in the program. At least a page;
// with the port maps when it holds them (an older agent's page is 4 KiB).
inline size_t StatePageMapBytes(int seals, int64_t size) {
  constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  const bool sealed = seals >= 0 && (seals & kSeals) == kSeals && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) != 0;
  if (!sealed || size < static_cast<int64_t>(kPortMapsOffset)) return 0;
  if (size >= static_cast<int64_t>(kStateMapBytesWithCreates)) return kStateMapBytesWithCreates;
  if (size >= static_cast<int64_t>(kStateMapBytesWithLeases)) return kStateMapBytesWithLeases;
  return size >= static_cast<int64_t>(kStateMapBytes) ? kStateMapBytes : kPortMapsOffset;
}
// The parts after the page, each nullptr when not mapped (an older agent's page is shorter).
struct StatePageParts {
  const PortMaps* ports = nullptr;
  const LockLeases* leases = nullptr;
  const CreateSlots* creates = nullptr;
};
// The page at map (bytes long, from StatePageMapBytes), if it is one (its
// magic), else nullptr; *parts: what is mapped after it.
inline const StatePage* TrustedStatePage(const void* map, size_t bytes, StatePageParts* parts) {
  *parts = {};
  const auto* page = static_cast<const StatePage*>(map);
  if (page == nullptr || bytes < kPortMapsOffset || page->magic != StatePage::kMagic) return nullptr;
  const char* base = static_cast<const char*>(map);
  if (bytes >= kStateMapBytes) parts->ports = reinterpret_cast<const PortMaps*>(base + kPortMapsOffset);
  if (bytes >= kStateMapBytesWithLeases) parts->leases = reinterpret_cast<const LockLeases*>(base + kLockLeasesOffset);
  if (bytes >= kStateMapBytesWithCreates) parts->creates = reinterpret_cast<const CreateSlots*>(base + kCreateSlotsOffset);
  return page;
}

// A shim trusts a page whose heartbeat is at most this old; an agent lets no
// symlink be made (Announce waits) until this long after it took over the
// store, several times the trust: a shim still reading the page of the agent
// before it sees it stale before any symlink made under its successor.
constexpr int64_t kSymlinkHeartbeatNs = 10'000'000;
constexpr int64_t kSymlinkTrustNs = 150'000'000;
constexpr int64_t kSymlinkStartDelayNs = 400'000'000;

inline int64_t CoarseMonotonicNs() {  // from the vDSO: no system call
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The shim's two looks at the page around a lookup that trusts the view to
// hold no symlink. First: may it be tried (*epoch set)?
inline bool SymlinkFreeBegin(const StatePage* page, uint64_t* epoch) {
  if (page == nullptr || page->symlink_guard != StatePage::kSymlinkGuard) return false;
  *epoch = page->symlink_epoch.load(std::memory_order_acquire);
  return page->symlinks.load(std::memory_order_acquire) == 0;
}
// Second, after the lookup: does its result stand? The view held no symlink
// all along: still none, no change in between, and the agent alive.
inline bool SymlinkFreeStill(const StatePage* page, uint64_t epoch) {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the lookup before the loads
  if (page->symlinks.load(std::memory_order_acquire) != 0) return false;
  if (page->symlink_epoch.load(std::memory_order_acquire) != epoch) return false;
  // Compared as bounds, not as a difference: a page's beat may be any value
  // (now - beat could overflow).
  const int64_t now = CoarseMonotonicNs(), beat = page->symlink_heartbeat_ns.load(std::memory_order_acquire);
  return beat >= now - kSymlinkTrustNs && beat <= now + kSymlinkHeartbeatNs;
}

// The shim's two looks at a lock lease around its kernel call. First: the
// lease's seq if a slot names the file (dev, ino; flock's or fcntl's locks)
// and the agent is alive, *slot set; 0 if none.
inline uint64_t LockLeaseBegin(const LockLeases* leases, uint64_t dev, uint64_t ino, bool flock, unsigned* slot) {
  if (leases == nullptr || leases->held.load(std::memory_order_acquire) == 0) return 0;
  const int64_t now = CoarseMonotonicNs(), beat = leases->heartbeat_ns.load(std::memory_order_acquire);
  if (beat < now - kLockLeaseTrustNs || beat > now + kLockLeaseBeatNs) return 0;
  const unsigned first = LockLeases::FirstSlot(dev, ino, flock);
  for (unsigned i = 0; i < LockLeases::kProbe; ++i) {
    const unsigned at = (first + i) % LockLeases::kSlots;
    const LockLeaseSlot& s = leases->slots[at];
    const uint64_t seq = s.seq.load(std::memory_order_acquire);
    if ((seq & 1) == 0) continue;
    const bool same = s.dev.load(std::memory_order_relaxed) == dev && s.ino.load(std::memory_order_relaxed) == ino &&
                      s.flock.load(std::memory_order_relaxed) == (flock ? 1u : 0u);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (same && s.seq.load(std::memory_order_relaxed) == seq) {
      *slot = at;
      return seq;
    }
  }
  return 0;
}
// Second, after the kernel call: did the lease hold all along (so the agent,
// which ends a lease slot first and reads the kernel's locks after, sees
// what the call did)?
inline bool LockLeaseStill(const LockLeases* leases, unsigned slot, uint64_t seq) {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the kernel call before the loads
  if (leases->slots[slot].seq.load(std::memory_order_acquire) != seq) return false;
  const int64_t now = CoarseMonotonicNs(), beat = leases->heartbeat_ns.load(std::memory_order_acquire);
  return beat >= now - kLockLeaseTrustNs && beat <= now + kLockLeaseBeatNs;
}

inline int64_t BootTimeNs() {  // counts a suspend (the other members' terms do); from the vDSO
  timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The shim's two looks at a create slot around its kernel create. First:
// the slot's seq if one names dir (a key below the view root) and has not
// run out, *slot set; 0 if none.
inline uint64_t CreateSlotBegin(const CreateSlots* slots, std::string_view dir, unsigned* slot) {
  if (slots == nullptr || slots->held.load(std::memory_order_acquire) == 0 || dir.size() > 8 * CreateSlot::kKeyWords ||
      slots->version.load(std::memory_order_relaxed) != CreateSlots::kVersion)
    return 0;
  const int64_t now = BootTimeNs();
  const unsigned first = CreateSlots::FirstSlot(dir);
  for (unsigned i = 0; i < CreateSlots::kProbe; ++i) {
    const unsigned at = (first + i) % CreateSlots::kSlots;
    const CreateSlot& s = slots->slots[at];
    const uint64_t seq = s.seq.load(std::memory_order_acquire);
    if ((seq & 1) == 0 || s.key_bytes.load(std::memory_order_relaxed) != dir.size()) continue;
    bool same = s.until_ns.load(std::memory_order_relaxed) > now;
    for (unsigned w = 0; same && w * 8 < dir.size(); ++w)
      same = s.key[w].load(std::memory_order_relaxed) == CreateSlots::KeyWord(dir, w);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (same && s.seq.load(std::memory_order_relaxed) == seq) {
      *slot = at;
      return seq;
    }
  }
  return 0;
}
// Second, after the kernel's create: did the slot name the directory all
// along (so that a recall, which ends the slot first and looks at the
// directory after, finds what the create made), and is its time not up?
inline bool CreateSlotStill(const CreateSlots* slots, unsigned slot, uint64_t seq) {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the kernel call before the loads
  const CreateSlot& s = slots->slots[slot];
  return s.seq.load(std::memory_order_acquire) == seq && BootTimeNs() < s.until_ns.load(std::memory_order_acquire);
}

// In the view root, the agent's: a shim holds a read lock on it (an OFD
// lock) from before it announces a symlink until the symlink is made; the
// agent ends a proof that the view is symlink-free under a write lock, held
// for a moment (a shim gives up on it after 2 s: ENOTCONN). Unlike an
// announcement, the lock outlives an agent's restart.
constexpr const char* kSymlinkLockFile = ".onebox-symlinks";

// In the view root, the agent's: a shim's thread holds a read lock (an OFD
// lock) on its byte of dir's span (CreateSlots::LockBase) from before its
// look at dir's create slot until its create is done, signals blocked; a
// recall, which ends the slot first, then takes a write lock on the span
// (and lets it go at once) before it records what the directory holds. So
// a create that saw the slot is in the view by then.
constexpr const char* kCreateLockFile = ".onebox-creates";

// A file in the view root that names it as one: a shim whose cwd is in the
// view (a program started there) finds the view root by it.
constexpr const char* kViewMarker = ".onebox-view";

// The name of the extended attribute that marks a stub in the view. The agent
// decides what is a stub (it checks size and mtime against its record); the
// attribute only tells the shim to ask.
constexpr const char* kStubXattr = "user.onebox.stub";
// Every mark of the agent's (the stub's, the placement's) begins so: they are
// the agent's, never a program's, and neither replicated nor shown.
constexpr std::string_view kAgentMarkPrefix = "user.onebox.";

}  // namespace onebox
