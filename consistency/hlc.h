// Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).
// A timestamp packs physical milliseconds and a logical counter into one uint64
// (ms << 16 | counter) so that timestamps compare as integers. Now() is monotone
// even when the wall clock jumps backwards; Update() merges a remote timestamp
// and refuses one too far ahead of the local wall clock. Monotonicity across
// restarts comes from Observe(): the store persists the largest timestamp it
// wrote and feeds it back at open.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "consistency/status.h"

namespace onebox {

using HlcTimestamp = uint64_t;

namespace hlc {
constexpr int kLogicalBits = 16;
constexpr HlcTimestamp Pack(uint64_t physical_ms, uint64_t logical) {
  return (physical_ms << kLogicalBits) | (logical & ((1u << kLogicalBits) - 1));
}
constexpr uint64_t PhysicalMs(HlcTimestamp t) { return t >> kLogicalBits; }
constexpr uint64_t Logical(HlcTimestamp t) { return t & ((1u << kLogicalBits) - 1); }
// "2026-11-21T05:34:15.123Z+7" (UTC wall time, then the logical counter).
std::string Format(HlcTimestamp t);
// Milliseconds since the Unix epoch from CLOCK_REALTIME.
uint64_t SystemWallMillis();
}  // namespace hlc

class HybridLogicalClock {
 public:
  using WallClock = std::function<uint64_t()>;  // milliseconds since the epoch

  explicit HybridLogicalClock(WallClock wall = hlc::SystemWallMillis, uint64_t max_offset_ms = 500);

  // A timestamp for a local or send event, larger than every one issued or observed.
  HlcTimestamp Now();
  // Merge a timestamp received from a peer; fails (and leaves the clock alone) when
  // the remote physical time is more than max_offset_ms ahead of the local wall clock.
  Result<HlcTimestamp> Update(HlcTimestamp remote);
  // Raise the floor without checks (recovery from persisted state).
  void Observe(HlcTimestamp t);
  // The last timestamp issued or observed.
  HlcTimestamp Last() const { return last_.load(std::memory_order_acquire); }

 private:
  WallClock wall_;
  uint64_t max_offset_ms_;
  std::atomic<HlcTimestamp> last_{0};
};

}  // namespace onebox
