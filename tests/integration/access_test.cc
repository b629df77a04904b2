// Who may do what (nodeagent/api/access.h, docs/operations.md), tried as an
// unprivileged user would against a root-owned agent: restore and kv writes
// act as their caller over the agent's socket; the gRPC port serves only
// read-only methods to anonymous callers; peers prove they belong with the
// join token; and what a peer sends cannot make a set-user-ID root file.
// The users are made up (uids 4242 and 4343, run with setpriv), so the tests
// need root, as CI is.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "consistency/hlc.h"
#include "consistency/record.h"
#include "nodeagent/api/access.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "onebox/v1/peer.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

constexpr uid_t kAlice = 4242;
constexpr uid_t kBob = 4343;

// argv run as uid (its gid the same number, no other groups).
std::vector<std::string> AsUser(uid_t uid, std::vector<std::string> argv) {
  std::vector<std::string> full{"setpriv", fmt::format("--reuid={}", uid), fmt::format("--regid={}", uid),
                                "--clear-groups"};
  full.insert(full.end(), argv.begin(), argv.end());
  return full;
}

// A call with the empty request, as grpcurl or any program could make it.
grpc::Status RawCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                     const std::string& join_token = "") {
  return RawUnaryCall(channel, method, "", join_token);
}

class AccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "runs programs as other users: needs root (CI runs as root)";
    ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);  // the users reach the socket and the view
    agent_ = std::make_unique<AgentProcess>("acc", dir_ / "data", dir_ / "agent.sock");
    ASSERT_TRUE(agent_->Start());
    // A directory every user may write in, and one for root's secrets.
    ASSERT_EQ(Root("mkdir -p /cluster/pub /cluster/sec && chmod 1777 /cluster/pub").exit_code, 0);
  }
  void TearDown() override {
    if (agent_) KeepLogsIfFailed(dir_.path(), {agent_.get()});
  }

  RunResult Root(const std::string& cmd) { return Shell(*agent_, cmd); }
  // cmd run by bash under the shim, as uid.
  RunResult User(uid_t uid, const std::string& cmd) {
    return RunCommand(AsUser(uid, {"bash", "-c", cmd}), {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent_->socket()}});
  }
  // The CLI as uid, on the agent's socket.
  RunResult Cli(uid_t uid, std::vector<std::string> args) {
    std::vector<std::string> argv{OneboxBin(), "--socket", agent_->socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(uid == 0 ? argv : AsUser(uid, argv));
  }
  // The id (HLC@NODE, as `onebox versions` prints it) of the newest kept
  // version of path with this size and mode.
  std::string VersionOf(const std::string& path, uint64_t size, uint32_t mode) {
    v1::VersionsRequest q;
    q.set_path(path);
    v1::VersionsResponse r;
    grpc::ClientContext ctx;
    EXPECT_TRUE(v1::Namespace::NewStub(agent_->channel())->Versions(&ctx, q, &r).ok());
    for (const v1::FileVersion& v : r.versions())
      if (!v.current() && v.inode().size() == size && v.inode().mode() == mode)
        return fmt::format("{}@{}", v.version().hlc(), v.version().node_id());
    ADD_FAILURE() << "no version of " << path << " of " << size << " bytes, mode " << std::oct << mode << ":\n"
                  << r.DebugString();
    return "";
  }

  TempDir dir_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(AccessTest, RestoreOfAnotherUsersFileIsRefusedAndOfOnesOwnAllowed) {
  // Root's secret, written twice: nobody else may read it, nor put back its older content.
  ASSERT_EQ(Root("umask 077 && echo one > /cluster/sec/s && sync /cluster/sec/s && echo second > /cluster/sec/s && "
                 "sync /cluster/sec/s").exit_code, 0);
  EXPECT_NE(User(kAlice, "cat /cluster/sec/s").exit_code, 0);
  std::string older = VersionOf("/cluster/sec/s", 4, 0600);
  ASSERT_FALSE(older.empty());
  RunResult refused = Cli(kAlice, {"restore", "/cluster/sec/s", older});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("only its owner (uid 0) or root restores it"), std::string::npos) << refused.err;
  EXPECT_EQ(Root("cat /cluster/sec/s").out, "second\n") << "a refused restore changed the file";
  // Over gRPC, where the caller is anonymous, the CLI does not even try.
  RunResult over_grpc = RunCommand(AsUser(kAlice, {OneboxBin(), "--agent", agent_->address(), "restore",
                                                   "/cluster/sec/s", older}));
  EXPECT_EQ(over_grpc.exit_code, 1);
  EXPECT_NE(over_grpc.err.find("Unix socket"), std::string::npos) << over_grpc.err;

  // Alice's own file: she may put its older content back, and Bob may not.
  ASSERT_EQ(User(kAlice, "echo one > /cluster/pub/mine && sync /cluster/pub/mine && echo second > /cluster/pub/mine && "
                         "sync /cluster/pub/mine").exit_code, 0);
  std::string hers = VersionOf("/cluster/pub/mine", 4, 0644);
  ASSERT_FALSE(hers.empty());
  RunResult bob = Cli(kBob, {"restore", "/cluster/pub/mine", hers});
  EXPECT_EQ(bob.exit_code, 1) << bob.out;
  EXPECT_NE(bob.err.find("only its owner (uid 4242)"), std::string::npos) << bob.err;
  RunResult alice = Cli(kAlice, {"restore", "/cluster/pub/mine", hers});
  EXPECT_EQ(alice.exit_code, 0) << alice.err;
  EXPECT_TRUE(Eventually(*agent_, "cat /cluster/pub/mine", "one\n"));

  // A file Alice once owned that is root's now: her old version would make it hers again (a chown).
  ASSERT_EQ(User(kAlice, "echo hers > /cluster/pub/taken && sync /cluster/pub/taken").exit_code, 0);
  std::string when_hers = VersionOf("/cluster/pub/taken", 5, 0644);
  ASSERT_EQ(Root("f=/cluster/pub/taken && chown 0:0 $f && chmod 0666 $f && echo root-data > $f && sync $f").exit_code,
            0);
  RunResult takeover = Cli(kAlice, {"restore", "/cluster/pub/taken", when_hers});
  EXPECT_EQ(takeover.exit_code, 1) << takeover.out;
  EXPECT_EQ(Root("stat -c %u /cluster/pub/taken").out, "0\n");

  // Root's world-writable file: Alice may write it, but not put back its old
  // content (the content might have been one she could not read then), nor a
  // set-user-ID version. Neither is hers.
  // (sync records each step now: the recorder would take quick changes together.)
  ASSERT_EQ(Root("f=/cluster/pub/shared && umask 0 && echo one > $f && sync $f && chmod 04755 $f && sync $f && "
                 "chmod 0666 $f && sync $f && echo second > $f && sync $f")
                .exit_code,
            0);
  for (uint32_t mode : {04755u, 0666u}) {
    RunResult theirs = Cli(kAlice, {"restore", "/cluster/pub/shared", VersionOf("/cluster/pub/shared", 4, mode)});
    EXPECT_EQ(theirs.exit_code, 1) << std::oct << mode;
    EXPECT_NE(theirs.err.find("only its owner"), std::string::npos) << theirs.err;
  }
  EXPECT_EQ(Root("stat -c %a /cluster/pub/shared && cat /cluster/pub/shared").out, "666\nsecond\n");

  // Her own read-only file: as for a shell redirection, she chmods it first.
  ASSERT_EQ(User(kAlice, "f=/cluster/pub/ro && echo one > $f && sync $f && echo second > $f && chmod 0444 $f && "
                         "sync $f")
                .exit_code,
            0);
  std::string first = VersionOf("/cluster/pub/ro", 4, 0644);
  RunResult read_only = Cli(kAlice, {"restore", "/cluster/pub/ro", first});
  EXPECT_EQ(read_only.exit_code, 1);
  EXPECT_NE(read_only.err.find("permission denied"), std::string::npos) << read_only.err;
  ASSERT_EQ(User(kAlice, "chmod 0644 /cluster/pub/ro && sync /cluster/pub/ro").exit_code, 0);
  EXPECT_EQ(Cli(kAlice, {"restore", "/cluster/pub/ro", first}).exit_code, 0);
}

