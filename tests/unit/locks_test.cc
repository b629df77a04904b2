// Cluster-wide advisory locks, the parts without a network: a file's locks
// as the kernel keeps them (locks/lock_ranges.h), and the lock home's rules
// (locks/lock_home.h): conflicts, waits, node deaths, grace and fences.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "nodeagent/locks/lock_home.h"
#include "nodeagent/locks/kernel_locks.h"
#include "nodeagent/locks/lease_slots.h"
#include "nodeagent/locks/node_locks.h"
#include "tests/test_util.h"
#include "nodeagent/locks/lock_wire.h"
#include "tests/unit/in_process_cluster.h"

namespace onebox {
namespace {

using testing::FakeClock;

const LockOwner kP1{"n1", "p1", 1};
const LockOwner kP2{"n1", "p2", 2};
const LockOwner kQ{"n2", "p7", 7};

std::string Show(const FileLocks& locks) {
  std::string out;
  for (const HeldLock& h : locks.all())
    out += fmt::format("{}:{}[{},{}) ", h.owner.key, h.type == LockType::kRead ? "r" : "w", h.span.start,
                       h.span.end == LockSpan::kToEnd ? std::string("eof") : std::to_string(h.span.end));
  return out;
}

TEST(FileLocksTest, ReadsShareWritesExcludeAndOwnersNeverConflictWithThemselves) {
  FileLocks f;
  f.Apply(kP1, LockType::kRead, {0, 10});
  EXPECT_FALSE(f.Conflict(kP2, LockType::kRead, {5, 15}));
  ASSERT_TRUE(f.Conflict(kP2, LockType::kWrite, {5, 15}));
  EXPECT_EQ(f.Conflict(kP2, LockType::kWrite, {5, 15})->owner.key, "p1");
  EXPECT_FALSE(f.Conflict(kP2, LockType::kWrite, {10, 20}));  // [0,10) ends before 10
  EXPECT_FALSE(f.Conflict(kP1, LockType::kWrite, {0, 10}));   // its own
  EXPECT_FALSE(f.Conflict(kP2, LockType::kUnlock, {0, 10}));
}

TEST(FileLocksTest, ANewLockSplitsMergesAndReplacesTheOwnersOwnAsTheKernelDoes) {
  FileLocks f;
  f.Apply(kP1, LockType::kRead, {0, 100});
  f.Apply(kP1, LockType::kWrite, {40, 60});  // splits the read lock in three
  EXPECT_EQ(Show(f), "p1:r[0,40) p1:w[40,60) p1:r[60,100) ");
  f.Apply(kP1, LockType::kRead, {40, 60});  // and back: one read lock again
  EXPECT_EQ(Show(f), "p1:r[0,100) ");
  f.Apply(kP1, LockType::kRead, {100, 120});  // adjacent, same type: merged
  EXPECT_EQ(Show(f), "p1:r[0,120) ");
  f.Apply(kP1, LockType::kUnlock, {10, 20});  // a hole
  EXPECT_EQ(Show(f), "p1:r[0,10) p1:r[20,120) ");
  f.Apply(kP1, LockType::kWrite, {5, LockSpan::kToEnd});
  EXPECT_EQ(Show(f), "p1:r[0,5) p1:w[5,eof) ");
  f.Apply(kP2, LockType::kRead, {0, 3});
  f.Release(kP1);
  EXPECT_EQ(Show(f), "p2:r[0,3) ");
  f.Apply(kQ, LockType::kRead, {0, 3});
  f.ReleaseNode("n1");
  EXPECT_EQ(Show(f), "p7:r[0,3) ");
}

// A home on a cluster whose members are what the test says.
struct Home {
  FakeClock clock;
  std::vector<std::string> nodes{"n1", "n2", "n3"};
  bool majority = true;
  uint64_t incarnation = 1;
  LockHome home{"n1",
                LockHome::Members{.not_dead = [this] { return nodes; },
                                  .majority = [this] { return majority; },
                                  .incarnation = [this] { return incarnation; }},
                clock};
  Home() {
    home.MembersChanged();
    clock.Advance(LockHome::kGrace + std::chrono::milliseconds(1));
  }
  // A path whose home is n1 among nodes.
  std::string PathHomedHere() const {
    for (int i = 0;; ++i)
      if (LockHome::HomeOf("f" + std::to_string(i), nodes) == "n1") return "f" + std::to_string(i);
  }
  v1::LockResponse Ask(const std::string& path, const LockOwner& owner, LockType type, LockSpan span,
                       v1::LockRequest::Op op = v1::LockRequest::SET, bool wait = false, uint64_t wait_id = 0,
                       uint64_t fence = 0) {
    v1::LockRequest req;
    req.set_path(path);
    ToWire(owner, req.mutable_owner());
    ToWire(type, span, req.mutable_span());
    req.set_op(op);
    req.set_wait(wait);
    req.set_wait_id(wait_id);
    if (fence != 0) {
      req.mutable_fence()->set_node_id(owner.node_id);
      req.mutable_fence()->set_seq(fence);
    }
    v1::LockResponse resp;
    EXPECT_TRUE(home.OnLock(req, &resp).ok());
    return resp;
  }
  // A node's reclaim of what owner holds (one span) at this home.
  v1::LockResponse Reclaim(const std::string& path, const LockOwner& owner, LockType type, LockSpan span) {
    v1::LockRequest req;
    req.set_path(path);
    ToWire(owner, req.mutable_owner());
    req.set_op(v1::LockRequest::RECLAIM);
    ToWire(type, span, req.add_held());
    v1::LockResponse resp;
    EXPECT_TRUE(home.OnLock(req, &resp).ok());
    return resp;
  }
  v1::LockResponse Await(const std::string& path, const std::string& node, uint64_t id, uint32_t window_ms,
                         bool cancel = false) {
    v1::AwaitLockRequest req;
    req.set_path(path);
    req.set_node_id(node);
    req.set_wait_id(id);
    req.set_window_ms(window_ms);
    req.set_cancel(cancel);
    v1::LockResponse resp;
    EXPECT_TRUE(home.OnAwaitLock(req, &resp).ok());
    return resp;
  }
};

// A node's lease on a file's locks (locks/lease_slots.h) is a whole-file
// write lock of its owner "lease": granted only while nobody holds a lock
// there, named as the holder to whoever it is in the way of (a wait too),
// and at its return the node's programs hold what the kernel granted them
// under it, which lets a waiter in where they do not hold.
TEST(LockHomeTest, ALeaseIsGrantedOnAnUnlockedFileOnlyAndItsReturnLeavesItsProgramsLocks) {
  Home h;
  const std::string path = h.PathHomedHere();
  const LockOwner lease{"n2", "lease.1", -1};
  const LockOwner held_under{"n2", "p9", 9};
  EXPECT_EQ(h.Ask(path, kP1, LockType::kRead, {0, 1}).outcome(), v1::LockResponse::GRANTED);
  EXPECT_EQ(h.Ask(path, lease, LockType::kWrite, {0, LockSpan::kToEnd}).outcome(), v1::LockResponse::CONFLICT);
  EXPECT_EQ(h.Ask(path, kP1, LockType::kUnlock, {0, 1}).outcome(), v1::LockResponse::GRANTED);
  ASSERT_EQ(h.Ask(path, lease, LockType::kWrite, {0, LockSpan::kToEnd}).outcome(), v1::LockResponse::GRANTED);
  v1::LockResponse in_the_way = h.Ask(path, kP1, LockType::kWrite, {20, 30});
  ASSERT_EQ(in_the_way.outcome(), v1::LockResponse::CONFLICT);
  EXPECT_EQ(in_the_way.holder().key(), "lease.1");
  EXPECT_EQ(in_the_way.holder().node_id(), "n2");
  v1::LockResponse queued = h.Ask(path, kP1, LockType::kWrite, {0, 10}, v1::LockRequest::SET, true, 5);
  ASSERT_EQ(queued.outcome(), v1::LockResponse::QUEUED);
  EXPECT_EQ(queued.holder().key(), "lease.1");

  v1::LockRequest ret;
  ret.set_path(path);
  ToWire(lease, ret.mutable_owner());
  ret.set_op(v1::LockRequest::RETURN);
  ret.mutable_fence()->set_node_id("n2");
  ret.mutable_fence()->set_seq(77);
  v1::LockHeld* held = ret.add_converted();
  ToWire(held_under, held->mutable_owner());
  ToWire(LockType::kWrite, LockSpan{5, 8}, held->mutable_span());
  {  // a node returns its own programs' locks only
    v1::LockRequest foreign = ret;
    foreign.mutable_converted(0)->mutable_owner()->set_node_id("n3");
    v1::LockResponse resp;
    EXPECT_EQ(h.home.OnLock(foreign, &resp).code(), Code::kInvalidArgument);
  }
  v1::LockResponse returned;
  ASSERT_TRUE(h.home.OnLock(ret, &returned).ok());
  EXPECT_EQ(returned.outcome(), v1::LockResponse::GRANTED);
  // The wait for [0,10) still meets p9's [5,8); [20,30) is free now.
  EXPECT_EQ(h.Await(path, "n1", 5, 0).outcome(), v1::LockResponse::QUEUED);
  v1::LockResponse p9 = h.Ask(path, kP2, LockType::kRead, {6, 7}, v1::LockRequest::TEST);
  ASSERT_EQ(p9.outcome(), v1::LockResponse::CONFLICT);
  EXPECT_EQ(p9.holder().key(), "p9");
  EXPECT_EQ(h.Ask(path, kP2, LockType::kWrite, {20, 30}).outcome(), v1::LockResponse::GRANTED);
  // p9's unlock lets the waiter in, with the lease's fence.
  EXPECT_EQ(h.Ask(path, held_under, LockType::kUnlock, {0, LockSpan::kToEnd}).outcome(), v1::LockResponse::GRANTED);
  v1::LockResponse granted = h.Await(path, "n1", 5, 0);
  ASSERT_EQ(granted.outcome(), v1::LockResponse::GRANTED);
  ASSERT_EQ(granted.fences_size(), 1);
  EXPECT_EQ(granted.fences(0).node_id(), "n2");
  EXPECT_EQ(granted.fences(0).seq(), 77u);
}

// Each grant of a lease has its own owner key: a late return of an ended
// lease (its answer lost, the node granted a new one since) leaves the new
// one in place; a restarted agent's return of its predecessors' leases
// (older_leases) ends those whose keys are not its own.
TEST(LockHomeTest, ALateReturnOfAnOldLeaseLeavesTheNewOneAndASuccessorEndsItsPredecessors) {
  Home h;
  const std::string path = h.PathHomedHere();
  auto give_back = [&](const std::string& key, bool older) {
    v1::LockRequest ret;
    ret.set_path(path);
    ToWire(LockOwner{"n2", key, -1}, ret.mutable_owner());
    ret.set_op(v1::LockRequest::RETURN);
    ret.set_older_leases(older);
    v1::LockResponse resp;
    EXPECT_TRUE(h.home.OnLock(ret, &resp).ok());
  };
  auto holder = [&] {
    v1::LockResponse r = h.Ask(path, kP1, LockType::kRead, {0, 1}, v1::LockRequest::TEST);
    return r.outcome() == v1::LockResponse::CONFLICT ? r.holder().key() : std::string("none");
  };
  const LockSpan all{0, LockSpan::kToEnd};
  ASSERT_EQ(h.Ask(path, {"n2", "lease.a.1", -1}, LockType::kWrite, all).outcome(), v1::LockResponse::GRANTED);
  give_back("lease.a.1", false);
  ASSERT_EQ(h.Ask(path, {"n2", "lease.a.2", -1}, LockType::kWrite, all).outcome(), v1::LockResponse::GRANTED);
  give_back("lease.a.1", false);  // late
  EXPECT_EQ(holder(), "lease.a.2");
  give_back("lease.a", true);  // the same agent's own leases are not its predecessors'
  EXPECT_EQ(holder(), "lease.a.2");
  give_back("lease.b", true);  // its successor's
  EXPECT_EQ(holder(), "none");
  v1::LockRequest not_a_lease;
  not_a_lease.set_path(path);
  ToWire(kP1, not_a_lease.mutable_owner());
  not_a_lease.set_op(v1::LockRequest::RETURN);
  v1::LockResponse resp;
  EXPECT_EQ(h.home.OnLock(not_a_lease, &resp).code(), Code::kInvalidArgument);
}

TEST(LockHomeTest, EveryNodeComputesTheSameHomeAndADeathMovesOnlyTheDeadNodesFiles) {
  const std::vector<std::string> three{"n1", "n2", "n3"}, two{"n1", "n3"};
  int moved = 0, homed_on_n2 = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string path = "d/f" + std::to_string(i);
    const std::string before = LockHome::HomeOf(path, three);
    EXPECT_EQ(before, LockHome::HomeOf(path, {"n3", "n2", "n1"}));  // order does not matter
    homed_on_n2 += before == "n2";
    if (before != LockHome::HomeOf(path, two)) {
      ++moved;
      EXPECT_EQ(before, "n2");
    }
  }
  EXPECT_EQ(moved, homed_on_n2);
  EXPECT_GT(homed_on_n2, 50);  // spread: about a third each
  EXPECT_LT(homed_on_n2, 150);
}

TEST(LockHomeTest, ConflictsNameTheHolderAndAQueuedWaitIsGrantedAtTheUnlockWithItsFence) {
  Home h;
  const std::string path = h.PathHomedHere();
  EXPECT_EQ(h.Ask(path, kQ, LockType::kWrite, {0, 10}).outcome(), v1::LockResponse::GRANTED);
  v1::LockResponse refused = h.Ask(path, kP1, LockType::kRead, {5, 6});
  ASSERT_EQ(refused.outcome(), v1::LockResponse::CONFLICT);
  EXPECT_EQ(refused.holder().key(), "p7");
  EXPECT_EQ(refused.holder().pid(), 7);
  EXPECT_EQ(h.Ask(path, kP1, LockType::kRead, {5, 6}, v1::LockRequest::TEST).outcome(), v1::LockResponse::CONFLICT);
  EXPECT_EQ(h.Ask(path, kP1, LockType::kRead, {10, 20}).outcome(), v1::LockResponse::GRANTED);
  EXPECT_EQ(h.Ask(path, kP2, LockType::kWrite, {0, 4}, v1::LockRequest::SET, true, 41).outcome(),
            v1::LockResponse::QUEUED);
  EXPECT_EQ(h.Await(path, "n1", 41, 10).outcome(), v1::LockResponse::QUEUED);  // the window ends
  // n2 unlocks, having written up to its log's 77: the wait is granted and
  // names that fence; a waiter on n2 itself would not be told its own.
  std::thread unlock([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    h.Ask(path, kQ, LockType::kUnlock, {0, LockSpan::kToEnd}, v1::LockRequest::SET, false, 0, 77);
  });
  v1::LockResponse granted = h.Await(path, "n1", 41, 5000);
  unlock.join();
  ASSERT_EQ(granted.outcome(), v1::LockResponse::GRANTED);
  ASSERT_EQ(granted.fences_size(), 1);
  EXPECT_EQ(granted.fences(0).node_id(), "n2");
  EXPECT_EQ(granted.fences(0).seq(), 77u);
  EXPECT_EQ(h.Ask(path, kQ, LockType::kRead, {0, 1}).outcome(), v1::LockResponse::CONFLICT);
  // n1's unlock leaves its own fence: n2 is told of n1's, not of its own.
  h.Ask(path, kP2, LockType::kUnlock, {0, 4}, v1::LockRequest::SET, false, 0, 90);
  v1::LockResponse second = h.Ask(path, kQ, LockType::kRead, {0, 1});
  ASSERT_EQ(second.outcome(), v1::LockResponse::GRANTED);
  ASSERT_EQ(second.fences_size(), 1);
  EXPECT_EQ(second.fences(0).node_id(), "n1");
  EXPECT_EQ(second.fences(0).seq(), 90u);
}

TEST(LockHomeTest, ADeadMembersLocksAndWaitsEndAndItsFilesMoveAway) {
  Home h;
  const std::string path = h.PathHomedHere();
  ASSERT_EQ(h.Ask(path, kQ, LockType::kWrite, {0, LockSpan::kToEnd}).outcome(), v1::LockResponse::GRANTED);
  ASSERT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}, v1::LockRequest::SET, true, 5).outcome(),
            v1::LockResponse::QUEUED);
  h.nodes = {"n1", "n3"};  // n2 declared dead
  h.home.MembersChanged();
  EXPECT_EQ(h.Await(path, "n1", 5, 10).outcome(), v1::LockResponse::GRANTED);
  EXPECT_EQ(h.home.HeldCount(), 1u);
  // A file homed on n3 now is not answered here.
  std::string elsewhere;
  for (int i = 0; elsewhere.empty(); ++i)
    if (LockHome::HomeOf("g" + std::to_string(i), h.nodes) == "n3") elsewhere = "g" + std::to_string(i);
  v1::LockResponse not_here = h.Ask(elsewhere, kP1, LockType::kRead, {0, 1});
  EXPECT_EQ(not_here.outcome(), v1::LockResponse::NOT_HOME);
  EXPECT_EQ(not_here.home(), "n3");
}

