#include "nodeagent/locks/lease_slots.h"

#include "nodeagent/daemon/thread_name.h"

namespace onebox {

LockLeaseSlots::LockLeaseSlots(LockLeases& leases, Hooks hooks) : leases_(leases), hooks_(std::move(hooks)) {
  beat_ = std::thread([this] { BeatLoop(); });
  NameThread(beat_, "onebox-leasebeat");
}

LockLeaseSlots::~LockLeaseSlots() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    EndAllLocked();
  }
  cv_.notify_all();
  if (beat_.joinable()) beat_.join();
}

int LockLeaseSlots::Install(uint64_t dev, uint64_t ino, bool flock, uint64_t* installed) {
  std::lock_guard lock(mu_);
  if (stopping_ || !trusted_) return -1;
  const unsigned first = LockLeases::FirstSlot(dev, ino, flock);
  for (unsigned i = 0; i < LockLeases::kProbe; ++i) {
    const unsigned at = (first + i) % LockLeases::kSlots;
    LockLeaseSlot& s = leases_.slots[at];
    const uint64_t seq = s.seq.load();
    if ((seq & 1) != 0) continue;
    // Beat first: a shim trusts no slot of a page whose beat is stale.
    leases_.heartbeat_ns.store(CoarseMonotonicNs());
    s.dev.store(dev);
    s.ino.store(ino);
    s.flock.store(flock ? 1 : 0);
    s.seq.store(seq + 1, std::memory_order_release);
    *installed = seq + 1;
    leases_.held.fetch_add(1);
    if (in_use_++ == 0) cv_.notify_all();
    return static_cast<int>(at);
  }
  return -1;
}

void LockLeaseSlots::End(int slot, uint64_t installed) {
  if (slot < 0 || slot >= static_cast<int>(LockLeases::kSlots)) return;
  std::lock_guard lock(mu_);
  LockLeaseSlot& s = leases_.slots[slot];
  const uint64_t seq = s.seq.load();
  if ((seq & 1) == 0 || seq != installed) return;  // ended already (and maybe another file's now)
  s.seq.store(seq + 1);  // seq_cst: before the caller's look at the kernel's locks
  leases_.held.fetch_sub(1);
  --in_use_;
}

void LockLeaseSlots::SetTrusted(bool trusted) {
  std::lock_guard lock(mu_);
  if (trusted_ == trusted) return;
  trusted_ = trusted;
  if (!trusted) leases_.heartbeat_ns.store(0);  // distrusted by every shim at its next look
  cv_.notify_all();
}

void LockLeaseSlots::EndAllLocked() {
  leases_.heartbeat_ns.store(0);
  for (LockLeaseSlot& s : leases_.slots) {
    const uint64_t seq = s.seq.load();
    if ((seq & 1) != 0) s.seq.store(seq + 1);
  }
  leases_.held.store(0);
  in_use_ = 0;
}

size_t LockLeaseSlots::InUse() {
  std::lock_guard lock(mu_);
  return in_use_;
}

void LockLeaseSlots::BeatLoop() {
  // Beats only while a lease is held: an agent without one wakes for nothing.
  std::unique_lock lock(mu_);
  while (!stopping_) {
    if (in_use_ == 0 || !trusted_) {
      last_beat_.reset();
      cv_.wait(lock, [&] { return stopping_ || (in_use_ != 0 && trusted_); });
      continue;
    }
    const Clock::time_point now = SteadyClock().NowCountingSuspend();
    const bool paused = last_beat_ && now - *last_beat_ > std::chrono::nanoseconds(kLockLeaseTrustNs);
    // Membership is asked every kBeatsPerTrustLook beats (its answer moves in
    // seconds; a look costs more than a beat).
    const bool look = ++beats_ % kBeatsPerTrustLook == 0;
    if (paused || (look && hooks_.may_trust && !hooks_.may_trust())) {
      EndAllLocked();  // before any new beat: no shim trusts a slot again
      last_beat_.reset();
      lock.unlock();
      if (hooks_.lapsed) hooks_.lapsed();
      lock.lock();
      continue;
    }
    last_beat_ = now;
    leases_.heartbeat_ns.store(CoarseMonotonicNs());
    cv_.wait_for(lock, std::chrono::nanoseconds(kLockLeaseBeatNs), [&] { return stopping_; });
  }
}

}  // namespace onebox
