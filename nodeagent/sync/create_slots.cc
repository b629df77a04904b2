#include "nodeagent/sync/create_slots.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "naming/ns_key.h"

namespace onebox {

CreateSlotTable::CreateSlotTable(CreateSlots& slots, const std::string& view_root) : slots_(slots) {
  slots_.version.store(CreateSlots::kVersion);
  const std::string path = view_root + "/" + kCreateLockFile;
  lock_fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (lock_fd_ < 0 && errno == EEXIST) {
    predecessor_ = true;
    lock_fd_ = open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  }
  // Without it, or without OFD locks there, no slot is installed: every
  // exclusive create asks the agent, as a shim whose lock fails does.
  struct flock probe {};
  probe.l_type = F_WRLCK;
  probe.l_whence = SEEK_SET;
  probe.l_len = 1;
  if (lock_fd_ < 0 || fcntl(lock_fd_, F_OFD_GETLK, &probe) != 0) {
    spdlog::warn("cannot take locks on {}: {}; every exclusive create asks the agent", path, strerror(errno));
    if (lock_fd_ >= 0) close(lock_fd_);
    lock_fd_ = -1;
    return;
  }
  fchmod(lock_fd_, 0644);  // every user's shim takes read locks
}

CreateSlotTable::~CreateSlotTable() {
  EndAll();
  if (lock_fd_ >= 0) close(lock_fd_);
}

void CreateSlotTable::EndAll() {
  std::lock_guard lock(mu_);
  stopped_ = true;
  while (!named_.empty()) EndLocked(named_.begin());
}

bool CreateSlotTable::Starting() const { return predecessor_ && BootTimeNs() < started_ns_ + kCreateSlotLifeNs; }

bool CreateSlotTable::StartedWithin(std::chrono::nanoseconds d) const { return BootTimeNs() < started_ns_ + d.count(); }

uint64_t CreateSlotTable::peer_changes() {
  std::lock_guard lock(mu_);
  return peer_changes_;
}

bool CreateSlotTable::Install(const std::string& dir, int64_t until_ns, uint64_t peer_changes_seen) {
  if (dir.size() > 8 * CreateSlot::kKeyWords || lock_fd_ < 0 || Starting() || stopped_) return false;
  // The predecessor's creates under way, once its slots have run out: a
  // look at the whole file (no slot of ours yet, so only theirs can hold it).
  if (predecessor_ && !predecessor_settled_) {
    if (!NoCreateUnderWay(0, 0)) return false;
    predecessor_settled_ = true;
  }
  const int64_t now = BootTimeNs();
  until_ns = std::min(until_ns, now + kCreateSlotLifeNs);
  std::lock_guard lock(mu_);
  if (peer_changes_ != peer_changes_seen || stopped_) return false;  // (EndAll may have come meanwhile)
  if (auto it = named_.find(dir); it != named_.end()) {
    std::atomic<int64_t>& until = slots_.slots[it->second.slot].until_ns;
    if (until.load() < until_ns) until.store(until_ns);  // a renewed lease: later, never earlier
    return true;
  }
  const unsigned first = CreateSlots::FirstSlot(dir);
  for (unsigned i = 0; i < CreateSlots::kProbe; ++i) {
    const unsigned at = (first + i) % CreateSlots::kSlots;
    CreateSlot& s = slots_.slots[at];
    uint64_t seq = s.seq.load();
    if ((seq & 1) != 0) {
      if (s.until_ns.load() > now) continue;
      // Run out: no shim trusts it; it is ours to take.
      for (auto it = named_.begin(); it != named_.end(); ++it)
        if (it->second.slot == at) {
          EndLocked(it);
          break;
        }
      seq = s.seq.load();
      if ((seq & 1) != 0) continue;
    }
    s.until_ns.store(until_ns);
    s.key_bytes.store(dir.size());
    for (unsigned w = 0; w < CreateSlot::kKeyWords; ++w) s.key[w].store(CreateSlots::KeyWord(dir, w));
    s.seq.store(seq + 1, std::memory_order_release);
    slots_.held.fetch_add(1);
    named_[dir] = {at, seq + 1};
    return true;
  }
  return false;
}

void CreateSlotTable::EndLocked(std::map<std::string, Named>::iterator it) {
  CreateSlot& s = slots_.slots[it->second.slot];
  if (s.seq.load() == it->second.seq) {
    s.seq.store(it->second.seq + 1);  // seq_cst: before the look at the lock below
    slots_.held.fetch_sub(1);
  }
  // A shim that saw the slot before it ended holds a read lock in the
  // directory's span (taken before its look): free, and none did.
  const uint64_t base = CreateSlots::LockBase(it->first);
  if (!NoCreateUnderWay(base, CreateSlots::kLockSpan)) unsettled_[it->first] = base;
  named_.erase(it);
}

bool CreateSlotTable::NoCreateUnderWay(uint64_t base, uint64_t len,
                                       std::optional<std::chrono::steady_clock::time_point> deadline) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(base);
  fl.l_len = static_cast<off_t>(len);
  // A create holds its read lock for a few microseconds: tried again
  // every 100 us rather than waited for (F_OFD_SETLKW has no timeout).
  for (;;) {
    fl.l_type = F_WRLCK;
    if (fcntl(lock_fd_, F_OFD_SETLK, &fl) == 0) {
      fl.l_type = F_UNLCK;
      fcntl(lock_fd_, F_OFD_SETLK, &fl);
      return true;
    }
    if (!deadline || std::chrono::steady_clock::now() >= *deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

bool CreateSlotTable::End(const std::string& dir, bool below) {
  std::lock_guard lock(mu_);
  return EndLocked(dir, below);
}

bool CreateSlotTable::EndLocked(const std::string& dir, bool below) {
  bool ended = false;
  if (auto it = named_.find(dir); it != named_.end()) {
    EndLocked(it);
    ended = true;
  }
  if (!below) return ended;
  const std::string prefix = KeyPrefixBelow(dir);
  for (auto it = named_.lower_bound(prefix); it != named_.end() && it->first.starts_with(prefix);) {
    EndLocked(it++);
    ended = true;
  }
  return ended;
}

bool CreateSlotTable::WaitForCreates(const std::string& dir, bool below) {
  if (lock_fd_ < 0) return true;  // no slot was ever installed
  const auto deadline = std::chrono::steady_clock::now() + kCreatesWait;
  // The predecessor's slots have run out (Starting() is over: recalls wait
  // for that), but a create begun under one may be under way: the whole
  // file, until a look finds it free (here or at an Install; no slot of
  // ours is installed before, so only the predecessor's shims can hold it).
  if (predecessor_ && !predecessor_settled_.load()) {
    if (!NoCreateUnderWay(0, 0, deadline)) {
      spdlog::warn("create slots: a create begun under the slots of the agent before this one is still under way");
      return false;
    }
    predecessor_settled_ = true;
  }
  std::map<std::string, uint64_t> waits;
  {
    std::lock_guard lock(mu_);
    if (auto it = unsettled_.find(dir); it != unsettled_.end()) waits.insert(*it);
    const std::string prefix = KeyPrefixBelow(dir);
    for (auto it = unsettled_.lower_bound(prefix); below && it != unsettled_.end() && it->first.starts_with(prefix); ++it)
      waits.insert(*it);
  }
  bool done = true;
  for (const auto& [waited_dir, base] : waits) {
    if (!NoCreateUnderWay(base, CreateSlots::kLockSpan, deadline)) {
      done = false;
      continue;
    }
    std::lock_guard lock(mu_);
    unsettled_.erase(waited_dir);
  }
  if (!done)
    spdlog::warn("create slots: a program's exclusive create in /{} did not end within {} ms (a program stopped in "
                 "the middle of its open?)",
                 dir, std::chrono::duration_cast<std::chrono::milliseconds>(kCreatesWait).count());
  return done;
}

void CreateSlotTable::PeerChanged(const std::string& key) {
  std::lock_guard lock(mu_);
  ++peer_changes_;
  if (named_.empty()) return;
  (void)EndLocked(ParentKey(key), /*below=*/false);
  (void)EndLocked(key, /*below=*/true);  // a directory a peer removed or moved, and what is below it
}

size_t CreateSlotTable::InUse() {
  std::lock_guard lock(mu_);
  return named_.size();
}

}  // namespace onebox
