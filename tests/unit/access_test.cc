// The access rules in one process: each method class admits whom it says
// (api/access.h), join tokens are read and compared as documented, acting
// as a caller changes this thread's rights only and gives them back
// (api/acting_as.h), and a peer's record of a set-user-ID root file is
// refused (sync/record_codec.h). tests/integration/access_test.cc tries the
// same as users would, against a real agent.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <thread>

#include <gtest/gtest.h>

#include "nodeagent/api/access.h"
#include "nodeagent/api/acting_as.h"
#include "nodeagent/sync/record_codec.h"
#include "onebox/v1/namespace.pb.h"
#include "tests/test_util.h"

namespace onebox {
namespace {

Caller Local(uid_t uid) {
  Caller c;
  c.local = true;
  c.uid = uid;
  c.gid = uid;
  return c;
}

TEST(AccessGate, EachClassAdmitsWhomItSays) {
  AccessGate gate("0123456789abcdef0123", /*insecure=*/false);
  Caller anonymous;
  Caller peer;
  peer.proven_peer = true;
  auto admits = [&](MethodClass c, const Caller& who) { return gate.Admit(c, "/m", who).ok(); };
  EXPECT_TRUE(admits(MethodClass::kReadOnly, anonymous));
  EXPECT_FALSE(admits(MethodClass::kCallerActing, anonymous));
  EXPECT_FALSE(admits(MethodClass::kCallerActing, peer)) << "a peer's token is no user's identity";
  EXPECT_TRUE(admits(MethodClass::kCallerActing, Local(1000)));
  EXPECT_FALSE(admits(MethodClass::kAdmin, Local(1000)));
  EXPECT_FALSE(admits(MethodClass::kAdmin, anonymous));
  EXPECT_TRUE(admits(MethodClass::kAdmin, Local(0)));
  EXPECT_TRUE(admits(MethodClass::kAdmin, Local(geteuid()))) << "the agent's own user";
  EXPECT_FALSE(admits(MethodClass::kPeer, anonymous));
  EXPECT_FALSE(admits(MethodClass::kPeer, Local(0))) << "root on the socket is no peer";
  EXPECT_TRUE(admits(MethodClass::kPeer, peer));
  EXPECT_EQ(gate.Admit(MethodClass::kCallerActing, "/m", anonymous).code(), Code::kPermissionDenied);
  EXPECT_EQ(gate.Admit(MethodClass::kPeer, "/m", anonymous).code(), Code::kUnauthenticated);
}

TEST(AccessGate, EveryMethodOfTheApiHasAClass) {
  EXPECT_TRUE(UnclassifiedMethods().empty());
  EXPECT_EQ(ApiServices().size(), 5u);
  for (const ApiMethod& m : kApiMethods) {
    bool peer_service = m.name.find("/onebox.v1.Peer/") == 0;
    EXPECT_EQ(peer_service, m.method_class == MethodClass::kPeer) << m.name;
  }
}

// docs/operations.md's table (Who may do what) has a row per method, with
// the class the list gives it.
TEST(AccessGate, TheOperationsDocHasARowPerMethodWithItsClass) {
  std::ifstream doc(std::string(ONEBOX_SOURCE_DIR) + "/docs/operations.md");
  std::string text((std::istreambuf_iterator<char>(doc)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(text.empty());
  for (const ApiMethod& m : kApiMethods) {
    std::string short_name(m.name.substr(std::string_view("/onebox.v1.").size()));
    std::string row = "\n| `" + short_name + "` | " + std::string(MethodClassName(m.method_class)) + " |";
    EXPECT_NE(text.find(row), std::string::npos) << "docs/operations.md lacks the row " << row.substr(1);
  }
}

TEST(JoinToken, IsReadTrimmedAndRefusedWhenShortOrReadableByAll) {
  testing::TempDir dir;
  auto write = [&](const std::string& name, const std::string& text, mode_t mode) {
    std::string path = dir / name;
    std::ofstream(path) << text;
    chmod(path.c_str(), mode);
    return path;
  };
  Result<std::string> good = ReadJoinTokenFile(write("good", "  0123456789abcdef0123 \nignored\n", 0600));
  ASSERT_TRUE(good.ok()) << good.status().message();
  EXPECT_EQ(*good, "0123456789abcdef0123");
  EXPECT_FALSE(ReadJoinTokenFile(write("short", "0123456789\n", 0600)).ok());
  EXPECT_FALSE(ReadJoinTokenFile(write("open", "0123456789abcdef0123\n", 0644)).ok());
  EXPECT_FALSE(ReadJoinTokenFile(write("group", "0123456789abcdef0123\n", 0640)).ok());
  EXPECT_TRUE(ReadJoinTokenFile(write("read-only", "0123456789abcdef0123\n", 0400)).ok());
  EXPECT_FALSE(ReadJoinTokenFile(write("binary", std::string("0123456789abcdef\x01\xff", 18) + "\n", 0600)).ok())
      << "gRPC metadata carries printable ASCII only";
  EXPECT_FALSE(ReadJoinTokenFile(dir / "absent").ok());
}

TEST(ActingAs, TakesTheCallersRightsOnThisThreadOnlyAndGivesThemBack) {
  if (geteuid() != 0) GTEST_SKIP() << "takes another user's rights: needs root";
  testing::TempDir dir;
  std::string secret = dir / "secret";
  std::ofstream(secret) << "root's";
  ASSERT_EQ(chmod(secret.c_str(), 0600), 0);
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  {
    Result<ActingAs> as = ActingAs::Take(Local(4242));
    ASSERT_TRUE(as.ok()) << as.status().message();
    EXPECT_EQ(as->MayAccess(AT_FDCWD, secret, W_OK, "secret").code(), Code::kPermissionDenied);
    EXPECT_EQ(as->MayAccess(AT_FDCWD, secret, R_OK, "secret").code(), Code::kPermissionDenied);
    // Another thread of the agent keeps root's rights meanwhile.
    bool other_thread_may = false;
    std::thread([&] { other_thread_may = access(secret.c_str(), W_OK) == 0; }).join();
    EXPECT_TRUE(other_thread_may);
  }
  EXPECT_EQ(access(secret.c_str(), W_OK), 0) << "this thread's rights were not given back";
  EXPECT_EQ(syscall(SYS_setfsuid, -1), 0);
  Caller in_group = Local(4242);
  in_group.groups = {4343};
  ASSERT_EQ(chown(secret.c_str(), 0, 4343), 0);
  ASSERT_EQ(chmod(secret.c_str(), 0660), 0);
  Result<ActingAs> member = ActingAs::Take(in_group);
  ASSERT_TRUE(member.ok());
  EXPECT_TRUE(member->MayAccess(AT_FDCWD, secret, W_OK, "secret").ok()) << "the caller's groups count";
  EXPECT_FALSE(ActingAs::Take(Caller{}).ok()) << "an anonymous caller cannot be acted for";
}

Record InodeRecord(uint32_t mode, uint32_t uid, uint32_t gid, v1::FileType type = v1::FILE_TYPE_REGULAR) {
  v1::Inode inode;
  inode.set_type(type);
  inode.set_mode(mode);
  inode.set_uid(uid);
  inode.set_gid(gid);
  return Record{Version{1, 2}, false, inode.SerializeAsString()};
}

TEST(PeerRecords, ASetuidOrSetgidFileOfRootIsRefusedUnlessAccepted) {
  PeerRecordRules strict;
  auto refused = [&](const Record& r, PeerRecordRules rules) {
    return CheckPeerRecord(Cf::kNs, "cluster/f", r, rules).code() == Code::kPermissionDenied;
  };
  EXPECT_TRUE(refused(InodeRecord(04755, 0, 0), strict));
  EXPECT_TRUE(refused(InodeRecord(02755, 1000, 0), strict));
  EXPECT_TRUE(refused(InodeRecord(02755, 0, 42), strict)) << "root's, set-group-ID to another group";
  EXPECT_TRUE(refused(InodeRecord(04755, 0, 1000), strict));
  EXPECT_FALSE(refused(InodeRecord(0755, 0, 0), strict));
  EXPECT_FALSE(refused(InodeRecord(04755, 1000, 1000), strict)) << "a user's own set-user-ID file travels";
  EXPECT_FALSE(refused(InodeRecord(02775, 0, 0, v1::FILE_TYPE_DIRECTORY), strict)) << "setgid dirs only inherit";
  EXPECT_FALSE(refused(InodeRecord(04755, 0, 0), PeerRecordRules{.accept_root_setid = true}));
  EXPECT_FALSE(CheckPeerRecord(Cf::kKv, "k", InodeRecord(04755, 0, 0), strict).code() == Code::kPermissionDenied);
}

}  // namespace
}  // namespace onebox
