// The symlink-free view (nodeagent/view/symlink_guard.h): the count on the state
// page is raised before an announced symlink exists, is held while one does,
// and comes down to 0 only after the recorder proved the view free of them;
// an intent of a process that died goes with it.
#include "nodeagent/view/symlink_guard.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>

#include "nodeagent/view/view_recorder.h"
#include "tests/test_util.h"

namespace onebox {
namespace {

using onebox::testing::Observed;
using onebox::testing::TempDir;
using onebox::testing::WaitUntil;
using namespace std::chrono_literals;

// A page as the agent's is (StatePageOwner maps a memfd; plain memory will do here).
struct Page {
  Page() { page.magic = StatePage::kMagic; }
  StatePage page{};
};

bool FastPathOpen(const StatePage& page) {
  uint64_t epoch;
  return SymlinkFreeBegin(&page, &epoch) && SymlinkFreeStill(&page, epoch);
}

TEST(SymlinkGuard, RaisedBeforeTheSymlinkLoweredOnlyByProof) {
  Page p;
  SymlinkGuard guard(p.page, "");
  guard.PageMapped(1);  // a shim holds the page
  EXPECT_EQ(p.page.symlink_guard, StatePage::kSymlinkGuard);
  EXPECT_EQ(p.page.symlinks.load(), 1u) << "unproven at start";
  EXPECT_FALSE(FastPathOpen(p.page));

  SymlinkGuard::Plan plan = guard.PlanProof();
  ASSERT_TRUE(plan.walk);
  EXPECT_TRUE(guard.CommitProof(plan.raises, 0s));
  EXPECT_EQ(p.page.symlinks.load(), 0u);
  EXPECT_TRUE(FastPathOpen(p.page));

  uint64_t epoch;
  ASSERT_TRUE(SymlinkFreeBegin(&p.page, &epoch));
  Result<uint64_t> token = guard.Announce(getpid());
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_NE(p.page.symlinks.load(), 0u) << "raised when Announce returns";
  EXPECT_FALSE(SymlinkFreeStill(&p.page, epoch)) << "a lookup around the announce is thrown away";
  EXPECT_FALSE(guard.Release(*token, getpid() + 1)) << "only the announcer releases";
  EXPECT_FALSE(guard.PlanProof().walk) << "no proof while an intent is out";
  EXPECT_TRUE(guard.Release(*token, getpid()));
  EXPECT_NE(p.page.symlinks.load(), 0u) << "released, but not proven";

  // A raise between the start of a proof and its commit voids it.
  plan = guard.PlanProof();
  ASSERT_TRUE(plan.walk);
  guard.SetKnown(1);
  guard.SetKnown(0);
  EXPECT_FALSE(guard.CommitProof(plan.raises, 0s));
  EXPECT_NE(p.page.symlinks.load(), 0u);
}

TEST(SymlinkGuard, AnIntentEndsWithItsProcess) {
  Page p;
  SymlinkGuard guard(p.page, "");
  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  ASSERT_GT(child, 0);
  Result<uint64_t> token = guard.Announce(child);
  ASSERT_TRUE(token.ok()) << token.status().ToString();
  EXPECT_EQ(guard.intents(), 1u);
  EXPECT_FALSE(guard.PlanProof().walk);
  EXPECT_EQ(guard.intents(), 1u) << "alive: still held";
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_TRUE(WaitUntil([&] { return guard.PlanProof().walk; }, 5s, "the next proof walks the view", 1ms));
  EXPECT_EQ(guard.intents(), 0u);
  // A process that is gone already gets no intent (it will make nothing).
  EXPECT_FALSE(guard.Announce(child).ok());
}

TEST(SymlinkGuard, StaleHeartbeatOrShutdownCloseTheFastPath) {
  Page p;
  {
    SymlinkGuard guard(p.page, "");
    guard.PageMapped(1);
    SymlinkGuard::Plan plan = guard.PlanProof();
    ASSERT_TRUE(guard.CommitProof(plan.raises, 0s));
    EXPECT_TRUE(FastPathOpen(p.page));
    // A frozen page (its agent died): trusted for kSymlinkTrustNs at most.
    // The guard's own heartbeat (every 10 ms while a shim holds the page)
    // may refresh the stale one in between: then the check says nothing.
    bool checked = false;
    for (int attempt = 0; attempt < 100 && !checked; ++attempt) {
      const int64_t stale = CoarseMonotonicNs() - kSymlinkTrustNs - 20'000'000;
      p.page.symlink_heartbeat_ns.store(stale);
      uint64_t epoch;
      ASSERT_TRUE(SymlinkFreeBegin(&p.page, &epoch));
      bool still = SymlinkFreeStill(&p.page, epoch);
      if (p.page.symlink_heartbeat_ns.load() != stale) continue;
      EXPECT_FALSE(still);
      checked = true;
    }
    ASSERT_TRUE(checked) << "the heartbeat beat every stale mark made";
    EXPECT_TRUE(WaitUntil([&] { return FastPathOpen(p.page); }, 5s, "the heartbeat comes back", 1ms));
  }
  EXPECT_FALSE(FastPathOpen(p.page)) << "a clean shutdown closes it for good";
  EXPECT_NE(p.page.symlinks.load(), 0u);
  Page old;
  old.page.symlink_guard = 0;  // an older agent's page: zeros there
  EXPECT_FALSE(FastPathOpen(old.page));
}

TEST(SymlinkGuard, TheHeartbeatRestsWithTheCountUpWhileNoShimHoldsThePage) {
  Page p;
  SymlinkGuard guard(p.page, "");
  SymlinkGuard::Plan plan = guard.PlanProof();
  ASSERT_TRUE(guard.CommitProof(plan.raises, 0s));
  EXPECT_NE(p.page.symlinks.load(), 0u) << "proven, but nobody connected: the count stays up";
  int64_t beat = p.page.symlink_heartbeat_ns.load();
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(p.page.symlink_heartbeat_ns.load(), beat) << "no heartbeat for nobody";

  guard.PageMapped(7);
  EXPECT_TRUE(FastPathOpen(p.page)) << "open when the shim gets the page, not a beat later";
  guard.PageMapped(8);
  guard.ConnectionClosed(7);
  EXPECT_TRUE(WaitUntil([&] { return p.page.symlink_heartbeat_ns.load() > beat + 20'000'000; }, 5s,
                        "the heartbeat runs while connection 8 is open", 1ms));
  EXPECT_TRUE(FastPathOpen(p.page));
  guard.ConnectionClosed(8);
  EXPECT_NE(p.page.symlinks.load(), 0u) << "the count goes up when the last connection closes";
  EXPECT_FALSE(FastPathOpen(p.page)) << "a forked child that kept the page takes the slow path";
  guard.PageMapped(9);
  EXPECT_TRUE(FastPathOpen(p.page)) << "and the proof still stands for the next shim";
}

class GuardedView : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_ / "view/cluster");
    Result<std::unique_ptr<Store>> s = Store::Open({.path = dir_ / "store", .node_id = 1});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    guard_ = std::make_unique<SymlinkGuard>(page_.page, dir_ / "view");
    guard_->PageMapped(1);  // a shim holds the page
    ledger_ = std::make_unique<ViewLedger>(*store_, page_.page);
    Result<std::unique_ptr<ViewRecorder>> r = ViewRecorder::Start(dir_ / "view", *store_, *ledger_, guard_.get());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    recorder_ = std::move(r).value();
  }
  void TearDown() override {
    if (recorder_) recorder_->Stop();
  }
  uint64_t Count() const { return page_.page.symlinks.load(); }
  ::testing::AssertionResult Proven() {
    return WaitUntil([&] { return Observed(Count() == 0, Count()); }, 5s, "the view is proven free of symlinks", 1ms);
  }
  std::string V(const std::string& p) const { return dir_ / ("view/cluster/" + p); }
  // As the shim does it: announce, make, say made.
  void Symlink(const std::string& target, const std::string& p) {
    Result<uint64_t> token = guard_->Announce(getpid());
    ASSERT_TRUE(token.ok());
    ASSERT_NE(Count(), 0u);
    ASSERT_EQ(symlink(target.c_str(), V(p).c_str()), 0) << strerror(errno);
    ASSERT_TRUE(guard_->Release(*token, getpid()));
  }

  TempDir dir_;
  Page page_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<SymlinkGuard> guard_;
  std::unique_ptr<ViewLedger> ledger_;
  std::unique_ptr<ViewRecorder> recorder_;
};

