// The agent records its view into the namespace: whatever is written into the
// view (as programs under the shim will write it) appears in Namespace.Stat and
// Namespace.List with its content hashed into chunks, deletes and renames
// included, and changes made while the agent was down are caught at start.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "onebox/v1/namespace.grpc.pb.h"
#include "consistency/digest.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

namespace fs = std::filesystem;


class NamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    agent_ = std::make_unique<AgentProcess>("ns", dir_ / "data", dir_ / "agent.sock");
    ASSERT_TRUE(agent_->Start());
    Hello();
  }
  void Hello() {
    v1::ShimRequest req;
    req.set_id(1);
    req.mutable_hello()->set_root("/cluster");
    req.mutable_hello()->set_program("namespace_test");
    v1::ShimResponse resp;
    std::string err;
    ASSERT_TRUE(ShimCall(agent_->socket(), req, &resp, &err)) << err;
    ASSERT_EQ(resp.err(), 0) << resp.message();
    view_ = resp.hello().view_root();
    ASSERT_TRUE(fs::is_directory(view_ + "/cluster"));
  }
  v1::StatResponse Stat(const std::string& path) {
    v1::StatRequest q;
    q.set_path(path);
    v1::StatResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    EXPECT_TRUE(v1::Namespace::NewStub(agent_->channel())->Stat(&ctx, q, &r).ok());
    return r;
  }
  // Waits (up to 5 s) until path is recorded as want says.
  ::testing::AssertionResult WaitFor(const std::string& path, const std::function<bool(const v1::StatResponse&)>& want) {
    return WaitUntil(
        [&] {
          v1::StatResponse r = Stat(path);
          return ::testing::AssertionResult(want(r)) << r.ShortDebugString();
        },
        std::chrono::seconds(5), path + " is recorded as expected", std::chrono::milliseconds(10));
  }
  std::vector<std::string> List(const std::string& path) {
    v1::ListRequest q;
    q.set_path(path);
    v1::ListResponse r;
    grpc::ClientContext ctx;
    EXPECT_TRUE(v1::Namespace::NewStub(agent_->channel())->List(&ctx, q, &r).ok());
    std::vector<std::string> names;
    for (auto& e : r.entries()) names.push_back(e.name());
    return names;
  }
  static auto Absent() {
    return [](const v1::StatResponse& r) { return !r.found(); };
  }
  static auto Size(uint64_t n) {
    return [n](const v1::StatResponse& r) { return r.found() && r.inode().size() == n; };
  }

  TempDir dir_;
  std::unique_ptr<AgentProcess> agent_;
  std::string view_;
};

TEST_F(NamespaceTest, RecordsFilesDirsAndSymlinksWithTheirContent) {
  fs::create_directories(view_ + "/cluster/src/deep");
  std::string big(2 * 1024 * 1024 + 123, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 2654435761u >> 13);
  std::ofstream(view_ + "/cluster/src/big.bin", std::ios::binary) << big;
  std::ofstream(view_ + "/cluster/src/deep/note.txt") << "hello\n";
  fs::create_symlink("deep/note.txt", view_ + "/cluster/src/link");
  chmod((view_ + "/cluster/src/deep/note.txt").c_str(), 0640);

  ASSERT_TRUE(WaitFor("/cluster/src/big.bin", Size(big.size())));
  v1::StatResponse st = Stat("/cluster/src/big.bin");
  EXPECT_EQ(st.inode().type(), v1::FILE_TYPE_REGULAR);
  EXPECT_EQ(st.inode().chunks_size(), 0) << "the API does not tell content digests";
  v1::Inode recorded = RecordedInode(*agent_, "/cluster/src/big.bin");  // as peers see it
  ASSERT_EQ(recorded.chunks_size(), 3);  // 1 MiB + 1 MiB + the rest
  EXPECT_EQ(recorded.chunks(0), Sha256(std::string_view(big).substr(0, 1 << 20)));
  EXPECT_EQ(recorded.chunks(2), Sha256(std::string_view(big).substr(2 << 20)));
  EXPECT_EQ(st.version().node_id().size(), 16u);

  ASSERT_TRUE(WaitFor("/cluster/src/deep/note.txt",
                      [](const v1::StatResponse& r) { return r.found() && r.inode().mode() == 0640; }));
  EXPECT_EQ(RecordedInode(*agent_, "/cluster/src/deep/note.txt").chunks(0), Sha256("hello\n"));
  v1::StatResponse link = Stat("/cluster/src/link");
  EXPECT_EQ(link.inode().type(), v1::FILE_TYPE_SYMLINK);
  EXPECT_EQ(link.inode().symlink_target(), "deep/note.txt");
  EXPECT_EQ(Stat("/cluster/src/deep").inode().type(), v1::FILE_TYPE_DIRECTORY);
  EXPECT_EQ(List("/cluster/src"), (std::vector<std::string>{"big.bin", "deep", "link"}));
  EXPECT_EQ(Stat("//cluster/./src/../src/link").inode().symlink_target(), "deep/note.txt");  // normalized

  // A rewrite records new content under a newer version.
  std::string old_version = st.version().DebugString();
  std::ofstream(view_ + "/cluster/src/big.bin", std::ios::binary | std::ios::trunc) << "short";
  ASSERT_TRUE(WaitFor("/cluster/src/big.bin", Size(5)));
  EXPECT_EQ(RecordedInode(*agent_, "/cluster/src/big.bin").chunks(0), Sha256("short"));
  EXPECT_GT(Stat("/cluster/src/big.bin").version().hlc(), st.version().hlc());
}

