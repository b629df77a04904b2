// The count of stubs the shim reads (the state page's `stubs`): while it is
// 0 an open looks for no stub mark and a program reads a stub's zeros, so
// it must never be 0 while the view holds a stub, whatever put the stub
// where it is: the materializer over an empty directory, a program's move
// of a directory holding stubs, a link to a stub whose first name went.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "consistency/digest.h"
#include "tests/test_util.h"
#include "tests/unit/in_process_cluster.h"
#include "tests/unit/view_parts.h"

namespace onebox::testing {
namespace {

class StubCountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    view_ = dir_ / "view";
    std::filesystem::create_directories(view_ + "/cluster");
  }
  // A peer's file version, newer than anything here, whose content this
  // node does not hold: the materializer places it as a stub.
  Record PeersFileHeldElsewhere(const std::string& bytes) {
    v1::Inode inode;
    inode.set_type(v1::FILE_TYPE_REGULAR);
    inode.set_mode(0644);
    inode.set_uid(getuid());
    inode.set_gid(getgid());
    inode.set_size(bytes.size());
    inode.set_mtime_ns(1'700'000'000'000'000'000);
    inode.add_chunks(Sha256(bytes));
    return Record{Version{node().store->clock().Now(), node().store->node_id() + 1}, false,
                  inode.SerializeAsString()};
  }
  void PlaceStub(ViewParts& parts, const std::string& key) {
    ASSERT_TRUE(node().store->Apply(key, PeersFileHeldElsewhere("content of " + key), false, Cf::kNs).value());
    parts.materializer->Enqueue(key);
    parts.materializer->Drain();
    ASSERT_TRUE(IsStub(key)) << key;
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
// name reaches them, after hashing every file of the program's own there
// (their placement marks name the old path). Meanwhile the count holds.
TEST_F(StubCountTest, ADirectoryMovedWithAStubInItKeepsItCountedWhileTheRecorderWalksIt) {
  ViewParts parts(node(), view_);
  ASSERT_EQ(mkdir((view_ + "/cluster/d").c_str(), 0755), 0);
  {
    std::ofstream big(view_ + "/cluster/d/big", std::ios::binary);  // hashed again under the new name
    const std::string mib(1 << 20, 'x');
    for (int i = 0; i < 96; ++i) big << mib;
  }
  ASSERT_TRUE(parts.recorder->Sync().ok());
  PlaceStub(parts, "cluster/d/z");
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_EQ(parts.page.stubs.load(), 1u);
  std::atomic<bool> done = false;
  std::atomic<uint64_t> lowest = UINT64_MAX;
  std::thread watch([&] {
    while (!done) {
      uint64_t now = parts.page.stubs.load();
      if (now < lowest) lowest = now;
    }
  });
  ASSERT_EQ(rename((view_ + "/cluster/d").c_str(), (view_ + "/cluster/e").c_str()), 0);
  EXPECT_TRUE(parts.recorder->Sync().ok());
  done = true;
  watch.join();
  EXPECT_EQ(lowest.load(), 1u) << "a program's open of cluster/e/z would have read zeros";
  EXPECT_TRUE(IsStub("cluster/e/z"));
  EXPECT_EQ(parts.page.stubs.load(), 1u);
}

// `ln s l; rm s` before the recorder looks: l is a file of one name with
// content (a program's new file, recorded once idle), and s's removal takes
// s off the count. l is a stub all the same.
TEST_F(StubCountTest, ALinkToAStubWhoseFirstNameWentIsCounted) {
  ViewParts parts(node(), view_);
  PlaceStub(parts, "cluster/s");
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_EQ(parts.page.stubs.load(), 1u);
  ASSERT_EQ(link((view_ + "/cluster/s").c_str(), (view_ + "/cluster/l").c_str()), 0);
  ASSERT_EQ(unlink((view_ + "/cluster/s").c_str()), 0);
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_TRUE(IsStub("cluster/l"));
  EXPECT_EQ(parts.page.stubs.load(), 1u);
}

}  // namespace
}  // namespace onebox::testing