TEST_F(AccessTest, RestoreCountsTheCallersSupplementaryGroups) {
  // A directory only group kBob may enter; Alice, in that group, keeps a file there.
  ASSERT_EQ(Root("mkdir /cluster/team && chgrp 4343 /cluster/team && chmod 0770 /cluster/team").exit_code, 0);
  auto in_team = [&](std::vector<std::string> argv) {
    std::vector<std::string> full{"setpriv", fmt::format("--reuid={}", kAlice), fmt::format("--regid={}", kAlice),
                                  fmt::format("--groups={}", kBob)};
    full.insert(full.end(), argv.begin(), argv.end());
    return full;
  };
  RunResult wrote = RunCommand(in_team({"bash", "-c", "f=/cluster/team/f && echo one > $f && sync $f && "
                                                      "echo second > $f && sync $f"}),
                               {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent_->socket()}});
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  std::string older = VersionOf("/cluster/team/f", 4, 0644);
  ASSERT_FALSE(older.empty());
  RunResult outside = Cli(kAlice, {"restore", "/cluster/team/f", older});  // without her groups
  EXPECT_EQ(outside.exit_code, 1) << "the directory let her in without her group: " << outside.out;
  EXPECT_NE(outside.err.find("permission denied"), std::string::npos) << outside.err;
  RunResult in_group = RunCommand(in_team({OneboxBin(), "--socket", agent_->socket(), "restore", "/cluster/team/f", older}));
  EXPECT_EQ(in_group.exit_code, 0) << in_group.err;
  EXPECT_TRUE(Eventually(*agent_, "cat /cluster/team/f", "one\n"));
}