TEST_F(GuardedView, ProvenFreeHeldWhileOneLivesFreeAgainAfter) {
  ASSERT_TRUE(Proven()) << "an empty view is proven free";
  Symlink("/etc", "abs");
  std::this_thread::sleep_for(100ms);
  EXPECT_NE(Count(), 0u) << "a symlink lives";
  ASSERT_EQ(unlink(V("abs").c_str()), 0);
  EXPECT_TRUE(Proven());

  // One in a directory that moves about, and is then removed with it.
  std::filesystem::create_directories(V("a/b"));
  Symlink("../x", "a/b/l");
  for (const char* to : {"c", "d", "a"}) {
    std::string from = std::filesystem::exists(V("a")) ? "a" : std::filesystem::exists(V("c")) ? "c" : "d";
    ASSERT_EQ(rename(V(from).c_str(), V(to).c_str()), 0);
    for (int i = 0; i < 30; ++i) {
      ASSERT_NE(Count(), 0u) << "after moving " << from << " to " << to;
      std::this_thread::sleep_for(1ms);
    }
  }
  std::filesystem::remove_all(V("a"));
  EXPECT_TRUE(Proven());

  // A hard link of a symlink outlives the original.
  Symlink("in", "orig");
  ASSERT_EQ(link(V("orig").c_str(), V("copy").c_str()), 0);
  ASSERT_EQ(unlink(V("orig").c_str()), 0);
  std::this_thread::sleep_for(100ms);
  EXPECT_NE(Count(), 0u);
  ASSERT_EQ(unlink(V("copy").c_str()), 0);
  EXPECT_TRUE(Proven());
}

