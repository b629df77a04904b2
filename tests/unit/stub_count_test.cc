// The count of stubs the shim reads (the state page's `stubs`): while it is
// 0 an open looks for no stub mark and a program reads a stub's zeros, so
// it must never be 0 while the view holds a stub, whatever put the stub
// where it is: the materializer over an empty directory, a program's move
// of a directory holding stubs, a link to a stub whose first name went; nor
// after the materializer's placements that fail (a rename or unlink refused).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>

#include "consistency/digest.h"
#include "tests/test_util.h"
#include "tests/unit/in_process_cluster.h"
#include "tests/unit/view_parts.h"

namespace onebox::testing {
namespace {

using namespace std::chrono_literals;

class StubCountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    view_ = dir_ / "view";
    std::filesystem::create_directories(view_ + "/cluster");
  }
  // A peer's version of an entry, newer than anything here.
  Record PeersVersion(const v1::Inode& inode) {
    return Record{Version{node().store->clock().Now(), node().store->node_id() + 1}, false,
                  inode.SerializeAsString()};
  }
  // A peer's file version whose content this node does not hold: the
  // materializer places it as a stub.
  Record PeersFileHeldElsewhere(const std::string& bytes) {
    v1::Inode inode;
    inode.set_type(v1::FILE_TYPE_REGULAR);
    inode.set_mode(0644);
    inode.set_uid(getuid());
    inode.set_gid(getgid());
    inode.set_size(bytes.size());
    inode.set_mtime_ns(1'700'000'000'000'000'000);
    inode.add_chunks(Sha256(bytes));
    return PeersVersion(inode);
  }
  void PlaceStub(ViewParts& parts, const std::string& key) {
    ASSERT_TRUE(node().store->Apply(key, PeersFileHeldElsewhere("content of " + key), false, Cf::kNs).value());
    parts.materializer->Enqueue(key);
    parts.materializer->Drain();
    ASSERT_TRUE(IsStub(key)) << key;
  }
  // The lowest count the shim could have read from action's start until
  // 50 ms after its end (the prehasher records a new file once idle, 100 ms
  // after its last write: a count it mends came too late for the reads before).
  template <class Action>
  uint64_t LowestCountAround(ViewParts& parts, Action&& action) {
    std::atomic<bool> done = false;
    std::atomic<uint64_t> lowest = UINT64_MAX;
    std::thread watch([&] {
      while (!done) {
        uint64_t now = parts.page.stubs.load();
        if (now < lowest) lowest = now;
      }
    });
    action();
    std::this_thread::sleep_for(50ms);
    done = true;
    watch.join();
    return lowest;
  }
  bool IsStub(const std::string& key) {
    return getxattr((view_ + "/" + key).c_str(), "user.onebox.stub", nullptr, 0) >= 0;
  }
  InProcessNode& node() { return cluster_.node(0); }

  InProcessCluster cluster_{1};
  TempDir dir_;
  std::string view_;
};

TEST_F(StubCountTest, AStubThatTakesTheNameOfAnEmptyDirectoryIsCounted) {
  ViewParts parts(node(), view_);
  ASSERT_EQ(mkdir((view_ + "/cluster/d").c_str(), 0755), 0);
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_TRUE(node().store->Get("cluster/d", Cf::kNs).ok()) << "the directory is recorded";
  // The peer removed the directory and made a file of the name; its record
  // comes alone (the directory's tombstone, older, was overwritten).
  PlaceStub(parts, "cluster/d");
  struct stat st;
  ASSERT_EQ(lstat((view_ + "/cluster/d").c_str(), &st), 0);
  ASSERT_TRUE(S_ISREG(st.st_mode)) << "the directory gave way to the file";
  EXPECT_EQ(parts.page.stubs.load(), 1u);
  ASSERT_TRUE(parts.recorder->Sync().ok());  // (which looks at the placement's events)
  EXPECT_EQ(parts.page.stubs.load(), 1u);
  PlaceStub(parts, "cluster/e");  // and one where nothing was, beside it
  EXPECT_EQ(parts.page.stubs.load(), 2u);
}

// The recorder forgets the stubs under a directory's old name at its
// IN_MOVED_FROM, and counts them under the new one as its walk of the new
// name reaches them, one entry after another (the program's own files there
// hashed again: the ledger forgot them with the old name). Meanwhile the
// count holds.
TEST_F(StubCountTest, ADirectoryMovedWithAStubInItKeepsItCountedWhileTheRecorderWalksIt) {
  ViewParts parts(node(), view_);
  ASSERT_EQ(mkdir((view_ + "/cluster/d").c_str(), 0755), 0);
  for (int i = 0; i < 8; ++i)  // (hashed again, most likely some before z: the listing's order)
    std::ofstream(view_ + "/cluster/d/f" + std::to_string(i), std::ios::binary) << std::string(1 << 20, 'x');
  ASSERT_TRUE(parts.recorder->Sync().ok());
  PlaceStub(parts, "cluster/d/z");
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_EQ(parts.page.stubs.load(), 1u);
  const uint64_t lowest = LowestCountAround(parts, [&] {
    EXPECT_EQ(rename((view_ + "/cluster/d").c_str(), (view_ + "/cluster/e").c_str()), 0);
    EXPECT_TRUE(parts.recorder->Sync().ok());
  });
  EXPECT_EQ(lowest, 1u) << "a program's open of cluster/e/z would have read zeros";
  EXPECT_TRUE(IsStub("cluster/e/z"));
  EXPECT_EQ(parts.page.stubs.load(), 1u);
}