TEST_F(AccessTest, KvWritesOutsideOnesOwnSpaceAreRefused) {
  ASSERT_EQ(Cli(0, {"kv", "put", "greeting", "root's"}).exit_code, 0);
  RunResult theirs = Cli(kAlice, {"kv", "put", "greeting", "alice's"});
  EXPECT_EQ(theirs.exit_code, 1);
  EXPECT_NE(theirs.err.find("may write keys under uid/4242/ only"), std::string::npos) << theirs.err;
  EXPECT_EQ(Cli(kAlice, {"kv", "del", "greeting"}).exit_code, 1);
  EXPECT_EQ(Cli(kAlice, {"kv", "put", "uid/4343/x", "not hers"}).exit_code, 1);
  EXPECT_EQ(Cli(kAlice, {"kv", "put", "uid/4242", "the space itself is no key of hers"}).exit_code, 1);
  EXPECT_EQ(Cli(kAlice, {"kv", "put", "uid/42420/x", "uid 42420's space, not hers"}).exit_code, 1);
  EXPECT_EQ(Cli(kAlice, {"kv", "get", "greeting"}).out, "root's\n") << "every caller reads every key";

  RunResult own = Cli(kAlice, {"kv", "put", "uid/4242/color", "blue"});
  EXPECT_EQ(own.exit_code, 0) << own.err;
  EXPECT_EQ(Cli(kBob, {"kv", "del", "uid/4242/color"}).exit_code, 1);
  EXPECT_EQ(Cli(kBob, {"kv", "get", "uid/4242/color"}).out, "blue\n");
  EXPECT_EQ(Cli(kAlice, {"kv", "del", "uid/4242/color"}).exit_code, 0);
  EXPECT_EQ(Cli(0, {"kv", "put", "uid/4242/set-by-root", "ok"}).exit_code, 0) << "root writes every key";
}

