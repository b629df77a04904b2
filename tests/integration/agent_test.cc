// The agent as a user meets it: a real `onebox agent` process on loopback,
// driven through gRPC, its shim socket, and the `onebox` CLI.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::milliseconds;

class AgentTest : public ::testing::Test {
 protected:
  std::unique_ptr<AgentProcess> MakeAgent(const std::string& name = "n1", const std::string& listen = "127.0.0.1:0") {
    return std::make_unique<AgentProcess>(name, dir_ / (name + "-data"), dir_ / (name + ".sock"), listen);
  }
  static std::unique_ptr<grpc::ClientContext> Ctx() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return ctx;
  }
  // Writes go over the agent's socket: they act as their caller (api/access.h).
  static grpc::Status Put(AgentProcess& a, const std::string& key, const std::string& value, bool sync = false) {
    v1::PutRequest q;
    q.set_key(key);
    q.set_value(value);
    q.set_sync(sync);
    v1::PutResponse r;
    return CallOverSocket(a, "/onebox.v1.Store/Put", q, &r);
  }
  static v1::GetResponse Get(v1::Store::Stub& stub, const std::string& key, grpc::Status* st = nullptr) {
    v1::GetRequest q;
    q.set_key(key);
    v1::GetResponse r;
    grpc::Status s = stub.Get(Ctx().get(), q, &r);
    if (st) *st = s;
    EXPECT_TRUE(st || s.ok()) << s.error_message();
    return r;
  }
  RunResult Cli(AgentProcess& a, std::vector<std::string> args, const std::string& stdin_data = "") {
    std::vector<std::string> argv{OneboxBin(), "--socket", a.socket()};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, {}, stdin_data);
  }

  TempDir dir_;
};

TEST_F(AgentTest, StoresOverGrpcAndKeepsDataAcrossRestart) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start());
  auto stub = v1::Store::NewStub(agent->channel());
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(Put(*agent, "k/" + std::to_string(i), "v" + std::to_string(i), i % 50 == 0).ok());
  EXPECT_EQ(Get(*stub, "k/7").value(), "v7");

  v1::StatusResponse before;
  ASSERT_TRUE(v1::Cluster::NewStub(agent->channel())->Status(Ctx().get(), {}, &before).ok());
  EXPECT_EQ(before.node().name(), "n1");
  EXPECT_EQ(before.node().node_id().size(), 16u);

  EXPECT_EQ(agent->Stop(SIGTERM), 0) << agent->log();
  EXPECT_NE(agent->log().find("agent n1 stopped"), std::string::npos);
  struct stat st;
  EXPECT_NE(lstat(agent->socket().c_str(), &st), 0) << "socket file left behind after shutdown";

  ASSERT_TRUE(agent->Start());
  stub = v1::Store::NewStub(agent->channel());
  for (int i = 0; i < 200; ++i) EXPECT_EQ(Get(*stub, "k/" + std::to_string(i)).value(), "v" + std::to_string(i));
  v1::StatusResponse after;
  ASSERT_TRUE(v1::Cluster::NewStub(agent->channel())->Status(Ctx().get(), {}, &after).ok());
  EXPECT_EQ(after.node().node_id(), before.node().node_id()) << "node identity changed across restart";
  EXPECT_GE(after.hlc(), before.hlc()) << "clock went back across restart";
  EXPECT_EQ(before.records(), 200u);
  EXPECT_EQ(before.state_digest().size(), 64u);
  EXPECT_EQ(after.state_digest(), before.state_digest()) << "same records after a restart, same digest";
  v1::PutRequest q;
  q.set_key("after-restart");
  v1::PutResponse pr;
  ASSERT_TRUE(CallOverSocket(*agent, "/onebox.v1.Store/Put", q, &pr).ok());
  EXPECT_GT(pr.version().hlc(), before.hlc()) << "a write after restart must be stamped above every earlier one";
  EXPECT_EQ(agent->Stop(SIGINT), 0) << agent->log();
  EXPECT_NE(agent->log().find("received SIGINT, shutting down"), std::string::npos);
}

