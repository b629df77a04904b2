// The agent's shared state page: one 4 KiB memfd that the agent writes and
// every shim maps read-only (it travels with the Hello answer, SCM_RIGHTS).
// Sealed against shrinking, growing and new writers, so no program can make a
// shim's read of it fault or lie. Plain lock-free atomics, no locks: the shim
// reads a field with one load on its hot path.
#pragma once

#include <atomic>
#include <cstdint>

namespace onebox {

struct StatePage {
  static constexpr uint64_t kMagic = 0x316567617073626fULL;  // "obspage1"
  uint64_t magic;
  // Stubs in the view now (entries whose content is on other nodes):
  // open() looks for one only while this is not 0.
  std::atomic<uint64_t> stubs;
  // Other members alive now: an exclusive create asks them (Claim) only when
  // this is not 0.
  std::atomic<uint64_t> peers_alive;
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// The name of the extended attribute that marks a stub in the view. The agent
// decides what is a stub (it checks size and mtime against its record); the
// attribute only tells the shim to ask.
constexpr const char* kStubXattr = "user.onebox.stub";

}  // namespace onebox