TEST_F(AccessTest, EveryMethodIsAdmittedByItsClassOverGrpc) {
  // Every method the agent serves has a class; the list is the API's.
  EXPECT_TRUE(UnclassifiedMethods().empty()) << fmt::format("{}", fmt::join(UnclassifiedMethods(), ", "));
  auto channel = agent_->channel();
  std::string token;
  std::getline(std::ifstream(TestJoinTokenFile()), token);
  int mutating = 0;
  for (const ApiMethod& m : kApiMethods) {
    std::string method(m.name);
    grpc::Status anonymous = RawCall(channel, method);
    switch (m.method_class) {
      case MethodClass::kReadOnly:  // open: answered (maybe INVALID_ARGUMENT for the empty request), never refused
        EXPECT_NE(anonymous.error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
        EXPECT_NE(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
        break;
      case MethodClass::kCallerActing:
      case MethodClass::kAdmin:
        ++mutating;
        EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
        EXPECT_NE(anonymous.error_message().find("Unix socket"), std::string::npos) << anonymous.error_message();
        // A peer's token is no user's identity.
        EXPECT_EQ(RawCall(channel, method, token).error_code(), grpc::StatusCode::PERMISSION_DENIED) << method;
        break;
      case MethodClass::kPeer:
        ++mutating;
        EXPECT_EQ(anonymous.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
        EXPECT_EQ(RawCall(channel, method, token + "x").error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
        {
          std::string near = token;  // the same length, its last byte wrong: every byte counts
          near.back() = near.back() == '0' ? '1' : '0';
          EXPECT_EQ(RawCall(channel, method, near).error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
        }
        EXPECT_NE(RawCall(channel, method, token).error_code(), grpc::StatusCode::UNAUTHENTICATED) << method;
        break;
    }
  }
  EXPECT_GE(mutating, 12) << "the list lost its writes";
  // Refused peer calls are logged once per source, not once per call.
  std::string log = agent_->log();
  size_t refusals = 0;
  for (size_t at = log.find("refused a peer call"); at != std::string::npos; at = log.find("refused a peer call", at + 1))
    ++refusals;
  EXPECT_EQ(refusals, 1u) << log;
  // The data written by no one: the store holds only what SetUp made.
  v1::ScanRequest scan;
  v1::ScanResponse keys;
  grpc::ClientContext ctx;
  ASSERT_TRUE(v1::Store::NewStub(channel)->Scan(&ctx, scan, &keys).ok());
  EXPECT_EQ(keys.entries_size(), 0);
}

TEST_F(AccessTest, AForgedReplicationBatchCannotMakeASetuidRootFile) {
  // A peer that has the token (a compromised node, say) sends the record of a
  // set-user-ID root file, made as a real node makes it.
  ASSERT_EQ(Root("echo '#!/bin/sh' > /cluster/pub/tool && chmod 0755 /cluster/pub/tool && sync /cluster/pub/tool").exit_code, 0);
  v1::StatRequest sq;
  sq.set_path("/cluster/pub/tool");
  v1::StatResponse st;
  grpc::ClientContext sctx;
  ASSERT_TRUE(v1::Namespace::NewStub(agent_->channel())->Stat(&sctx, sq, &st).ok());
  ASSERT_TRUE(st.found());
  v1::Inode inode = st.inode();
  inode.set_mode(04755);
  inode.set_uid(0);
  auto forge = [&](const std::string& key, const v1::Inode& what) {
    v1::ReplicateRequest q;
    q.set_from_node_id("0fedcba987654321");
    v1::LogRecord* r = q.add_records();
    r->set_family("ns");
    r->set_key(key);
    Record record{Version{hlc::Pack(hlc::SystemWallMillis(), 1), 0x0fedcba987654321ull}, false,
                  what.SerializeAsString()};
    r->set_record(EncodeRecord(record));
    v1::ReplicateResponse resp;
    grpc::ClientContext ctx;
    AddTestJoinToken(&ctx);
    return v1::Peer::NewStub(agent_->channel())->Replicate(&ctx, q, &resp);
  };
  // Controls first: the same forgery without the set-user-ID bit is taken (so
  // the encoding is right), and without the token nothing is.
  v1::Inode plain = inode;
  plain.set_mode(0755);
  plain.set_size(0);
  plain.clear_chunks();
  ASSERT_TRUE(forge("cluster/pub/plain", plain).ok());
  EXPECT_TRUE(Eventually(*agent_, "stat -c %a /cluster/pub/plain", "755\n"));

  v1::Inode setuid = plain;
  setuid.set_mode(04755);
  grpc::Status refused = forge("cluster/pub/rootshell", setuid);
  EXPECT_TRUE(refused.ok()) << "the batch is answered (its other records apply): " << refused.error_message();
  v1::Inode setgid = plain;
  setgid.set_mode(02755);
  EXPECT_TRUE(forge("cluster/pub/rootgroup", setgid).ok());
  v1::Inode alices = plain;
  alices.set_mode(04755);
  alices.set_uid(kAlice);
  alices.set_gid(kAlice);
  EXPECT_TRUE(forge("cluster/pub/alices", alices).ok());
  EXPECT_TRUE(Eventually(*agent_, "stat -c %a:%u /cluster/pub/alices", "4755:4242\n"))
      << "a set-user-ID file of a user travels: it grants that user's rights only";
  for (const char* path : {"/cluster/pub/rootshell", "/cluster/pub/rootgroup"}) {
    EXPECT_NE(Root(fmt::format("stat {}", path)).exit_code, 0) << path << " was made";
    v1::StatRequest q;
    q.set_path(path);
    v1::StatResponse r;
    grpc::ClientContext ctx;
    ASSERT_TRUE(v1::Namespace::NewStub(agent_->channel())->Stat(&ctx, q, &r).ok());
    EXPECT_FALSE(r.found()) << path << " is in the store";
  }
  EXPECT_NE(agent_->log().find("refused a record: /cluster/pub/rootshell would be a set-user-ID file of root"),
            std::string::npos)
      << agent_->log();
}

TEST_F(AccessTest, APublishOfAPathTheViewDoesNotShowRemovesNothing) {
  // A fifo a peer made: recorded here, never made in this view (device
  // nodes, fifos and sockets stay on their node). fsync's Publish names any
  // path; one the view does not show is no removal.
  v1::Inode fifo;
  fifo.set_type(v1::FILE_TYPE_OTHER);
  fifo.set_mode(0644);
  v1::ReplicateRequest q;
  q.set_from_node_id("0fedcba987654321");
  v1::LogRecord* r = q.add_records();
  r->set_family("ns");
  r->set_key("cluster/pub/fifo");
  r->set_record(EncodeRecord(
      Record{Version{hlc::Pack(hlc::SystemWallMillis(), 1), 0x0fedcba987654321ull}, false, fifo.SerializeAsString()}));
  v1::ReplicateResponse resp;
  grpc::ClientContext ctx;
  AddTestJoinToken(&ctx);
  ASSERT_TRUE(v1::Peer::NewStub(agent_->channel())->Replicate(&ctx, q, &resp).ok());
  bool found = false;
  RecordedInode(*agent_, "/cluster/pub/fifo", &found);
  ASSERT_TRUE(found);
  v1::ShimRequest publish;
  publish.set_id(1);
  publish.mutable_publish()->set_path("cluster/pub/fifo");
  v1::ShimResponse answer;
  std::string err;
  ASSERT_TRUE(ShimCall(agent_->socket(), publish, &answer, &err)) << err;
  EXPECT_NE(answer.err(), 0) << "a Publish of what the view does not show succeeded";
  RecordedInode(*agent_, "/cluster/pub/fifo", &found);
  EXPECT_TRUE(found) << "a Publish removed a peer's record";
}

TEST_F(AccessTest, AgentsWithoutTheSameTokenDoNotJoin) {
  // Without a token, --join is refused at start, unless --insecure says so.
  RunResult no_token = RunCommand({"timeout", "10", OneboxBin(), "agent", "--name", "lone", "--data-dir", dir_ / "lone",
                                   "--listen", "127.0.0.1:0", "--socket", dir_ / "lone.sock", "--join",
                                   agent_->address()});
  EXPECT_EQ(no_token.exit_code, 1);
  EXPECT_NE(no_token.err.find("--join needs TLS (--cacert, --cert, --key) or the cluster's join token"), std::string::npos) << no_token.err;
  // A token file others may read is refused: a token is a secret.
  std::string readable = dir_ / "readable-token";
  std::ofstream(readable) << "0123456789abcdef0123456789abcdef\n";
  chmod(readable.c_str(), 0644);
  RunResult open_file = RunCommand({"timeout", "10", OneboxBin(), "agent", "--name", "lone", "--data-dir", dir_ / "lone", "--listen",
                                    "127.0.0.1:0", "--socket", dir_ / "lone.sock", "--join-token-file", readable});
  EXPECT_EQ(open_file.exit_code, 1);
  EXPECT_NE(open_file.err.find("readable by it alone"), std::string::npos) << open_file.err;

  // Another cluster's token: the agent starts, but the first refuses it as a peer.
  std::string other = dir_ / "other-token";
  std::ofstream(other) << "another-cluster-token-0123456789\n";
  chmod(other.c_str(), 0600);
  auto stranger = AgentProcess::WithArgs({"--name", "stranger", "--data-dir", dir_ / "stranger", "--listen",
                                          "127.0.0.1:0", "--socket", dir_ / "stranger.sock", "--join",
                                          agent_->address(), "--join-token-file", other},
                                         dir_ / "stranger.sock", dir_ / "stranger.log");
  ASSERT_TRUE(stranger->Start());
  EXPECT_TRUE(WaitUntil(
      [&] { return Observed(agent_->log().find("refused a peer call") != std::string::npos, agent_->log()); },
      seconds(10), "the first agent refuses the stranger's gossip"));
  RunResult nodes = Cli(0, {"nodes"});
  EXPECT_EQ(nodes.out.find("stranger"), std::string::npos) << nodes.out;
  EXPECT_EQ(stranger->Stop(), 0);
}

TEST_F(AccessTest, AnotherUsersFilesStayTheirsThroughAnotherNode) {
  // A second node: Bob works there, on the files Alice made on the first.
  auto second = AgentProcess::WithArgs({"--name", "acc2", "--data-dir", dir_ / "data2", "--listen", "127.0.0.1:0",
                                        "--socket", dir_ / "agent2.sock", "--join", agent_->address()},
                                       dir_ / "agent2.sock", dir_ / "data2.log");
  ASSERT_TRUE(second->Start());
  auto on_second = [&](uid_t uid, const std::string& cmd) {
    return RunCommand(AsUser(uid, {"bash", "-c", cmd}), {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", second->socket()}});
  };
  ASSERT_EQ(User(kAlice, "cd /cluster/pub && umask 022 && echo secret > secret && chmod 600 secret && "
                         "echo hers > file && mkdir dir && echo inside > dir/f && sync secret file dir/f")
                .exit_code,
            0);
  ASSERT_TRUE(Eventually(*second, "cat /cluster/pub/secret /cluster/pub/file /cluster/pub/dir/f", "secret\nhers\ninside\n",
                         seconds(20)));
  // Alice reads her own secret there (a positive control: the node has it, and gives it to its owner).
  EXPECT_EQ(on_second(kAlice, "cat /cluster/pub/secret").out, "secret\n");
  // Bob, on the second node: each of these is refused by that node's kernel, as on one machine.
  const std::vector<std::pair<std::string, std::string>> attempts{
      {"read a 0600 file", "cat /cluster/pub/secret"},
      {"write her file", "echo bob >> /cluster/pub/file"},
      {"truncate her file", "truncate -s 0 /cluster/pub/file"},
      {"chmod her file", "chmod 666 /cluster/pub/file"},
      {"chown her file", "chown 4343 /cluster/pub/file"},
      {"unlink her file in a sticky directory", "rm -f /cluster/pub/file"},
      {"rename her file in a sticky directory", "mv /cluster/pub/file /cluster/pub/bobs"},
      {"unlink in her directory", "rm -f /cluster/pub/dir/f"},
      {"rename out of her directory", "mv /cluster/pub/dir/f /cluster/pub/stolen"},
      {"make a file in her directory", "echo x > /cluster/pub/dir/new"},
      {"replace her file by a rename over it", "echo bob > /cluster/pub/b && mv -f /cluster/pub/b /cluster/pub/file"},
  };
  for (const auto& [what, cmd] : attempts) {
    RunResult r = on_second(kBob, cmd);
    EXPECT_NE(r.exit_code, 0) << "Bob could " << what << " through the second node: " << r.out;
  }
  // Nothing of hers changed, on either node, after the replication that would have carried a change.
  const std::string want = "secret\nhers\ninside\n600 4242\n644 4242\n755 4242\n";
  const std::string look = "cat /cluster/pub/secret /cluster/pub/file /cluster/pub/dir/f && "
                           "stat -c '%a %u' /cluster/pub/secret /cluster/pub/file /cluster/pub/dir";
  EXPECT_TRUE(Eventually(*second, "sync /cluster/pub/b 2>/dev/null; ls /cluster/pub/b", "/cluster/pub/b\n"));
  ASSERT_TRUE(Eventually(*agent_, "ls /cluster/pub/b", "/cluster/pub/b\n", seconds(10)));
  EXPECT_EQ(Root(look).out, want);
  EXPECT_EQ(Shell(*second, look).out, want);
  EXPECT_EQ(Root("ls /cluster/pub/dir; ls /cluster/pub | sort").out, "f\nb\ndir\nfile\nsecret\n");
  EXPECT_EQ(second->Stop(), 0);
}

}  // namespace
}  // namespace onebox::testing
