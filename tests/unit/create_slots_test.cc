// The create slots (sync/create_slots.h, proto/state_page.h): what a shim
// sees of a slot the agent installs and ends, and the recall's wait for the
// creates under way, against read locks taken as a shim takes them.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nodeagent/sync/create_slots.h"
#include "tests/unit/create_slot_seen.h"
#include "proto/state_page.h"
#include "tests/test_util.h"

namespace onebox {
namespace {

using namespace std::chrono_literals;

// The shims' side of a create slot (proto/state_page.h) against the
// agent's (sync/create_slots.h): a slot names its directory, and nothing
// else, until it ends or runs out.
TEST(CreateSlotsTest, ASlotNamesItsDirectoryUntilItEndsOrRunsOut) {
  auto page = std::make_unique<CreateSlots>();
  onebox::testing::TempDir view;
  CreateSlotTable table(*page, view.path());
  const int64_t later = BootTimeNs() + 2'000'000'000;
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), 0u);
  ASSERT_TRUE(table.Install("cluster/d", later, table.peer_changes()));
  unsigned at = 0;
  const uint64_t seq = SlotSeen(*page, "cluster/d", &at);
  ASSERT_NE(seq, 0u);
  EXPECT_TRUE(CreateSlotStill(page.get(), at, seq));
  for (const char* other : {"cluster", "cluster/", "cluster/d/", "cluster/dd", "cluster/e", "", "cluster/d/x"})
    EXPECT_EQ(SlotSeen(*page, other), 0u) << other;
  // Installed again (a renewed lease): the same slot and seq, running later.
  ASSERT_TRUE(table.Install("cluster/d", later + 1000, table.peer_changes()));
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), seq);
  EXPECT_EQ(page->slots[at].until_ns.load(), later + 1000);
  // A directory and everything below it end together; others stay.
  ASSERT_TRUE(table.Install("cluster/d/sub", later, table.peer_changes()));
  ASSERT_TRUE(table.Install("cluster/d-x", later, table.peer_changes()));
  table.End("cluster/d", /*below=*/true);
  EXPECT_FALSE(CreateSlotStill(page.get(), at, seq));
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), 0u);
  EXPECT_EQ(SlotSeen(*page, "cluster/d/sub"), 0u);
  EXPECT_NE(SlotSeen(*page, "cluster/d-x"), 0u);
  EXPECT_EQ(table.InUse(), 1u);
  // A peer's change in a directory ends its slot, and one that came since
  // the caller's look at the view refuses an install.
  table.PeerChanged("cluster/d-x/f");
  EXPECT_EQ(SlotSeen(*page, "cluster/d-x"), 0u);
  const uint64_t seen = table.peer_changes();
  table.PeerChanged("elsewhere/f");
  EXPECT_FALSE(table.Install("cluster/d", later, seen));
  // A peer's change of the directory itself ends it and those below.
  ASSERT_TRUE(table.Install("cluster/m", later, table.peer_changes()));
  ASSERT_TRUE(table.Install("cluster/m/n", later, table.peer_changes()));
  table.PeerChanged("cluster/m");
  EXPECT_EQ(SlotSeen(*page, "cluster/m"), 0u);
  EXPECT_EQ(SlotSeen(*page, "cluster/m/n"), 0u);
  // Run out: no shim takes it, and its slot is free again.
  ASSERT_TRUE(table.Install("cluster/old", BootTimeNs() - 1, table.peer_changes()));
  EXPECT_EQ(SlotSeen(*page, "cluster/old"), 0u);
  // No slot runs longer than kCreateSlotLifeNs, whatever it is asked for.
  ASSERT_TRUE(table.Install("cluster/long", BootTimeNs() + 10'000'000'000, table.peer_changes()));
  unsigned long_at = 0;
  ASSERT_NE(SlotSeen(*page, "cluster/long", &long_at), 0u);
  EXPECT_LE(page->slots[long_at].until_ns.load(), BootTimeNs() + kCreateSlotLifeNs);
  // A key too long for a slot gets none; the longest that fits does.
  const std::string longest = "cluster/" + std::string(8 * CreateSlot::kKeyWords - 8, 'x');
  EXPECT_FALSE(table.Install(longest + "y", later, table.peer_changes()));
  ASSERT_TRUE(table.Install(longest, later, table.peer_changes()));
  EXPECT_NE(SlotSeen(*page, longest), 0u);
  EXPECT_EQ(SlotSeen(*page, longest.substr(0, longest.size() - 1)), 0u);
}

// A recall's wait for the creates under way (kCreateLockFile): a create a
// shim began under a slot before it ended holds the directory's byte, and
// the wait lasts until it lets go, kCreatesWait at most (false then: a
// program stopped in its open); a slot that ended with no create under way,
// or another directory's, costs no wait.
TEST(CreateSlotsTest, ARecallWaitsForTheCreatesBegunUnderASlotBeforeItEnded) {
  auto page = std::make_unique<CreateSlots>();
  onebox::testing::TempDir view;
  CreateSlotTable table(*page, view.path());
  const int64_t later = BootTimeNs() + 10'000'000'000;
  const int shim = open((view / kCreateLockFile).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(shim, 0);
  // A shim thread's read lock in dir's span, as it takes it before its
  // look at the slot (the byte of its tid; any byte of the span counts).
  auto hold = [&](const std::string& dir, short type) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = static_cast<off_t>(CreateSlots::LockBase(dir) + CreateSlots::kLockSpan - 1);
    fl.l_len = 1;
    return fcntl(shim, F_OFD_SETLK, &fl) == 0;
  };
  auto timed_wait = [&](const std::string& dir, bool below, bool* done) {
    const auto started = std::chrono::steady_clock::now();
    *done = table.WaitForCreates(dir, below);
    return std::chrono::steady_clock::now() - started;
  };
  bool done = false;
  // No create under way when the slot ended: no wait.
  ASSERT_TRUE(table.Install("cluster/d", later, table.peer_changes()));
  table.End("cluster/d");
  EXPECT_LT(timed_wait("cluster/d", false, &done), 100ms);
  EXPECT_TRUE(done);
  // One under way: the wait lasts until it is done.
  ASSERT_TRUE(table.Install("cluster/d", later, table.peer_changes()));
  ASSERT_TRUE(hold("cluster/d", F_RDLCK));
  table.End("cluster/d");
  std::thread finish([&] {
    std::this_thread::sleep_for(300ms);
    hold("cluster/d", F_UNLCK);
  });
  const auto waited = timed_wait("cluster/d", false, &done);
  finish.join();
  EXPECT_TRUE(done);
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, CreateSlotTable::kCreatesWait);
  // One that stays (a program stopped in its open): false after
  // kCreatesWait, and the next recall waits for it again.
  ASSERT_TRUE(table.Install("cluster/d/sub", later, table.peer_changes()));
  ASSERT_TRUE(hold("cluster/d/sub", F_RDLCK));
  table.End("cluster/d", /*below=*/true);
  EXPECT_LT(timed_wait("cluster/e", true, &done), 100ms) << "another directory's create";
  EXPECT_TRUE(done);
  EXPECT_LT(timed_wait("cluster/d", false, &done), 100ms) << "below d, and d alone was asked for";
  EXPECT_GE(timed_wait("cluster/d", true, &done), CreateSlotTable::kCreatesWait);
  EXPECT_FALSE(done);
  hold("cluster/d/sub", F_UNLCK);
  EXPECT_LT(timed_wait("cluster/d", true, &done), 100ms);
  EXPECT_TRUE(done);
  close(shim);
  EXPECT_FALSE(table.Starting()) << "the first agent on the view";
  // A stopping agent installs nothing.
  table.EndAll();
  EXPECT_FALSE(table.Install("cluster/g", later, table.peer_changes()));
  // No lock file (a view it cannot write in): no slot at all.
  CreateSlotTable without(*page, view / "missing/dir");
  EXPECT_FALSE(without.Install("cluster/e", later, without.peer_changes()));
}

