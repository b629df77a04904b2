// The materializer putting a peer's file in place where the view holds
// something else: the stub it leaves is counted for the shim (the state
// page's `stubs`, without which a program's open reads no stub mark and gets
// the stub's zeros).
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "consistency/digest.h"
#include "tests/test_util.h"
#include "tests/unit/in_process_cluster.h"
#include "tests/unit/view_parts.h"

namespace onebox::testing {
namespace {

class ViewMaterializerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    view_ = dir_ / "view";
    std::filesystem::create_directories(view_ + "/cluster");
  }
  // A peer's file version of key, newer than anything here, whose content
  // this node does not hold: it is placed as a stub.
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
  bool IsStub(const std::string& key) {
    return getxattr((view_ + "/" + key).c_str(), "user.onebox.stub", nullptr, 0) >= 0;
  }
  InProcessNode& node() { return cluster_.node(0); }

  InProcessCluster cluster_{1};
  TempDir dir_;
  std::string view_;
};

TEST_F(ViewMaterializerTest, AStubThatTakesTheNameOfAnEmptyDirectoryIsCountedForTheShim) {
  ViewParts parts(node(), view_);
  ASSERT_EQ(mkdir((view_ + "/cluster/d").c_str(), 0755), 0);
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_TRUE(node().store->Get("cluster/d", Cf::kNs).ok()) << "the directory is recorded";
  // The peer removed the directory and made a file of the name; its record
  // comes alone (the directory's tombstone, older, was overwritten).
  ASSERT_TRUE(node().store->Apply("cluster/d", PeersFileHeldElsewhere("content\n"), false, Cf::kNs).value());
  parts.materializer->Enqueue("cluster/d");
  parts.materializer->Drain();
  struct stat st;
  ASSERT_EQ(lstat((view_ + "/cluster/d").c_str(), &st), 0);
  ASSERT_TRUE(S_ISREG(st.st_mode)) << "the directory gave way to the file";
  ASSERT_TRUE(IsStub("cluster/d"));
  EXPECT_EQ(parts.page.stubs.load(), 1u) << "the shim would read the stub as it is";
  ASSERT_TRUE(parts.recorder->Sync().ok());  // (which looks at the placement's events)
  EXPECT_EQ(parts.page.stubs.load(), 1u);
  // And one placed where nothing was, beside it.
  ASSERT_TRUE(node().store->Apply("cluster/e", PeersFileHeldElsewhere("other\n"), false, Cf::kNs).value());
  parts.materializer->Enqueue("cluster/e");
  parts.materializer->Drain();
  ASSERT_TRUE(IsStub("cluster/e"));
  EXPECT_EQ(parts.page.stubs.load(), 2u);
}

}  // namespace
}  // namespace onebox::testing
