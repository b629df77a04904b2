#include "nodeagent/sync/create_slots.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "naming/ns_key.h"

namespace onebox {

CreateSlotTable::CreateSlotTable(CreateSlots& slots, const std::string& view_root) : slots_(slots) {
  const std::string path = view_root + "/" + kCreateLockFile;
  lock_fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    // Without it no slot is installed: a shim whose lock fails asks the agent.
    spdlog::warn("cannot open {}: {}; every exclusive create asks the agent", path, strerror(errno));
    return;
  }
  fchmod(lock_fd_, 0644);  // every user's shim takes read locks
}

CreateSlotTable::~CreateSlotTable() {
  {
    std::lock_guard lock(mu_);
    while (!named_.empty()) EndLocked(named_.begin());
  }
  if (lock_fd_ >= 0) close(lock_fd_);
}

uint64_t CreateSlotTable::peer_changes() {
  std::lock_guard lock(mu_);
  return peer_changes_;
}

bool CreateSlotTable::Install(const std::string& dir, int64_t until_ns, uint64_t peer_changes_seen) {
  if (dir.size() > 8 * CreateSlot::kKeyWords || lock_fd_ < 0) return false;
  std::lock_guard lock(mu_);
  if (peer_changes_ != peer_changes_seen) return false;
  if (auto it = named_.find(dir); it != named_.end()) {
    std::atomic<int64_t>& until = slots_.slots[it->second.slot].until_ns;
    if (until.load() < until_ns) until.store(until_ns);  // a renewed lease: later, never earlier
    return true;
  }
  const int64_t now = BootTimeNs();
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
  // A shim that saw the slot before it ended holds the byte's read lock
  // (taken before its look): free, and none did.
  const unsigned byte = CreateSlots::FirstSlot(it->first);
  if (!NoCreateUnderWay(byte)) unsettled_[it->first] = byte;
  named_.erase(it);
}

bool CreateSlotTable::NoCreateUnderWay(unsigned byte, std::optional<std::chrono::steady_clock::time_point> deadline) {
  struct flock fl {};
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
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

void CreateSlotTable::End(const std::string& dir, bool below) {
  std::lock_guard lock(mu_);
  EndLocked(dir, below);
}

void CreateSlotTable::EndLocked(const std::string& dir, bool below) {
  if (auto it = named_.find(dir); it != named_.end()) EndLocked(it);
  if (!below) return;
  const std::string prefix = KeyPrefixBelow(dir);
  for (auto it = named_.lower_bound(prefix); it != named_.end() && it->first.starts_with(prefix);) EndLocked(it++);
}

bool CreateSlotTable::WaitForCreates(const std::string& dir, bool below) {
  std::map<std::string, unsigned> waits;
  {
    std::lock_guard lock(mu_);
    if (auto it = unsettled_.find(dir); it != unsettled_.end()) waits.insert(*it);
    const std::string prefix = KeyPrefixBelow(dir);
    for (auto it = unsettled_.lower_bound(prefix); below && it != unsettled_.end() && it->first.starts_with(prefix); ++it)
      waits.insert(*it);
  }
  const auto deadline = std::chrono::steady_clock::now() + kCreatesWait;
  bool done = true;
  for (const auto& [waited_dir, byte] : waits) {
    if (!NoCreateUnderWay(byte, deadline)) {
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
  EndLocked(ParentKey(key), /*below=*/false);
  EndLocked(key, /*below=*/true);  // a directory a peer removed or moved, and what is below it
}

size_t CreateSlotTable::InUse() {
  std::lock_guard lock(mu_);
  return named_.size();
}

}  // namespace onebox