// An agent started on a view another agent kept slots on (the lock file was
// there): no slot, and no recall answered, while its predecessor's slots
// may still be trusted (kCreateSlotLifeNs), nor while a create begun under
// one is still under way (a read lock anywhere in the file).
TEST(CreateSlotsTest, AnAgentAfterAnotherWaitsOutItsSlotsAndItsCreatesUnderWay) {
  auto page = std::make_unique<CreateSlots>();
  onebox::testing::TempDir view;
  auto first = std::make_unique<CreateSlotTable>(*page, view.path());
  EXPECT_FALSE(first->Starting());
  first.reset();
  const int shim = open((view / kCreateLockFile).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(shim, 0);
  struct flock fl {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(CreateSlots::LockBase("cluster/old") + 4242);
  fl.l_len = 1;
  ASSERT_EQ(fcntl(shim, F_OFD_SETLK, &fl), 0);  // a create under the predecessor's slot, under way
  CreateSlotTable successor(*page, view.path());
  EXPECT_TRUE(successor.Starting());
  EXPECT_FALSE(successor.Install("cluster/f", BootTimeNs() + 2'000'000'000, successor.peer_changes()));
  std::this_thread::sleep_for(std::chrono::nanoseconds(kCreateSlotLifeNs) + 100ms);
  EXPECT_FALSE(successor.Starting());
  EXPECT_FALSE(successor.Install("cluster/f", BootTimeNs() + 2'000'000'000, successor.peer_changes()))
      << "a create under the predecessor's slot is under way";
  EXPECT_FALSE(successor.WaitForCreates("cluster/new"));
  fl.l_type = F_UNLCK;
  ASSERT_EQ(fcntl(shim, F_OFD_SETLK, &fl), 0);
  EXPECT_TRUE(successor.Install("cluster/f", BootTimeNs() + 2'000'000'000, successor.peer_changes()));
  EXPECT_NE(SlotSeen(*page, "cluster/f"), 0u);
  EXPECT_TRUE(successor.WaitForCreates("cluster/new"));
  close(shim);
}

}  // namespace
}  // namespace onebox