TEST(LockHomeTest, ANewHomeTakesOnlyReclaimsDuringItsGraceAndNothingWithoutAMajority) {
  Home h;
  const std::string stays = h.PathHomedHere();
  // n3 dies: the files it was home to that come here are in grace.
  std::string moved;
  for (int i = 0; moved.empty(); ++i) {
    const std::string p = "m" + std::to_string(i);
    if (LockHome::HomeOf(p, {"n1", "n2", "n3"}) == "n3" && LockHome::HomeOf(p, {"n1", "n2"}) == "n1") moved = p;
  }
  h.nodes = {"n1", "n2"};
  h.home.MembersChanged();
  EXPECT_EQ(h.Ask(moved, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::GRACE);
  v1::LockResponse reclaimed = h.Reclaim(moved, kQ, LockType::kWrite, LockSpan{0, 100});
  EXPECT_EQ(reclaimed.outcome(), v1::LockResponse::GRANTED);
  // A file that was homed here all along is not held back.
  EXPECT_EQ(h.Ask(stays, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::GRANTED);
  h.clock.Advance(LockHome::kGrace);
  v1::LockResponse after = h.Ask(moved, kP1, LockType::kWrite, {0, 1});
  EXPECT_EQ(after.outcome(), v1::LockResponse::CONFLICT);  // the reclaimed lock holds
  EXPECT_EQ(after.holder().key(), "p7");
  h.majority = false;
  EXPECT_EQ(h.Ask(moved, kP1, LockType::kWrite, {200, 201}).outcome(), v1::LockResponse::NO_QUORUM);
}

// A home that goes on as a new incarnation (it was stopped while the
// others declared it dead and granted its files' locks elsewhere) forgets
// what it kept, its own lease included, and takes only reclaims for its
// grace: the lock another node's program took meanwhile holds.
TEST(LockHomeTest, ANewIncarnationForgetsItsTablesAndTakesOnlyReclaimsDuringItsGrace) {
  Home h;
  const std::string path = h.PathHomedHere();
  const LockSpan all{0, LockSpan::kToEnd};
  ASSERT_EQ(h.Ask(path, {"n1", "lease.a.1", -1}, LockType::kWrite, all).outcome(), v1::LockResponse::GRANTED);
  ASSERT_EQ(h.Ask(path, kQ, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::CONFLICT);
  ASSERT_EQ(h.Ask(path, kQ, LockType::kWrite, {0, 1}, v1::LockRequest::SET, true, 4).outcome(),
            v1::LockResponse::QUEUED);
  h.incarnation = 2;
  // The wait queued at the old incarnation is gone with its table.
  EXPECT_EQ(h.Await(path, "n2", 4, 0).outcome(), v1::LockResponse::NOT_HOME);
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::GRACE);
  v1::LockResponse reclaimed = h.Reclaim(path, kQ, LockType::kWrite, LockSpan{0, 100});
  EXPECT_EQ(reclaimed.outcome(), v1::LockResponse::GRANTED) << "the old lease is forgotten";
  h.clock.Advance(LockHome::kGrace);
  v1::LockResponse after = h.Ask(path, kP1, LockType::kWrite, {0, 1});
  EXPECT_EQ(after.outcome(), v1::LockResponse::CONFLICT);
  EXPECT_EQ(after.holder().key(), "p7");
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {100, 101}).outcome(), v1::LockResponse::GRANTED);
}