// A shim between its announcement and its symlink holds a read lock on the
// view's lock file: no proof while it does, whichever agent it announced to.
TEST_F(GuardedView, NoProofWhileAShimHoldsTheLock) {
  ASSERT_TRUE(Proven());
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  if (child == 0) {
    int fd = open((dir_ / ("view/" + std::string(kSymlinkLockFile))).c_str(), O_RDONLY | O_CLOEXEC);
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    if (fd < 0 || fcntl(fd, F_OFD_SETLKW, &fl) != 0) _exit(1);
    [[maybe_unused]] ssize_t n = write(ready[1], "x", 1);
    pause();
    _exit(0);
  }
  ASSERT_GT(child, 0);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);
  close(ready[1]);
  Symlink("/etc", "locked");
  ASSERT_EQ(unlink(V("locked").c_str()), 0);
  for (int i = 0; i < 300; ++i) {
    ASSERT_NE(Count(), 0u) << "proven while the lock was held";
    std::this_thread::sleep_for(1ms);
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_TRUE(Proven());
}

TEST_F(GuardedView, ANativeSymlinkIsCountedOnceRecorded) {
  ASSERT_TRUE(Proven());
  // Made without announcing (a process without the shim): the documented gap,
  // closed once the recorder sees it.
  ASSERT_EQ(symlink("/etc", V("native").c_str()), 0);
  EXPECT_TRUE(WaitUntil([&] { return Count() != 0; }, 5s, "the count goes up", 1ms));
  std::this_thread::sleep_for(50ms);
  EXPECT_NE(Count(), 0u);
  ASSERT_EQ(unlink(V("native").c_str()), 0);
  EXPECT_TRUE(Proven());
}

// symlink() in the shim read-locks the view's lock file; a proof write-locks
// it only at its end, for a moment, never for its whole walk.
TEST_F(GuardedView, AProofHoldsTheLockOnlyAtItsEnd) {
  // A view that takes a while to walk, made while no recorder follows it
  // (the events of 20k mkdirs would overflow inotify's queue).
  recorder_->Stop();
  recorder_.reset();
  for (int i = 0; i < 100; ++i)
    for (int j = 0; j < 200; ++j) std::filesystem::create_directories(V(fmt::format("w/{}/{}", i, j)));
  Result<std::unique_ptr<ViewRecorder>> r = ViewRecorder::Start(dir_ / "view", *store_, *ledger_, guard_.get());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  recorder_ = std::move(r).value();
  ASSERT_TRUE(
      WaitUntil([&] { return Observed(Count() == 0, Count()); }, 60s, "the view is proven free of symlinks", 1ms));

  Symlink("x", "s");
  ASSERT_TRUE(recorder_->Sync().ok());
  ASSERT_EQ(unlink(V("s").c_str()), 0);
  auto start = std::chrono::steady_clock::now();
  int fd = open((dir_ / ("view/" + std::string(kSymlinkLockFile))).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  // As a shim would, again and again until the proof is done: how long was the lock out of reach at once?
  std::chrono::steady_clock::duration longest{}, blocked_since{};
  bool blocked = false;
  while (Count() != 0 && std::chrono::steady_clock::now() - start < 60s) {
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    auto now = std::chrono::steady_clock::now().time_since_epoch();
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0) {
      fl.l_type = F_UNLCK;
      fcntl(fd, F_OFD_SETLK, &fl);
      blocked = false;
    } else if (!blocked) {
      blocked = true;
      blocked_since = now;
    } else {
      longest = std::max(longest, now - blocked_since);
    }
    std::this_thread::sleep_for(200us);
  }
  close(fd);
  auto took = std::chrono::steady_clock::now() - start;
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  ASSERT_EQ(Count(), 0u) << "not proven within a minute";
  EXPECT_GT(took, 60ms) << "the proof was too quick to tell";
  EXPECT_LT(longest, 20ms) << "symlink() would have waited " << ms(longest) << " ms for a proof of " << ms(took)
                           << " ms";
}