TEST_F(NamespaceTest, RecordsRenamesAndRemovals) {
  fs::create_directories(view_ + "/cluster/a/b");
  std::ofstream(view_ + "/cluster/a/b/f") << "x";
  ASSERT_TRUE(WaitFor("/cluster/a/b/f", Size(1)));
  fs::rename(view_ + "/cluster/a", view_ + "/cluster/moved");
  ASSERT_TRUE(WaitFor("/cluster/moved/b/f", Size(1)));
  ASSERT_TRUE(WaitFor("/cluster/a/b/f", Absent()));
  EXPECT_FALSE(Stat("/cluster/a").found());
  // The moved directory is still watched under its new name.
  std::ofstream(view_ + "/cluster/moved/b/g") << "yy";
  ASSERT_TRUE(WaitFor("/cluster/moved/b/g", Size(2)));
  fs::remove_all(view_ + "/cluster/moved");
  ASSERT_TRUE(WaitFor("/cluster/moved", Absent()));
  EXPECT_FALSE(Stat("/cluster/moved/b/g").found());
  EXPECT_TRUE(List("/cluster").empty());
}

// A file made empty is recorded at its close, or once a moment has passed
// with no close (a program holds it open), not at its creation too; one
// removed within that moment (git's temporary names, which it links to
// their final names and removes) is never recorded, nor is its removal.
TEST_F(NamespaceTest, AFileMadeEmptyAndGoneAtOnceIsNeverRecorded) {
  fs::create_directories(view_ + "/cluster/t");
  ASSERT_TRUE(WaitFor("/cluster/t", [](const v1::StatResponse& r) { return r.found(); }));
  auto ever_recorded = [&](const std::string& path) {  // live or a tombstone
    v1::ReadRecordResponse r;
    EXPECT_TRUE(ReadNsRecord(*agent_, path, &r).ok());
    return r.found();
  };
  for (int i = 0; i < 20; ++i) {
    const std::string tmp = view_ + "/cluster/t/tmp" + std::to_string(i);
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // for the recorder to see it; within the 50 ms
    ASSERT_EQ(unlink(tmp.c_str()), 0);
    close(fd);
  }
  // Held open and empty, its mode changed within the moment: recorded all
  // the same after it, with its new mode.
  const std::string held = view_ + "/cluster/t/held";
  int fd = open(held.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fchmod(fd, 0600), 0);
  ASSERT_TRUE(WaitFor("/cluster/t/held", [](const v1::StatResponse& r) {
    return r.found() && r.inode().size() == 0 && r.inode().mode() == 0600;
  }));
  // Renamed within the moment: recorded by its new name only.
  const std::string made = view_ + "/cluster/t/made", renamed = view_ + "/cluster/t/renamed";
  int other = open(made.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(other, 0);
  ASSERT_EQ(rename(made.c_str(), renamed.c_str()), 0);
  close(other);
  ASSERT_TRUE(WaitFor("/cluster/t/renamed", Size(0)));
  EXPECT_FALSE(ever_recorded("/cluster/t/made"));
  // Written and closed: recorded with what it holds.
  // Then written big, slowly: its chunks are still hashed while it grows,
  // and its close takes them.
  auto hashed_ahead = [&] { return AgentStatus(*agent_).chunks_hashed_ahead(); };
  const uint64_t ahead_before = hashed_ahead();
  const std::string mib(1 << 20, 'm');
  for (int i = 0; i < 8; ++i) {
    ASSERT_EQ(write(fd, mib.data(), mib.size()), static_cast<ssize_t>(mib.size()));
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
  }
  close(fd);
  ASSERT_TRUE(WaitFor("/cluster/t/held", Size(8u << 20)));
  EXPECT_GE(hashed_ahead() - ahead_before, 4u) << "the held file was no longer followed after its record";
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(ever_recorded("/cluster/t/tmp" + std::to_string(i))) << i;
  // Written, closed, linked to its name, the temporary name removed (git's
  // objects): no close comes for the name; it is recorded once it has
  // stayed unchanged for 100 ms (0.5 s before, which held a commit's .git
  // that long from the peers).
  std::chrono::steady_clock::time_point last;
  for (int i = 0; i < 10; ++i) {
    const std::string tmp = view_ + "/cluster/t/tmp_obj" + std::to_string(i);
    const std::string obj = view_ + "/cluster/t/obj" + std::to_string(i);
    int w = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    ASSERT_GE(w, 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // git compresses the object meanwhile
    ASSERT_EQ(write(w, "object", 6), 6);
    close(w);
    ASSERT_EQ(link(tmp.c_str(), obj.c_str()), 0);
    ASSERT_EQ(unlink(tmp.c_str()), 0);
    last = std::chrono::steady_clock::now();
  }
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(WaitFor("/cluster/t/obj" + std::to_string(i), Size(6)));
  EXPECT_LT(std::chrono::steady_clock::now() - last, std::chrono::milliseconds(450))
      << "the last object was recorded long after it was idle";
}

TEST_F(NamespaceTest, CatchesUpWithChangesMadeWhileDown) {
  std::ofstream(view_ + "/cluster/kept") << "1";
  std::ofstream(view_ + "/cluster/removed") << "2";
  ASSERT_TRUE(WaitFor("/cluster/removed", Size(1)));
  ASSERT_TRUE(WaitFor("/cluster/kept", Size(1)));
  ASSERT_EQ(agent_->Stop(SIGTERM), 0);
  fs::remove(view_ + "/cluster/removed");
  std::ofstream(view_ + "/cluster/new") << "333";
  std::ofstream(view_ + "/cluster/kept", std::ios::app) << "more";
  ASSERT_TRUE(agent_->Start());
  EXPECT_FALSE(Stat("/cluster/removed").found());
  EXPECT_EQ(Stat("/cluster/new").inode().size(), 3u);
  EXPECT_EQ(RecordedInode(*agent_, "/cluster/kept").chunks(0), Sha256("1more"));
}

TEST_F(NamespaceTest, HelloNeverCreatesThroughASymlink) {
  // Any local user may say Hello with any root; the agent may run as root.
  fs::create_directories(dir_ / "outside");
  fs::create_symlink(dir_ / "outside", view_ + "/cluster/evil");
  v1::ShimRequest req;
  req.mutable_hello()->set_root("/cluster/evil/made");
  v1::ShimResponse resp;
  std::string err;
  ASSERT_TRUE(ShimCall(agent_->socket(), req, &resp, &err)) << err;
  EXPECT_NE(resp.err(), 0);
  EXPECT_FALSE(fs::exists(dir_ / "outside/made")) << "the agent created a directory outside its view";
}

TEST_F(NamespaceTest, HelloRefusesABadRoot) {
  // The agent's own entries in the view root, however the path is written,
  // are no root: the staging directory stays the agent's alone (0700).
  for (const char* bad : {"/", "relative", "", "/.onebox-staging", "//.onebox-staging", "/x/../.onebox-staging",
                          "/./.onebox-view/x"}) {
    v1::ShimRequest req;
    req.mutable_hello()->set_root(bad);
    v1::ShimResponse resp;
    std::string err;
    ASSERT_TRUE(ShimCall(agent_->socket(), req, &resp, &err)) << err;
    EXPECT_EQ(resp.err(), EINVAL) << bad;
    EXPECT_NE(resp.message().find("must be an absolute path"), std::string::npos);
  }
  struct stat st;
  ASSERT_EQ(stat((view_ + "/.onebox-staging").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
}

}  // namespace
}  // namespace onebox::testing
