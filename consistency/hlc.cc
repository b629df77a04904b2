#include "consistency/hlc.h"

#include <ctime>

#include <fmt/format.h>

namespace onebox {

namespace hlc {

std::string Format(HlcTimestamp t) {
  uint64_t ms = PhysicalMs(t);
  time_t secs = static_cast<time_t>(ms / 1000);
  struct tm tm {};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z+{}", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000, Logical(t));
}

uint64_t SystemWallMillis() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

}  // namespace hlc

HybridLogicalClock::HybridLogicalClock(WallClock wall, uint64_t max_offset_ms)
    : wall_(std::move(wall)), max_offset_ms_(max_offset_ms) {}

// With timestamps packed as (l << 16 | c), Kulkarni's send rule
//   l' = max(l, pt); c' = (l' == l) ? c + 1 : 0
// is exactly max(Pack(pt, 0), last + 1); a counter overflow carries into l.
HlcTimestamp HybridLogicalClock::Now() {
  HlcTimestamp floor = hlc::Pack(wall_(), 0);
  HlcTimestamp last = last_.load(std::memory_order_acquire);
  for (;;) {
    HlcTimestamp next = std::max(floor, last + 1);
    if (last_.compare_exchange_weak(last, next, std::memory_order_acq_rel)) return next;
  }
}

// Kulkarni's receive rule is likewise max(Pack(pt, 0), last + 1, remote + 1).
Result<HlcTimestamp> HybridLogicalClock::Update(HlcTimestamp remote) {
  uint64_t pt = wall_();
  if (hlc::PhysicalMs(remote) > pt + max_offset_ms_) {
    return Status::InvalidArgument(fmt::format("remote clock {} is {} ms ahead of local wall clock (max offset {} ms)",
                                               hlc::Format(remote), hlc::PhysicalMs(remote) - pt, max_offset_ms_));
  }
  HlcTimestamp floor = std::max(hlc::Pack(pt, 0), remote + 1);
  HlcTimestamp last = last_.load(std::memory_order_acquire);
  for (;;) {
    HlcTimestamp next = std::max(floor, last + 1);
    if (last_.compare_exchange_weak(last, next, std::memory_order_acq_rel)) return next;
  }
}

void HybridLogicalClock::Observe(HlcTimestamp t) {
  HlcTimestamp last = last_.load(std::memory_order_acquire);
  while (t > last && !last_.compare_exchange_weak(last, t, std::memory_order_acq_rel)) {
  }
}

}  // namespace onebox