// A symlink made without the shim is counted only once the recorder handles
// its event. While the recorder is behind (here: hashing a large file), the
// count is up, so the fast path does not trust a view nobody is following.
TEST_F(GuardedView, NotTrustedWhileTheRecorderIsBehind) {
  ASSERT_TRUE(Proven());
  int fd = open(V("big").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, off_t{256} << 20), 0);  // sparse: 256 MiB to hash, nothing on disk
  close(fd);                                     // IN_CLOSE_WRITE: the recorder hashes it
  std::this_thread::sleep_for(30ms);
  ASSERT_EQ(symlink("/etc", V("native").c_str()), 0);
  auto made = std::chrono::steady_clock::now();
  ASSERT_TRUE(WaitUntil([&] { return !FastPathOpen(page_.page); }, 10s, "the fast path closes", 1ms));
  auto took = std::chrono::steady_clock::now() - made;
  Result<Record> big = store_->Get("cluster/big", Cf::kNs);
  v1::Inode inode;
  EXPECT_FALSE(big.ok() && inode.ParseFromString(big->value) && inode.size() == uint64_t{256} << 20)
      << "the recorder was done with the file already: the test proves nothing";
  EXPECT_LT(took, 60ms) << "a fast stat could follow the native symlink for "
                        << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  // Caught up: the symlink is counted, and the count stays up.
  ASSERT_TRUE(recorder_->Sync().ok());
  EXPECT_NE(Count(), 0u);
  ASSERT_EQ(unlink(V("native").c_str()), 0);
  EXPECT_TRUE(Proven());
}

// A mount in the view after a proof (here: a directory holding a symlink out
// of the view, bound onto an empty directory of it) makes the view hold a
// symlink that no event names: the change of the mount table raises the
// count, and it stays up while the mount is there. What the recorder saw
// through the mount goes with it.
TEST_F(GuardedView, AMountAfterTheProofRaisesTheCount) {
  std::string outside = dir_ / "outside";
  std::filesystem::create_directories(outside);
  ASSERT_EQ(symlink("/etc", (outside + "/esc").c_str()), 0);
  std::filesystem::create_directories(V("p/m"));
  ASSERT_TRUE(recorder_->Sync().ok());
  ASSERT_TRUE(Proven());
  if (mount(outside.c_str(), V("p/m").c_str(), nullptr, MS_BIND, nullptr) != 0)
    GTEST_SKIP() << "cannot bind-mount here: " << strerror(errno);
  struct Unmount {
    std::string before, after;
    ~Unmount() {
      umount2(before.c_str(), MNT_DETACH);
      umount2(after.c_str(), MNT_DETACH);
    }
  } unmount{V("p/m"), V("q/m")};
  EXPECT_TRUE(WaitUntil([&] { return Count() != 0; }, 2s, "a symlink out of the view is noticed", 1ms));
  for (int i = 0; i < 100; ++i) {
    ASSERT_NE(Count(), 0u) << "proven with a mount point in the view";
    std::this_thread::sleep_for(5ms);
  }
  // Moved, the directory is listed anew, the mount's content with it: the
  // recorder counts esc.
  ASSERT_EQ(rename(V("p").c_str(), V("q").c_str()), 0) << strerror(errno);
  ASSERT_TRUE(recorder_->Sync().ok());
  ASSERT_EQ(umount2(V("q/m").c_str(), MNT_DETACH), 0);
  EXPECT_TRUE(Proven());
}