// Alone in its cluster, a home that forgot its tables as a new incarnation
// still takes only reclaims for its grace: its own programs' locks come
// back first.
TEST(LockHomeTest, AHomeAloneInItsClusterKeepsAGraceAfterANewIncarnation) {
  Home h;
  h.nodes = {"n1"};
  h.home.MembersChanged();
  const std::string path = "f0";
  ASSERT_EQ(h.Ask(path, kP2, LockType::kWrite, {0, 10}).outcome(), v1::LockResponse::GRANTED);
  h.incarnation = 2;
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::GRACE);
  v1::LockResponse reclaimed = h.Reclaim(path, kP2, LockType::kWrite, LockSpan{0, 10});
  EXPECT_EQ(reclaimed.outcome(), v1::LockResponse::GRANTED);
  h.clock.Advance(LockHome::kGrace);
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::CONFLICT);
}

// A home cut off with a minority (the others may have declared it dead and
// granted its files' locks elsewhere) takes only reclaims for a grace once
// it sees a majority again, although its files never moved in its own view.
TEST(LockHomeTest, AHomeThatSawNoMajorityTakesOnlyReclaimsForAGraceWhenItSeesOneAgain) {
  Home h;
  const std::string path = h.PathHomedHere();
  h.nodes = {"n1"};
  h.majority = false;
  h.home.MembersChanged();
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::NO_QUORUM);
  h.clock.Advance(std::chrono::seconds(12));
  h.nodes = {"n1", "n2", "n3"};
  h.majority = true;
  h.home.MembersChanged();
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::GRACE);
  h.clock.Advance(LockHome::kGrace);
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}).outcome(), v1::LockResponse::GRANTED);
}

