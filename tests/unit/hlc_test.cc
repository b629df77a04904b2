// Hybrid logical clock: monotone under a stalled or backwards wall clock,
// Kulkarni's receive rule, bounded drift, and restart monotonicity (via the store).
#include "consistency/hlc.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

namespace onebox {
namespace {

struct FakeWall {
  uint64_t ms = 1'700'000'000'000;
  HybridLogicalClock::WallClock fn() {
    return [this] { return ms; };
  }
};

TEST(Hlc, FollowsWallClockWhenItAdvances) {
  FakeWall wall;
  HybridLogicalClock clock(wall.fn());
  HlcTimestamp a = clock.Now();
  EXPECT_EQ(hlc::PhysicalMs(a), wall.ms);
  EXPECT_EQ(hlc::Logical(a), 0u);
  wall.ms += 5;
  HlcTimestamp b = clock.Now();
  EXPECT_EQ(hlc::PhysicalMs(b), wall.ms);
  EXPECT_EQ(hlc::Logical(b), 0u);
}

TEST(Hlc, CountsLogicallyWhileWallClockStalls) {
  FakeWall wall;
  HybridLogicalClock clock(wall.fn());
  HlcTimestamp prev = clock.Now();
  for (int i = 1; i <= 100; ++i) {
    HlcTimestamp t = clock.Now();
    EXPECT_GT(t, prev);
    EXPECT_EQ(hlc::PhysicalMs(t), wall.ms);
    EXPECT_EQ(hlc::Logical(t), static_cast<uint64_t>(i));
    prev = t;
  }
}

TEST(Hlc, StaysMonotoneWhenWallClockJumpsBackwards) {
  FakeWall wall;
  HybridLogicalClock clock(wall.fn());
  HlcTimestamp before = clock.Now();
  wall.ms -= 60'000;  // NTP step of a minute back
  HlcTimestamp after = clock.Now();
  EXPECT_GT(after, before);
  EXPECT_EQ(hlc::PhysicalMs(after), hlc::PhysicalMs(before));
  wall.ms += 120'000;  // and the wall clock catches up and passes
  HlcTimestamp later = clock.Now();
  EXPECT_EQ(hlc::PhysicalMs(later), wall.ms);
  EXPECT_EQ(hlc::Logical(later), 0u);
}

TEST(Hlc, LogicalOverflowCarriesIntoPhysical) {
  FakeWall wall;
  HybridLogicalClock clock(wall.fn());
  clock.Observe(hlc::Pack(wall.ms, 0xffff));
  HlcTimestamp t = clock.Now();
  EXPECT_EQ(hlc::PhysicalMs(t), wall.ms + 1);
  EXPECT_EQ(hlc::Logical(t), 0u);
}

TEST(Hlc, ReceiveRuleTakesTheMaximum) {
  FakeWall wall;
  HybridLogicalClock clock(wall.fn());
  HlcTimestamp local = clock.Now();
  // A remote stamp slightly ahead (within the offset): the clock moves past it.
  HlcTimestamp remote = hlc::Pack(wall.ms + 100, 7);
  Result<HlcTimestamp> merged = clock.Update(remote);
  ASSERT_TRUE(merged.ok());
  EXPECT_EQ(*merged, hlc::Pack(wall.ms + 100, 8));
  EXPECT_GT(clock.Now(), *merged);
  // A remote stamp behind: the local clock still advances.
  Result<HlcTimestamp> old = clock.Update(local);
  ASSERT_TRUE(old.ok());
  EXPECT_GT(*old, *merged);
}

TEST(Hlc, RefusesRemoteClockTooFarAhead) {
  FakeWall wall;
  HybridLogicalClock clock(wall.fn(), /*max_offset_ms=*/500);
  HlcTimestamp before = clock.Now();
  Result<HlcTimestamp> r = clock.Update(hlc::Pack(wall.ms + 10'000, 0));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("ahead"), std::string::npos);
  EXPECT_EQ(clock.Last(), before);  // left alone
}

TEST(Hlc, UniqueAndMonotoneAcrossThreads) {
  HybridLogicalClock clock;
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::vector<HlcTimestamp>> seen(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) seen[t].push_back(clock.Now());
    });
  }
  for (auto& th : threads) th.join();
  std::set<HlcTimestamp> all;
  for (auto& v : seen) {
    for (size_t i = 1; i < v.size(); ++i) ASSERT_GT(v[i], v[i - 1]);
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * kEach));
}

TEST(Hlc, FormatShowsUtcTimeAndCounter) {
  // 2023-11-14T22:13:20.000Z is 1700000000000 ms.
  EXPECT_EQ(hlc::Format(hlc::Pack(1'700'000'000'000, 3)), "2023-11-14T22:13:20.000Z+3");
}

}  // namespace
}  // namespace onebox