// While the materializer places peers' files the recorder rests away from
// the inotify queue (ViewRecorder::kRestWhilePlacingNs): the mount table's
// changes must still reach it, not only once placements stop.
TEST_F(GuardedView, AMountWhileFilesArePlacedRaisesTheCount) {
  std::string outside = dir_ / "outside";
  std::filesystem::create_directories(outside);
  ASSERT_EQ(symlink("/etc", (outside + "/esc").c_str()), 0);
  std::filesystem::create_directories(V("p/m"));
  std::filesystem::create_directories(dir_ / "staging");
  ASSERT_TRUE(recorder_->Sync().ok());
  ASSERT_TRUE(Proven());
  std::jthread materializer([&](std::stop_token stop) {  // a file placed every 2 ms, as a steady stream's are
    for (int n = 0; !stop.stop_requested(); ++n) {
      const std::string staged = dir_ / fmt::format("staging/f{}", n), name = fmt::format("p/f{}", n);
      std::ofstream(staged) << n;
      struct stat st {};
      if (rename(staged.c_str(), V(name).c_str()) == 0 && stat(V(name).c_str(), &st) == 0)
        ledger_->Placed("cluster/" + name, st, Version{});
      std::this_thread::sleep_for(2ms);
    }
  });  // (stopped and joined when the test ends, however it ends)
  std::this_thread::sleep_for(20ms);  // resting by now
  ASSERT_EQ(Count(), 0u) << "proven while files are placed";
  if (mount(outside.c_str(), V("p/m").c_str(), nullptr, MS_BIND, nullptr) != 0)
    GTEST_SKIP() << "cannot bind-mount here: " << strerror(errno);
  struct Unmount {
    std::string at;
    ~Unmount() { umount2(at.c_str(), MNT_DETACH); }
  } unmount{V("p/m")};
  EXPECT_TRUE(WaitUntil([&] { return Count() != 0; }, 2s, "a mount made while files are placed is noticed", 1ms));
}

// What a walk cannot pass (here: directories nested deeper than it goes)
// keeps the count up, and is not walked into again and again: the next walk
// waits for an event that may have removed it (or minutes).
TEST_F(GuardedView, AnObstacleIsWalkedAgainOnlyOnceItMayBeGone) {
  ASSERT_TRUE(Proven());
  // Counted from here: the recorder may meet the chain (and walk into it)
  // while it is being made, before the symlink below.
  uint64_t before = recorder_->walks();
  std::vector<int> chain{open(V("").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  for (int i = 0; i < 520; ++i) {
    ASSERT_EQ(mkdirat(chain.back(), "d", 0755), 0) << strerror(errno);
    chain.push_back(openat(chain.back(), "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_GE(chain.back(), 0);
  }
  // The recorder takes seconds over 520 levels (each new directory is watched
  // and recorded with all below it) on a slow machine, more than one Sync's
  // 10 s while this VM's disk is slow: the walk below is timed from when it
  // has caught up.
  ASSERT_TRUE(WaitUntil([&] { return recorder_->Sync().ok(); }, 60s, "the recorder caught up with the chain"));
  Symlink("x", "s");  // the count up, and a walk once it goes
  ASSERT_EQ(unlink(V("s").c_str()), 0);
  ASSERT_TRUE(WaitUntil([&] { return recorder_->walks() > before; }, 5s, "the recorder walks the view", 1ms))
      << "count " << Count();
  std::this_thread::sleep_for(100ms);
  uint64_t walks = recorder_->walks(), mount_changes = recorder_->mount_changes();
  std::this_thread::sleep_for(3s);
  // A change of the mount table may have removed the obstacle: one more walk
  // each (other tests running beside this one add and remove network
  // namespaces, whose `ip netns add` bind-mounts under /run/netns).
  EXPECT_LE(recorder_->walks(), walks + 1 + (recorder_->mount_changes() - mount_changes))
      << "walked into the same obstacle again and again";
  EXPECT_NE(Count(), 0u);
  // Events below it change nothing; removing it is worth a walk.
  for (int i = 520; i > 500; --i) {
    ASSERT_EQ(unlinkat(chain[i - 1], "d", AT_REMOVEDIR), 0) << strerror(errno);
    close(chain[i]);
  }
  EXPECT_TRUE(Proven());
  for (int i = 0; i <= 500; ++i) close(chain[i]);
}

}  // namespace
}  // namespace onebox