// A wait queued before such a spell is not granted in the grace either:
// the lock its holder keeps at the home the others chose comes back first.
TEST(LockHomeTest, AWaitQueuedBeforeASpellWithoutAMajorityWaitsForTheReclaims) {
  Home h;
  const std::string path = h.PathHomedHere();
  ASSERT_EQ(h.Ask(path, kQ, LockType::kWrite, {0, 10}).outcome(), v1::LockResponse::GRANTED);
  ASSERT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, 1}, v1::LockRequest::SET, true, 7).outcome(),
            v1::LockResponse::QUEUED);
  h.nodes = {"n1"};  // cut off: n2 and n3 declared dead here, n2's lock dropped
  h.majority = false;
  h.home.MembersChanged();
  h.clock.Advance(std::chrono::seconds(12));
  h.nodes = {"n1", "n2", "n3"};
  h.majority = true;
  h.home.MembersChanged();
  EXPECT_EQ(h.Await(path, "n1", 7, 0).outcome(), v1::LockResponse::QUEUED);
  v1::LockResponse reclaimed = h.Reclaim(path, kQ, LockType::kWrite, LockSpan{0, 10});
  EXPECT_EQ(reclaimed.outcome(), v1::LockResponse::GRANTED) << "the waiter was granted in the grace";
  h.clock.Advance(LockHome::kGrace);
  v1::LockResponse after = h.Await(path, "n1", 7, 0);
  EXPECT_EQ(after.outcome(), v1::LockResponse::QUEUED);
  EXPECT_EQ(after.holder().key(), "p7");
}