TEST_F(AgentTest, KeepsAcknowledgedWritesAcrossKill9) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start());
  auto stub = v1::Store::NewStub(agent->channel());
  ASSERT_TRUE(Put(*agent, "synced", "yes", /*sync=*/true).ok());
  ASSERT_TRUE(Put(*agent, "unsynced", "in the WAL", false).ok());
  EXPECT_EQ(agent->Stop(SIGKILL), -SIGKILL);
  ASSERT_TRUE(agent->Start()) << "restart after kill -9 (stale socket and lock left behind)";
  stub = v1::Store::NewStub(agent->channel());
  EXPECT_EQ(Get(*stub, "synced").value(), "yes");
  EXPECT_EQ(Get(*stub, "unsynced").value(), "in the WAL");
}

TEST_F(AgentTest, ScanDeleteAndVersions) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start());
  auto stub = v1::Store::NewStub(agent->channel());
  for (const char* k : {"app/a", "app/b", "app/c", "apq", "other"}) ASSERT_TRUE(Put(*agent, k, k).ok());
  v1::DeleteRequest dq;
  dq.set_key("app/b");
  v1::DeleteResponse dr;
  ASSERT_TRUE(CallOverSocket(*agent, "/onebox.v1.Store/Delete", dq, &dr).ok());
  EXPECT_TRUE(dr.existed());
  EXPECT_FALSE(Get(*stub, "app/b").found());

  v1::ScanRequest sq;
  sq.set_prefix("app/");
  sq.set_limit(1);
  v1::ScanResponse sr;
  ASSERT_TRUE(stub->Scan(Ctx().get(), sq, &sr).ok());
  ASSERT_EQ(sr.entries_size(), 1);
  EXPECT_EQ(sr.entries(0).key(), "app/a");
  EXPECT_TRUE(sr.more());
  sq.set_start_after("app/a");
  sq.set_limit(10);
  ASSERT_TRUE(stub->Scan(Ctx().get(), sq, &sr).ok());
  ASSERT_EQ(sr.entries_size(), 1);
  EXPECT_EQ(sr.entries(0).key(), "app/c");
  EXPECT_FALSE(sr.more());
  EXPECT_EQ(sr.entries(0).version().node_id().size(), 16u);
  EXPECT_GT(sr.entries(0).version().hlc(), 0u);
}

TEST_F(AgentTest, RefusesBadInputWithInvalidArgumentAndStaysUp) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start());
  auto stub = v1::Store::NewStub(agent->channel());

  auto expect_invalid = [](const grpc::Status& s, const std::string& words) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find(words), std::string::npos) << s.error_message();
  };
  expect_invalid(Put(*agent, "", "v"), "key must not be empty");
  grpc::Status st;
  Get(*stub, "", &st);
  expect_invalid(st, "key must not be empty");
  expect_invalid(Put(*agent, std::string(4097, 'k'), "v"), "exceeds the limit of 4096 bytes");
  expect_invalid(Put(*agent, "big", std::string((1 << 20) + 1, 'v')), "exceeds the limit of 1048576 bytes");
  EXPECT_TRUE(Put(*agent, "big", std::string(1 << 20, 'v')).ok()) << "a value of exactly the limit is accepted";

  v1::PutRequest bad_level;
  bad_level.set_key("k");
  bad_level.set_level(static_cast<v1::WriteLevel>(99));
  v1::PutResponse pr;
  expect_invalid(CallOverSocket(*agent, "/onebox.v1.Store/Put", bad_level, &pr), "unknown write level 99");

  v1::ScanRequest big_scan;
  big_scan.set_limit(10001);
  v1::ScanResponse sr;
  expect_invalid(stub->Scan(Ctx().get(), big_scan, &sr), "exceeds the maximum of 10000");

  // Bytes that are no GetRequest at all, and a key that is not UTF-8.
  auto call_raw = [&](const std::string& bytes) { return RawUnaryCall(agent->channel(), "/onebox.v1.Store/Get", bytes); };
  expect_invalid(call_raw("\xff\xff\xff\xff garbage"), "malformed request");
  expect_invalid(call_raw(std::string("\x0a\x02\xff\xfe", 4)), "malformed request");  // key: invalid UTF-8

  // The agent is still up and serving.
  EXPECT_TRUE(agent->running());
  EXPECT_TRUE(Put(*agent, "after", "ok").ok());
  EXPECT_EQ(Get(*stub, "after").value(), "ok");
}