// The hold's floor, as the ledger keeps it: a stub counted during the hold
// (placed while the recorder reads a round) stays in the count through its
// old name's removal until the hold ends.
TEST_F(StubCountTest, AHoldKeepsTheMostTheCountWasDuringIt) {
  StatePage page{};
  ViewLedger ledger(*node().store, page);
  ledger.HoldStubCount();
  ASSERT_TRUE(ledger.SetStub("cluster/d/z", true));
  EXPECT_EQ(page.stubs.load(), 1u);
  ledger.Gone("cluster/d");  // a program moved d away
  EXPECT_EQ(page.stubs.load(), 1u);
  ASSERT_TRUE(ledger.SetStub("cluster/e/z", true));  // its walk of e counts the stub again
  EXPECT_EQ(page.stubs.load(), 1u);
  ledger.Gone("cluster/e");  // then e goes too, in the same round
  EXPECT_EQ(page.stubs.load(), 1u);
  ledger.ReleaseStubCount();
  EXPECT_EQ(page.stubs.load(), 0u);
}

// `ln s l; rm s` before the recorder looks: l is a file of one name with
// content (a program's new file, recorded once idle), and s's removal takes
// s off the count. l is a stub all the same.
TEST_F(StubCountTest, ALinkToAStubWhoseFirstNameWentIsCounted) {
  ViewParts parts(node(), view_);
  PlaceStub(parts, "cluster/s");
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_EQ(parts.page.stubs.load(), 1u);
  const uint64_t lowest = LowestCountAround(parts, [&] {
    {
      // (The recorder looks at l only after both: under the view's lock, which it takes for each look.)
      std::lock_guard view_lock(parts.ledger->view_mutex());
      EXPECT_EQ(link((view_ + "/cluster/s").c_str(), (view_ + "/cluster/l").c_str()), 0);
      EXPECT_EQ(unlink((view_ + "/cluster/s").c_str()), 0);
    }
    EXPECT_TRUE(parts.recorder->Sync().ok());
  });
  EXPECT_GE(lowest, 1u) << "a program's open of cluster/l would have read zeros";
  EXPECT_TRUE(IsStub("cluster/l"));
  // (Counted twice while the recorder's round holds the count: once it ends, once.)
  EXPECT_TRUE(WaitUntil([&] { return Observed(parts.page.stubs.load() == 1, parts.page.stubs.load()); }, 2s,
                        "the count settles at one"));
}

// The materializer's failures leave the count as it was: a new version
// that cannot take the name (its rename refused), a directory that cannot
// replace a stub (its unlink refused). An immutable directory refuses
// both, to root too.
class Immutable {
 public:
  explicit Immutable(std::string dir) : dir_(std::move(dir)) { ok_ = Set(FS_IMMUTABLE_FL); }
  ~Immutable() {
    if (ok_) Set(0);
  }
  bool ok() const { return ok_; }

 private:
  bool Set(int flags) {
    const int fd = open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    int now = 0;
    bool done = ioctl(fd, FS_IOC_GETFLAGS, &now) == 0 &&
                (now = (now & ~FS_IMMUTABLE_FL) | flags, ioctl(fd, FS_IOC_SETFLAGS, &now) == 0);
    close(fd);
    return done;
  }
  std::string dir_;
  bool ok_ = false;
};

// A stub at cluster/d/s, counted; then d made immutable.
class StubInAnImmutableDirectory : public StubCountTest {
 protected:
  void SetUp() override {
    StubCountTest::SetUp();
    parts_ = std::make_unique<ViewParts>(node(), view_);
    PlaceStub(*parts_, "cluster/d/s");
    ASSERT_TRUE(parts_->recorder->Sync().ok());
    ASSERT_EQ(parts_->page.stubs.load(), 1u);
    frozen_ = std::make_unique<Immutable>(view_ + "/cluster/d");
    if (!frozen_->ok()) GTEST_SKIP() << "cannot make a directory immutable here: " << strerror(errno);
  }
  void TearDown() override {
    frozen_.reset();  // (before the parts stop, and the temp dir goes)
    parts_.reset();
  }
  // The peer's newer record of cluster/d/s, handed to the materializer.
  void Materialize(const Record& newer) {
    ASSERT_TRUE(node().store->Apply("cluster/d/s", newer, false, Cf::kNs).value());
    parts_->materializer->Enqueue("cluster/d/s");
    parts_->materializer->Drain();
  }
  std::unique_ptr<ViewParts> parts_;
  std::unique_ptr<Immutable> frozen_;
};

TEST_F(StubInAnImmutableDirectory, ANewVersionThatCannotTakeTheNameLeavesTheStubCounted) {
  Materialize(PeersFileHeldElsewhere("newer"));  // a stub too: its rename into d is refused
  struct stat st;
  ASSERT_EQ(stat((view_ + "/cluster/d/s").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, std::string("content of cluster/d/s").size()) << "the older stub is still there";
  EXPECT_TRUE(IsStub("cluster/d/s"));
  EXPECT_EQ(parts_->page.stubs.load(), 1u) << "a program's open of it would read zeros";
}

TEST_F(StubInAnImmutableDirectory, ADirectoryThatCannotReplaceTheStubLeavesItCounted) {
  v1::Inode dir;  // the peer made s a directory since: its unlink of the stub is refused
  dir.set_type(v1::FILE_TYPE_DIRECTORY);
  dir.set_mode(0755);
  dir.set_uid(getuid());
  dir.set_gid(getgid());
  Materialize(PeersVersion(dir));
  EXPECT_TRUE(IsStub("cluster/d/s")) << "the stub is still there";
  EXPECT_EQ(parts_->page.stubs.load(), 1u) << "a program's open of it would read zeros";
}

}  // namespace
}  // namespace onebox::testing