TEST(LockHomeTest, AFlockConversionThatFailsHasGivenTheOldLockUpAsTheKernelDoes) {
  Home h;
  const std::string path = h.PathHomedHere();
  auto flock = [&](const LockOwner& owner, LockType type) {
    v1::LockRequest req;
    req.set_path(path);
    req.set_flock(true);
    ToWire(owner, req.mutable_owner());
    ToWire(type, LockSpan{}, req.mutable_span());
    v1::LockResponse resp;
    EXPECT_TRUE(h.home.OnLock(req, &resp).ok());
    return resp.outcome();
  };
  EXPECT_EQ(flock(kP1, LockType::kRead), v1::LockResponse::GRANTED);
  EXPECT_EQ(flock(kP2, LockType::kRead), v1::LockResponse::GRANTED);
  EXPECT_EQ(flock(kP1, LockType::kWrite), v1::LockResponse::CONFLICT);  // p2 shares it
  EXPECT_EQ(flock(kP2, LockType::kWrite), v1::LockResponse::GRANTED);   // p1's is gone
  // flock's locks and fcntl's do not meet.
  EXPECT_EQ(h.Ask(path, kP1, LockType::kWrite, {0, LockSpan::kToEnd}).outcome(), v1::LockResponse::GRANTED);
}

// The shims' side of a lease slot (proto/state_page.h) against the agent's
// (locks/lease_slots.h): a slot names its file while installed and trusted;
// an end with an older seq leaves a newer lease of the slot alone.
TEST(LockLeaseSlotsTest, ASlotNamesItsFileUntilItEndsOrIsDistrusted) {
  auto leases = std::make_unique<LockLeases>();
  LockLeaseSlots slots(*leases);
  unsigned at = 0;
  EXPECT_EQ(LockLeaseBegin(leases.get(), 7, 42, false, &at), 0u);
  uint64_t seq = 0;
  const int slot = slots.Install(7, 42, false, &seq);
  ASSERT_GE(slot, 0);
  const uint64_t looked = LockLeaseBegin(leases.get(), 7, 42, false, &at);
  EXPECT_EQ(looked, seq);
  EXPECT_EQ(at, static_cast<unsigned>(slot));
  EXPECT_EQ(LockLeaseBegin(leases.get(), 7, 42, true, &at), 0u);   // flock's are another lease
  EXPECT_EQ(LockLeaseBegin(leases.get(), 8, 42, false, &at), 0u);  // another file system's inode
  EXPECT_TRUE(LockLeaseStill(leases.get(), slot, looked));
  slots.End(slot, seq);
  EXPECT_FALSE(LockLeaseStill(leases.get(), slot, looked));
  EXPECT_EQ(LockLeaseBegin(leases.get(), 7, 42, false, &at), 0u);
  uint64_t again = 0;
  ASSERT_EQ(slots.Install(7, 42, false, &again), slot);  // the same slot, a newer seq
  slots.End(slot, seq);                                 // a late end of the old lease
  EXPECT_EQ(LockLeaseBegin(leases.get(), 7, 42, false, &at), again);
  slots.SetTrusted(false);  // no majority: no slot is trusted, none installed
  EXPECT_EQ(LockLeaseBegin(leases.get(), 7, 42, false, &at), 0u);
  uint64_t unused = 0;
  EXPECT_EQ(slots.Install(9, 1, false, &unused), -1);
  slots.SetTrusted(true);
  EXPECT_TRUE(testing::WaitUntil([&] { return LockLeaseBegin(leases.get(), 7, 42, false, &at) == again; },
                                 std::chrono::seconds(2), "the beat again"));
}