TEST_F(AgentTest, WarnsWhenOtherUsersCannotReachItsSocket) {
  // Programs of other users (su, a test suite that drops privileges) reach
  // the agent only if they may search every directory above its socket.
  ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);
  for (const auto& [sub, mode] : {std::pair{"closed", 0700}, std::pair{"open", 0755}}) {
    const std::string where = dir_ / sub;
    ASSERT_EQ(mkdir(where.c_str(), mode), 0);
    ASSERT_EQ(chmod(where.c_str(), mode), 0);  // whatever the umask
    auto agent = AgentProcess::WithArgs({"--name", sub, "--data-dir", dir_ / (std::string(sub) + "-data"), "--listen",
                                         "127.0.0.1:0", "--socket", where + "/agent.sock"},
                                        where + "/agent.sock", dir_ / (std::string(sub) + ".log"));
    ASSERT_TRUE(agent->Start());
    const bool warned = agent->log().find("other users cannot reach it (" + where + " has no search permission") !=
                        std::string::npos;
    EXPECT_EQ(warned, mode == 0700) << agent->log();
    EXPECT_EQ(agent->Stop(SIGTERM), 0);
  }
}

TEST_F(AgentTest, SecondAgentOnSameDataDirIsRefused) {
  auto first = MakeAgent("n1");
  ASSERT_TRUE(first->Start());
  RunResult r = RunCommand({OneboxBin(), "agent", "--name", "n1", "--data-dir", first->data_dir(), "--listen",
                     "127.0.0.1:0", "--socket", dir_ / "other.sock"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is in use by another agent (pid " + std::to_string(first->pid()) + ")"), std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "want one line: " << r.err;
  EXPECT_TRUE(Put(*first, "still", "fine").ok());
}

TEST_F(AgentTest, TakenPortIsRefused) {
  auto first = MakeAgent("n1");
  ASSERT_TRUE(first->Start());
  RunResult r = RunCommand({OneboxBin(), "agent", "--name", "n2", "--data-dir", dir_ / "n2-data", "--listen",
                     first->address(), "--socket", dir_ / "n2.sock"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot listen on " + first->address() + ": Address already in use"), std::string::npos)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "want one line: " << r.err;
}

TEST_F(AgentTest, ShimSocketIsOpenToAllAndNamesItsCaller) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start());
  struct stat st;
  ASSERT_EQ(stat(agent->socket().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0666u);
  v1::ShimResponse resp;
  std::string err;
  ASSERT_TRUE(ShimPing(agent->socket(), &resp, &err)) << err;
  EXPECT_EQ(resp.id(), 77u);
  EXPECT_EQ(resp.ping().node_name(), "n1");
  EXPECT_EQ(resp.ping().peer_pid(), getpid());
  EXPECT_EQ(resp.ping().peer_uid(), getuid());
  EXPECT_EQ(resp.ping().peer_gid(), getgid());
  EXPECT_EQ(resp.ping().grpc_address(), agent->address());
}

TEST_F(AgentTest, ReplacesStaleSocketButNotALiveOne) {
  std::string path = dir_ / "n1.sock";
  {  // a socket file whose agent is gone
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    close(fd);
  }
  auto agent = MakeAgent("n1");
  ASSERT_TRUE(agent->Start());
  RunResult r = RunCommand({OneboxBin(), "agent", "--name", "n2", "--data-dir", dir_ / "n2-data", "--listen", "127.0.0.1:0",
                     "--socket", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is in use by a running agent"), std::string::npos) << r.err;
  v1::ShimResponse resp;
  std::string err;
  EXPECT_TRUE(ShimPing(path, &resp, &err)) << "the live agent lost its socket: " << err;
}

TEST_F(AgentTest, ManyConcurrentClients) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      auto stub = v1::Store::NewStub(grpc::CreateChannel(agent->address(), grpc::InsecureChannelCredentials()));
      for (int i = 0; i < 200; ++i) {
        std::string key = "c/" + std::to_string(t) + "/" + std::to_string(i);
        if (!Put(*agent, key, "x").ok()) ++failures;  // on the socket
        grpc::Status st;
        if (Get(*stub, key, &st).value() != "x" || !st.ok()) ++failures;  // on gRPC
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  v1::ScanRequest q;
  q.set_prefix("c/");
  q.set_limit(10000);
  q.set_keys_only(true);
  v1::ScanResponse r;
  ASSERT_TRUE(v1::Store::NewStub(agent->channel())->Scan(Ctx().get(), q, &r).ok());
  EXPECT_EQ(r.entries_size(), 1600);
}

TEST_F(AgentTest, ReadsConfigFileAndCommandLineFlagsWin) {
  std::string config = dir_ / "agent.toml";
  std::ofstream(config) << "# onebox agent\n[agent]\nname = \"fromfile\"\ndata-dir = \"" << (dir_ / "cfg-data")
                        << "\"\nlisten = \"127.0.0.1:0\"\nsocket = \"" << (dir_ / "file.sock") << "\"\n";
  auto agent = AgentProcess::WithArgs({"--config", config, "--socket", dir_ / "flag.sock"}, dir_ / "flag.sock",
                                      dir_ / "cfg.log");
  ASSERT_TRUE(agent->Start());
  v1::ShimResponse resp;
  std::string err;
  ASSERT_TRUE(ShimPing(dir_ / "flag.sock", &resp, &err)) << err;
  EXPECT_EQ(resp.ping().node_name(), "fromfile");
  struct stat st;
  EXPECT_EQ(stat((dir_ / "cfg-data/node.json").c_str(), &st), 0);
  EXPECT_NE(stat((dir_ / "file.sock").c_str(), &st), 0) << "the --socket flag should have won over the file";

  std::ofstream(dir_ / "bad.toml") << "[agent]\nnmae = \"typo\"\n";
  RunResult bad = RunCommand({OneboxBin(), "agent", "--config", dir_ / "bad.toml"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("unknown key 'nmae'"), std::string::npos) << bad.err;
  RunResult missing = RunCommand({OneboxBin(), "agent", "--config", dir_ / "absent.toml"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("File does not exist"), std::string::npos) << missing.err;
}

TEST_F(AgentTest, ShippedExampleConfigIsAccepted) {
  // deploy/agent.example.toml, its /etc/onebox/ files made here (the TLS
  // files by the CLI, as the docs say), and the paths a test may use given
  // as flags.
  const std::string etc = dir_ / "etc";
  ASSERT_EQ(mkdir(etc.c_str(), 0700), 0);
  ASSERT_TRUE(OneboxSucceeds({"ca", "init", etc + "/ca-dir"}));
  ASSERT_TRUE(OneboxSucceeds({"cert", "issue", "--ca", etc + "/ca-dir", "--out", etc, "node"}));
  ASSERT_EQ(rename((etc + "/ca-dir/ca.pem").c_str(), (etc + "/ca.pem").c_str()), 0);
  std::ifstream shipped(std::string(ONEBOX_SOURCE_DIR) + "/deploy/agent.example.toml");
  std::stringstream text;
  text << shipped.rdbuf();
  std::string config = text.str();
  for (size_t at = 0; (at = config.find("/etc/onebox/", at)) != std::string::npos; at += etc.size() + 1)
    config.replace(at, std::string("/etc/onebox/").size(), etc + "/");
  std::ofstream(dir_ / "agent.toml") << config;
  // (--cacert again as a flag: the harness then reaches the agent over TLS.)
  auto agent = AgentProcess::WithArgs({"--config", dir_ / "agent.toml", "--name", "example", "--data-dir",
                                       dir_ / "ex-data", "--listen", "127.0.0.1:0", "--socket", dir_ / "ex.sock",
                                       "--cacert", etc + "/ca.pem"},
                                      dir_ / "ex.sock", dir_ / "ex.log");
  ASSERT_TRUE(agent->Start());
  EXPECT_NE(agent->log().find("TLS: peers must show a node certificate"), std::string::npos) << agent->log();
  EXPECT_EQ(agent->Stop(SIGTERM), 0);
}

// ---- the CLI ----

TEST_F(AgentTest, CliKvRoundTripWithExitCodes) {
  auto agent = MakeAgent();
  ASSERT_TRUE(agent->Start());
  RunResult put = Cli(*agent, {"kv", "put", "greeting", "hello world"});
  EXPECT_EQ(put.exit_code, 0) << put.err;
  EXPECT_EQ(put.out.rfind("OK greeting @ ", 0), 0u) << put.out;

  RunResult get = Cli(*agent, {"kv", "get", "greeting"});
  EXPECT_EQ(get.exit_code, 0);
  EXPECT_EQ(get.out, "hello world\n");

  std::string binary("a\0b\xff", 4);
  EXPECT_EQ(Cli(*agent, {"kv", "put", "--stdin", "--sync", "bin"}, binary).exit_code, 0);
  EXPECT_EQ(Get(*v1::Store::NewStub(agent->channel()), "bin").value(), binary);

  RunResult json = Cli(*agent, {"-o", "json", "kv", "get", "greeting"});
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_NE(json.out.find("\"found\": true"), std::string::npos) << json.out;
  EXPECT_NE(json.out.find("\"value\": \"aGVsbG8gd29ybGQ=\""), std::string::npos) << json.out;  // base64

  RunResult missing = Cli(*agent, {"kv", "get", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "onebox: key 'nope' not found\n");

  EXPECT_EQ(Cli(*agent, {"kv", "put", "user/1", "ann"}).exit_code, 0);
  EXPECT_EQ(Cli(*agent, {"kv", "put", "user/2", "bob"}).exit_code, 0);
  RunResult scan = Cli(*agent, {"kv", "scan", "user/"});
  EXPECT_EQ(scan.exit_code, 0);
  EXPECT_EQ(scan.out, "user/1\tann\nuser/2\tbob\n");
  RunResult limited = Cli(*agent, {"kv", "scan", "user/", "--limit", "1", "--keys-only"});
  EXPECT_EQ(limited.out, "user/1\n");
  EXPECT_NE(limited.err.find("more keys follow"), std::string::npos);

  RunResult del = Cli(*agent, {"kv", "del", "user/1"});
  EXPECT_EQ(del.exit_code, 0);
  EXPECT_EQ(del.out, "deleted user/1\n");
  EXPECT_EQ(Cli(*agent, {"kv", "get", "user/1"}).exit_code, 1);

  RunResult not_utf8 = Cli(*agent, {"kv", "put", "bad\xff", "v"});
  EXPECT_EQ(not_utf8.exit_code, 1);
  EXPECT_EQ(not_utf8.err, "onebox: key must be valid UTF-8\n");
  EXPECT_EQ(Cli(*agent, {"kv", "put", "caf\xc3\xa9/\xe2\x82\xac", "ok"}).exit_code, 0);  // café/€

  // Global options may also follow the command.
  RunResult after = RunCommand({OneboxBin(), "kv", "get", "greeting", "--agent", agent->address()});
  EXPECT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(after.out, "hello world\n");

  // Values up to the limit come back through scan, several per page.
  std::string mib(1 << 20, 'm');
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Put(*agent, "big/" + std::to_string(i), mib).ok());
  RunResult big = Cli(*agent, {"kv", "scan", "big/"});  // 5 MiB: several pages of at most 2 MiB
  EXPECT_EQ(big.exit_code, 0) << big.err;
  EXPECT_EQ(big.out.size(), 5 * (std::string("big/0\t").size() + mib.size() + 1));
  EXPECT_EQ(big.out.substr(0, 6), "big/0\t");

  RunResult empty_key = Cli(*agent, {"kv", "put", "", "v"});
  EXPECT_EQ(empty_key.exit_code, 1);
  EXPECT_NE(empty_key.err.find("key must not be empty"), std::string::npos) << empty_key.err;
}

TEST_F(AgentTest, CliStatusAndNodesInTextJsonAndThroughTheSocket) {
  auto agent = MakeAgent("alpha");
  ASSERT_TRUE(agent->Start());
  RunResult status = Cli(*agent, {"status"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("node       alpha ("), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("address    " + agent->address()), std::string::npos) << status.out;

  RunResult nodes = Cli(*agent, {"-o", "json", "nodes"});
  EXPECT_EQ(nodes.exit_code, 0);
  EXPECT_NE(nodes.out.find("\"name\": \"alpha\""), std::string::npos) << nodes.out;
  EXPECT_NE(nodes.out.find("\"state\": \"NODE_STATE_ALIVE\""), std::string::npos) << nodes.out;

  RunResult via_socket = RunCommand({OneboxBin(), "--socket", agent->socket(), "nodes"});
  EXPECT_EQ(via_socket.exit_code, 0) << via_socket.err;
  EXPECT_NE(via_socket.out.find("alpha"), std::string::npos);
  EXPECT_NE(via_socket.out.find("(this node)"), std::string::npos);
}

TEST_F(AgentTest, CliUsageErrorsExitTwoAndHelpExitsZero) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--help"}, {"agent", "--help"}, {"status", "--help"}, {"nodes", "--help"}, {"kv", "--help"},
           {"kv", "get", "--help"}, {"kv", "put", "--help"}, {"kv", "del", "--help"}, {"kv", "scan", "--help"},
           {"exec", "--help"}}) {
    args.insert(args.begin(), OneboxBin());
    RunResult r = RunCommand(args);
    EXPECT_EQ(r.exit_code, 0) << args[1];
    EXPECT_NE(r.out.find("Usage:"), std::string::npos) << r.out;
  }
  EXPECT_EQ(RunCommand({OneboxBin()}).exit_code, 2);
  EXPECT_EQ(RunCommand({OneboxBin(), "frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunCommand({OneboxBin(), "kv", "get"}).exit_code, 2);
  EXPECT_EQ(RunCommand({OneboxBin(), "kv", "put", "k"}).exit_code, 2);
  EXPECT_EQ(RunCommand({OneboxBin(), "-o", "yaml", "status"}).exit_code, 2);
  EXPECT_EQ(RunCommand({OneboxBin(), "--agent", "x:1", "--socket", "/y", "status"}).exit_code, 2);
  EXPECT_EQ(RunCommand({OneboxBin(), "agent", "--name", "bad name", "--data-dir", dir_ / "d"}).exit_code, 1);
}

TEST_F(AgentTest, CliWithoutAgentFailsFastAndClearly) {
  // A port nobody listens on: take one from the kernel and let it go.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  close(fd);
  std::string addr = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  RunResult r = RunCommand({OneboxBin(), "--agent", addr, "kv", "get", "k"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot reach agent at " + addr), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 6.0);
  RunResult s = RunCommand({OneboxBin(), "--socket", dir_ / "none.sock", "status"});
  EXPECT_EQ(s.exit_code, 1);
  EXPECT_NE(s.err.find("cannot reach agent socket"), std::string::npos) << s.err;
  EXPECT_LT(s.seconds, 1.0);
}

// ---- the shim, which interposes nothing yet, must be harmless ----

TEST_F(AgentTest, ShimLeavesProgramsUnchangedWithoutAgent) {
  // /proc and /tmp are left out of `ls -la /`: the number of processes, and
  // the directories parallel tests make, change their link counts between the
  // two runs.
  for (std::vector<std::string> ls : {std::vector<std::string>{"ls", "-la", "--ignore=proc", "--ignore=tmp", "/"},
                                      std::vector<std::string>{"ls", "-la", "/usr/lib"}}) {
    RunResult plain = RunCommand(ls);
    RunResult shimmed = RunCommand(ls, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", dir_ / "absent.sock"}});
    EXPECT_EQ(plain.exit_code, 0);
    EXPECT_EQ(shimmed.exit_code, plain.exit_code);
    EXPECT_EQ(shimmed.out, plain.out);
    EXPECT_EQ(shimmed.err, plain.err);
  }
  RunResult sh = RunCommand({"sh", "-c", "echo hi > " + (dir_ / "f") + " && cat " + (dir_ / "f")}, {{"LD_PRELOAD", ShimLib()}});
  EXPECT_EQ(sh.exit_code, 0);
  EXPECT_EQ(sh.out, "hi\n");
  EXPECT_EQ(sh.err, "");
}

}  // namespace
}  // namespace onebox::testing