// A file in a temp directory, with the device id the kernel's lock list
// names it by and its stat: what each look at the kernel's locks asks for.
class KernelLocksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.path() + "/f";
    { std::ofstream(path_) << "x"; }
    dev_id_ = KernelDeviceId(path_, NodeLocks::kShadowBase);
    ASSERT_FALSE(dev_id_.empty());
    ASSERT_EQ(stat(path_.c_str(), &st_), 0);
  }
  onebox::testing::TempDir dir_;
  std::string path_, dev_id_;
  struct stat st_ {};
};

// What a return reads of the kernel's locks: a POSIX lock by its process;
// a flock lock taken by a process that has exited (flock(1) on a shell's
// descriptor), by a process that still has the description; and the file
// found by its name below the directory, from either.
TEST_F(KernelLocksTest, ALockIsFoundWithItsOwnerAndAFlockLockOutlivesTheProcessThatTookIt) {
  const int fd = open(path_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const pid_t child = fork();
  if (child == 0) _exit(flock(fd, LOCK_SH) == 0 ? 0 : 1);  // the description is ours too
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  struct flock range {};
  range.l_type = F_WRLCK;
  range.l_whence = SEEK_SET;
  range.l_start = 5;
  range.l_len = 10;
  ASSERT_EQ(fcntl(fd, F_SETLK, &range), 0);

  std::vector<KernelLock> flocks = KernelLocksOn(dev_id_, st_.st_dev, st_.st_ino, true, NodeLocks::kShadowBase);
  ASSERT_EQ(flocks.size(), 1u);
  EXPECT_EQ(flocks[0].pid, getpid());
  EXPECT_EQ(flocks[0].fd, fd);
  EXPECT_FALSE(flocks[0].write);
  EXPECT_EQ(flocks[0].end, LockSpan::kToEnd);
  std::vector<KernelLock> posix = KernelLocksOn(dev_id_, st_.st_dev, st_.st_ino, false, NodeLocks::kShadowBase);
  ASSERT_EQ(posix.size(), 1u);
  EXPECT_EQ(posix[0].pid, getpid());
  EXPECT_TRUE(posix[0].write);
  EXPECT_EQ(posix[0].start, 5u);
  EXPECT_EQ(posix[0].end, 15u);
  auto files = KernelLockedFilesIn(dir_.path(), dev_id_, NodeLocks::kShadowBase);
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::pair<std::string, bool>>{{"f", false}, {"f", true}}));
  close(fd);
  EXPECT_TRUE(KernelLocksOn(dev_id_, st_.st_dev, st_.st_ino, true, NodeLocks::kShadowBase).empty());
  EXPECT_TRUE(KernelLockedFilesIn(dir_.path(), dev_id_, NodeLocks::kShadowBase).empty());
}

// A flock lock held through a descriptor hidden from the looker is not
// taken for gone, also when the process that took it holds another lock on
// the file that the looker sees. In a process of its own without
// CAP_SYS_PTRACE (as an agent may run): two descriptions of the file, a
// shared lock on each, then a child keeps the first (and makes itself
// non-dumpable) while this process closes its copy. /proc/locks names this
// process as the taker of both; it shows only the second.
TEST_F(KernelLocksTest, AFlockLockHeldThroughADescriptorHiddenFromTheLookerIsNotTakenForGone) {
  const pid_t looker = fork();
  if (looker == 0) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct caps[2]{};
    if (syscall(SYS_capget, &header, caps) != 0) _exit(100);
    caps[0].effective &= ~(1u << CAP_SYS_PTRACE);
    caps[0].permitted &= ~(1u << CAP_SYS_PTRACE);
    if (syscall(SYS_capset, &header, caps) != 0) _exit(101);
    const int first = open(path_.c_str(), O_RDWR | O_CLOEXEC), second = open(path_.c_str(), O_RDWR | O_CLOEXEC);
    int ready[2], done[2];
    if (first < 0 || second < 0 || pipe(ready) != 0 || pipe(done) != 0) _exit(102);
    if (flock(first, LOCK_SH) != 0 || flock(second, LOCK_SH) != 0) _exit(103);
    const pid_t keeper = fork();
    if (keeper == 0) {
      close(second);
      close(done[1]);
      char byte = prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? 'y' : 'n';
      (void)!write(ready[1], &byte, 1);
      (void)!read(done[0], &byte, 1);  // until the looker is done
      _exit(0);
    }
    close(done[0]);
    char byte = 0;
    if (keeper < 0 || read(ready[0], &byte, 1) != 1 || byte != 'y') _exit(104);
    close(first);
    const std::vector<KernelLock> held = KernelLocksOn(dev_id_, st_.st_dev, st_.st_ino, true, NodeLocks::kShadowBase);
    close(done[1]);
    waitpid(keeper, nullptr, 0);
    const auto hidden = std::count_if(held.begin(), held.end(), [](const KernelLock& k) { return k.fd < 0; });
    const auto mine = std::count_if(held.begin(), held.end(), [&](const KernelLock& k) { return k.fd == second; });
    _exit(static_cast<int>(held.size() * 16 + static_cast<size_t>(hidden) * 4 + static_cast<size_t>(mine)));
  }
  int status = 0;
  ASSERT_EQ(waitpid(looker, &status, 0), looker);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_LT(WEXITSTATUS(status), 100) << "the looker could not set up (" << WEXITSTATUS(status) << ")";
  EXPECT_EQ(WEXITSTATUS(status) / 16, 2) << "locks found";
  EXPECT_EQ(WEXITSTATUS(status) / 4 % 4, 1) << "of them with no descriptor to copy (hidden)";
  EXPECT_EQ(WEXITSTATUS(status) % 4, 1) << "of them through the looker's own descriptor";
}

// Flock locks held through the process's own table and by a thread with a
// descriptor table of its own (unshare(CLONE_FILES)), which the kernel
// names by the process too: each is found once in its table (a thread that
// shares the process's table is not looked at again), and the thread's
// descriptor is copied from its table.
TEST_F(KernelLocksTest, AFlockLockOfAThreadWithATableOfItsOwnIsFoundInThatTable) {
  // Two threads, one with the process's table and one with a copy of its
  // own, each waiting until the test ends; the second opens and locks the
  // file in its table.
  struct Threads {
    std::mutex mu;
    std::condition_variable cv;
    pid_t holder = 0;
    int held_fd = -1;
    bool done = false;
    std::thread sharing, own;
    void Wait() {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return done; });
    }
    ~Threads() {
      {
        std::lock_guard lock(mu);
        done = true;
      }
      cv.notify_all();
      if (sharing.joinable()) sharing.join();
      if (own.joinable()) own.join();
    }
  } threads;
  threads.sharing = std::thread([&] { threads.Wait(); });
  threads.own = std::thread([&] {
    int fd = -1;
    if (unshare(CLONE_FILES) == 0 && (fd = open(path_.c_str(), O_RDWR | O_CLOEXEC)) >= 0 && flock(fd, LOCK_SH) != 0) {
      close(fd);
      fd = -1;
    }
    {
      std::lock_guard lock(threads.mu);
      threads.holder = static_cast<pid_t>(syscall(SYS_gettid));
      threads.held_fd = fd;
    }
    threads.cv.notify_all();
    threads.Wait();
    if (fd >= 0) close(fd);
  });
  {
    std::unique_lock lock(threads.mu);
    threads.cv.wait(lock, [&] { return threads.holder != 0; });
  }
  ASSERT_GE(threads.held_fd, 0) << "the thread could not take its lock";
  // Opened after the thread made its table: only the process's has it.
  const int own = open(path_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(own, 0);
  ASSERT_EQ(flock(own, LOCK_SH), 0);

  std::vector<KernelLock> flocks = KernelLocksOn(dev_id_, st_.st_dev, st_.st_ino, true, NodeLocks::kShadowBase);
  std::sort(flocks.begin(), flocks.end(), [](const KernelLock& x, const KernelLock& y) { return x.tid < y.tid; });
  ASSERT_EQ(flocks.size(), 2u);
  EXPECT_EQ(flocks[0].pid, getpid());
  EXPECT_EQ(flocks[0].tid, 0);
  EXPECT_EQ(flocks[0].fd, own);
  EXPECT_EQ(flocks[1].pid, getpid());
  EXPECT_EQ(flocks[1].tid, threads.holder);
  EXPECT_EQ(flocks[1].fd, threads.held_fd);
  EXPECT_FALSE(flocks[1].write);
  EXPECT_TRUE(flocks[1].sharers.empty()) << "no other thread has that table";
  int err = 0;
  const int copy = CopyLockDescriptor(flocks[1], &err);
  struct stat copied {};
  EXPECT_TRUE(copy >= 0 && fstat(copy, &copied) == 0 && copied.st_ino == st_.st_ino) << strerror(err);
  if (copy >= 0) close(copy);
  EXPECT_EQ(KernelLockedFilesIn(dir_.path(), dev_id_, NodeLocks::kShadowBase),
            (std::vector<std::pair<std::string, bool>>{{"f", true}}));
  close(own);
}

// For the test below, in a forked child: a thread that unshares its table
// and takes a shared flock lock there, and threads that keep the process's
// table. Each writes {its tid, its descriptor of the file or -1} to the
// report pipe, then waits to be killed with the child.
struct ChildThreads {
  const char* path;
  int report;
  std::atomic<bool> unshared{false};
};

void* PrivateTableHolder(void* arg) {
  auto* c = static_cast<ChildThreads*>(arg);
  int fd = -1;
  if (unshare(CLONE_FILES) == 0 && (fd = open(c->path, O_RDWR)) >= 0 && flock(fd, LOCK_SH) != 0) fd = -1;
  c->unshared = true;
  const int said[2] = {static_cast<int>(syscall(SYS_gettid)), fd};
  if (write(c->report, said, sizeof said) != sizeof said) _exit(3);
  for (;;) pause();
}

void* SharedTableThread(void* arg) {
  auto* c = static_cast<ChildThreads*>(arg);
  const int said[2] = {static_cast<int>(syscall(SYS_gettid)), -1};
  if (write(c->report, said, sizeof said) != sizeof said) _exit(3);
  for (;;) pause();
}

// A process whose main thread ended (as with pthread_exit) while three threads go
// on: the first made (so listed first) has a table of its own with a flock
// lock in it, the other two share the process's, where the main thread
// took another flock lock. Each lock is found once, with the thread whose
// table has it and the threads that share that table.
TEST_F(KernelLocksTest, OnceTheMainThreadEndedEachTableOfItsThreadsIsLookedAtOnce) {
  int report[2];
  ASSERT_EQ(pipe(report), 0);
  const pid_t child = fork();
  if (child == 0) {
    static ChildThreads c;
    c.path = path_.c_str();
    c.report = report[1];
    pthread_t t;
    if (pthread_create(&t, nullptr, PrivateTableHolder, &c) != 0) _exit(3);
    while (!c.unshared) usleep(1000);
    const int own = open(path_.c_str(), O_RDWR);
    if (own < 0 || flock(own, LOCK_SH) != 0) _exit(3);
    for (int i = 0; i < 2; ++i)
      if (pthread_create(&t, nullptr, SharedTableThread, &c) != 0) _exit(3);
    const int said[2] = {0, own};
    if (write(report[1], said, sizeof said) != sizeof said) _exit(3);
    syscall(SYS_exit, 0);  // this thread only, as pthread_exit, without unwinding through the test's frames
  }
  close(report[1]);
  struct EndChild {
    pid_t pid;
    ~EndChild() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } end_child{child};
  pid_t private_tid = 0;
  int private_fd = -1, own_fd = -1;
  std::vector<pid_t> sharing;
  for (int i = 0; i < 4; ++i) {
    int said[2];
    ASSERT_EQ(read(report[0], said, sizeof said), static_cast<ssize_t>(sizeof said)) << "the child failed";
    if (said[0] == 0) own_fd = said[1];
    else if (said[1] >= 0) private_tid = said[0], private_fd = said[1];
    else sharing.push_back(said[0]);
  }
  close(report[0]);
  ASSERT_NE(private_tid, 0);
  ASSERT_EQ(sharing.size(), 2u);
  ASSERT_TRUE(onebox::testing::WaitUntil(
      [&] { return std::filesystem::is_empty(fmt::format("/proc/{}/fd", child)); }, std::chrono::seconds(5),
      "the child's main thread ended"));

  std::vector<KernelLock> flocks = KernelLocksOn(dev_id_, st_.st_dev, st_.st_ino, true, NodeLocks::kShadowBase);
  ASSERT_EQ(flocks.size(), 2u);
  const bool private_first = flocks[0].tid == private_tid;
  const KernelLock& in_private = flocks[private_first ? 0 : 1];
  const KernelLock& in_shared = flocks[private_first ? 1 : 0];
  EXPECT_EQ(in_private.tid, private_tid);
  EXPECT_EQ(in_private.fd, private_fd);
  EXPECT_TRUE(in_private.sharers.empty()) << "no other thread has that table";
  EXPECT_EQ(in_shared.fd, own_fd);
  std::vector<pid_t> shared_table{in_shared.tid};
  shared_table.insert(shared_table.end(), in_shared.sharers.begin(), in_shared.sharers.end());
  std::sort(shared_table.begin(), shared_table.end());
  std::sort(sharing.begin(), sharing.end());
  EXPECT_EQ(shared_table, sharing);
  for (const KernelLock& k : flocks) {
    int err = 0;
    const int copy = CopyLockDescriptor(k, &err);
    struct stat copied {};
    EXPECT_TRUE(copy >= 0 && fstat(copy, &copied) == 0 && copied.st_ino == st_.st_ino) << strerror(err);
    if (copy >= 0) close(copy);
  }
}

}  // namespace
}  // namespace onebox
