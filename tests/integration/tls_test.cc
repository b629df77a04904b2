// Mutual TLS (nodeagent/tls/, docs/operations.md "Mutual TLS"), as an
// operator sets it up: `onebox ca init`, `onebox cert issue`, agents given
// --cacert --cert --key. Agents of one CA join and replicate; a node of
// another CA is not let in, nor is a client of it; anonymous TLS clients
// read, an admin certificate writes, a node certificate is no admin; and an
// agent refuses to listen beyond loopback without TLS.
#include <sys/stat.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "nodeagent/tls/tls_identity.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(mkdir(Pki("").c_str(), 0700), 0);
    for (const std::vector<std::string>& argv :
         {std::vector<std::string>{"ca", "init", Pki("ca")}, {"ca", "init", Pki("other-ca")},
          {"cert", "issue", "--ca", Pki("ca"), "--out", Pki(""), "t1"},
          {"cert", "issue", "--ca", Pki("ca"), "--out", Pki(""), "t2"},
          {"cert", "issue", "--ca", Pki("ca"), "--out", Pki(""), "--admin", "ops"},
          {"cert", "issue", "--ca", Pki("other-ca"), "--out", Pki(""), "intruder"},
          {"cert", "issue", "--ca", Pki("other-ca"), "--out", Pki(""), "--admin", "other-ops"}})
      ASSERT_TRUE(OneboxSucceeds(argv));
  }
  void TearDown() override {
    std::vector<AgentProcess*> all;
    for (auto& a : agents_) all.push_back(a.get());
    KeepLogsIfFailed(dir_.path(), all);
  }

  std::string Pki(const std::string& name) { return dir_.path() + "/pki/" + name; }
  // --cacert --cert --key of certificate name, of the CA in ca.
  std::vector<std::string> TlsArgs(const std::string& name, const std::string& ca = "ca") {
    return {"--cacert", Pki(ca + "/ca.pem"), "--cert", Pki(name + ".pem"), "--key", Pki(name + ".key")};
  }
  AgentProcess& StartAgent(const std::string& name, std::vector<std::string> tls, const std::string& join = "") {
    std::vector<std::string> args{"--name", name, "--data-dir", dir_ / (name + "-data"), "--listen", "127.0.0.1:0",
                                  "--socket", dir_ / (name + ".sock"), "--log-level", "debug"};
    args.insert(args.end(), tls.begin(), tls.end());
    if (!join.empty()) args.insert(args.end(), {"--join", join});
    agents_.push_back(AgentProcess::WithArgs(args, dir_ / (name + ".sock"), dir_ / (name + ".log")));
    EXPECT_TRUE(agents_.back()->Start());
    return *agents_.back();
  }
  // A client's channel to agent: TLS with the CA of ca, showing certificate name ("": none).
  std::shared_ptr<grpc::Channel> ClientChannel(AgentProcess& agent, const std::string& name,
                                               const std::string& ca = "ca") {
    TlsFiles files;
    files.ca = Pki(ca + "/ca.pem");
    if (!name.empty()) {
      files.cert = Pki(name + ".pem");
      files.key = Pki(name + ".key");
    }
    Result<TlsMaterial> tls = LoadTls(files, false);
    EXPECT_TRUE(tls.ok()) << tls.status().message();
    grpc::ChannelArguments args;
    SetTlsChannelArgs(&args);
    return grpc::CreateCustomChannel(agent.address(), ChannelCredentials(*tls), args);
  }
  std::vector<std::string> MemberNames(AgentProcess& agent) {
    v1::ListNodesResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
    grpc::Status st = v1::Cluster::NewStub(agent.channel())->ListNodes(&ctx, v1::ListNodesRequest(), &r);
    if (!st.ok()) return {"(" + st.error_message() + ")"};
    std::vector<std::string> names;
    for (const v1::Node& n : r.nodes())
      if (n.state() == v1::NODE_STATE_ALIVE) names.push_back(n.name());
    std::sort(names.begin(), names.end());
    return names;
  }
  grpc::Status Put(const std::shared_ptr<grpc::Channel>& channel, const std::string& key) {
    v1::PutRequest q;
    q.set_key(key);
    q.set_value("v");
    v1::PutResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
    return v1::Store::NewStub(channel)->Put(&ctx, q, &r);
  }

  TempDir dir_;
  std::vector<std::unique_ptr<AgentProcess>> agents_;
};

TEST_F(TlsTest, TheCaAndItsCertificatesAreWhatOpensslAccepts) {
  for (const char* cert : {"t1.pem", "ops.pem"}) {
    RunResult ok = RunCommand({"openssl", "verify", "-CAfile", Pki("ca/ca.pem"), Pki(cert)});
    EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
    RunResult other = RunCommand({"openssl", "verify", "-CAfile", Pki("other-ca/ca.pem"), Pki(cert)});
    EXPECT_NE(other.exit_code, 0) << cert << " verified by another CA";
  }
  RunResult text = RunCommand({"openssl", "x509", "-in", Pki("t1.pem"), "-noout", "-text"});
  EXPECT_NE(text.out.find("DNS:node.onebox"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("CN = t1"), std::string::npos) << text.out;
  for (const char* key : {"ca/ca.key", "t1.key", "ops.key"}) {
    struct stat st{};
    ASSERT_EQ(stat(Pki(key).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
  // Nothing is overwritten, and a name that is not a file name is refused.
  RunResult again = RunCommand({OneboxBin(), "ca", "init", Pki("ca")});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("exists already"), std::string::npos) << again.err;
  RunResult twice = RunCommand({OneboxBin(), "cert", "issue", "--ca", Pki("ca"), "--out", Pki(""), "t1"});
  EXPECT_EQ(twice.exit_code, 1);
  RunResult bad = RunCommand({OneboxBin(), "cert", "issue", "--ca", Pki("ca"), "--out", Pki(""), "../t9"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("certificate name"), std::string::npos) << bad.err;
  // No extra name may pass for a role's (clients match names ignoring case
  // and a final dot, and take wildcards), nor smuggle one in after a comma.
  for (const char* san : {"node.onebox", "NODE.ONEBOX", "node.onebox.", "*.onebox", "x,DNS:node.onebox", "a b"}) {
    RunResult r = RunCommand({OneboxBin(), "cert", "issue", "--ca", Pki("ca"), "--out", Pki(""), "--admin", "--san",
                              san, "sneaky"});
    EXPECT_EQ(r.exit_code, 1) << san;
    EXPECT_NE(r.err.find("--san"), std::string::npos) << san << ": " << r.err;
  }
  RunResult good = RunCommand({OneboxBin(), "cert", "issue", "--ca", Pki("ca"), "--out", Pki(""), "--san", "10.1.2.3",
                               "--san", "db1.example", "t3"});
  EXPECT_EQ(good.exit_code, 0) << good.err;
  RunResult names = RunCommand({"openssl", "x509", "-in", Pki("t3.pem"), "-noout", "-ext", "subjectAltName,extendedKeyUsage"});
  EXPECT_NE(names.out.find("DNS:node.onebox, IP Address:10.1.2.3, DNS:db1.example"), std::string::npos) << names.out;
  // An admin's certificate is a client's only: it cannot serve as a node.
  RunResult usage = RunCommand({"openssl", "x509", "-in", Pki("ops.pem"), "-noout", "-ext", "extendedKeyUsage"});
  EXPECT_NE(usage.out.find("TLS Web Client Authentication"), std::string::npos) << usage.out;
  EXPECT_EQ(usage.out.find("Server"), std::string::npos) << usage.out;
}

TEST_F(TlsTest, AgentsOfOneCaReplicateAndANodeOfAnotherCaIsNotLetIn) {
  AgentProcess& a = StartAgent("t1", TlsArgs("t1"));
  AgentProcess& b = StartAgent("t2", TlsArgs("t2"), a.address());
  ASSERT_TRUE(WaitUntil([&] { return MemberNames(a) == std::vector<std::string>{"t1", "t2"}; }, seconds(10),
                        "t2 joins t1 over TLS"));
  ASSERT_EQ(Shell(a, "echo over-tls > /cluster/tls-file").exit_code, 0);
  EXPECT_TRUE(Eventually(b, "cat /cluster/tls-file", "over-tls\n"));

  // A node whose certificate another CA signed: its handshakes fail both ways.
  AgentProcess& intruder = StartAgent("intruder", TlsArgs("intruder", "other-ca"), a.address());
  for (int i = 0; i < 20; ++i) {  // 4 s: several gossip rounds
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ASSERT_EQ(MemberNames(a), (std::vector<std::string>{"t1", "t2"}));
  }
  std::vector<std::string> seen = MemberNames(intruder);
  EXPECT_EQ(seen, std::vector<std::string>{"intruder"}) << fmt::format("{}", fmt::join(seen, ","));
  EXPECT_NE(Shell(intruder, "cat /cluster/tls-file").exit_code, 0) << "the intruder got the cluster's file";

  // Peer methods, called directly: another CA's node certificate does not
  // get through the handshake; an admin's or none is no peer.
  for (const char* method : {"/onebox.v1.Peer/Gossip", "/onebox.v1.Peer/Replicate", "/onebox.v1.Peer/FetchChunk"}) {
    EXPECT_EQ(RawUnaryCall(ClientChannel(a, "intruder", "other-ca"), method, "").error_code(),
              grpc::StatusCode::UNAVAILABLE)
        << method;
    EXPECT_EQ(RawUnaryCall(ClientChannel(a, "ops"), method, "").error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << method;
    EXPECT_EQ(RawUnaryCall(ClientChannel(a, ""), method, "").error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << method;
  }
  EXPECT_NE(a.log().find("refused a peer call"), std::string::npos);

  // A client that trusts this cluster's CA but shows another CA's node
  // certificate: the server refuses it in the handshake.
  grpc::SslCredentialsOptions foreign;
  foreign.pem_root_certs = ReadFile(Pki("ca/ca.pem"));
  foreign.pem_cert_chain = ReadFile(Pki("intruder.pem"));
  foreign.pem_private_key = ReadFile(Pki("intruder.key"));
  grpc::ChannelArguments args;
  SetTlsChannelArgs(&args);
  auto channel = grpc::CreateCustomChannel(a.address(), grpc::SslCredentials(foreign), args);
  EXPECT_EQ(RawUnaryCall(channel, "/onebox.v1.Peer/Gossip", "").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(RawUnaryCall(channel, "/onebox.v1.Cluster/ListNodes", "").error_code(), grpc::StatusCode::UNAVAILABLE)
      << "a certificate shown must be the CA's, even for a read";
}

TEST_F(TlsTest, AnonymousClientsReadAndOnlyAnAdminCertificateWrites) {
  AgentProcess& a = StartAgent("t1", TlsArgs("t1"));
  EXPECT_EQ(Put(ClientChannel(a, ""), "k").error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Put(ClientChannel(a, "t2"), "k").error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << "a node's certificate is no admin's";
  EXPECT_EQ(Put(ClientChannel(a, "other-ops", "other-ca"), "k").error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(Put(ClientChannel(a, "ops"), "k").ok());

  // The CLI takes grpcurl's flags; without them it says the agent is not reached.
  std::vector<std::string> cli{OneboxBin(), "--agent", a.address(), "--cacert", Pki("ca/ca.pem")};
  auto run = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = cli;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunCommand(argv);
  };
  RunResult get = run({"kv", "get", "k"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "v\n");
  RunResult anonymous_put = run({"kv", "put", "k2", "x"});
  EXPECT_EQ(anonymous_put.exit_code, 1);
  RunResult admin_put = run({"--cert", Pki("ops.pem"), "--key", Pki("ops.key"), "kv", "put", "k2", "x"});
  EXPECT_EQ(admin_put.exit_code, 0) << admin_put.err;
  EXPECT_EQ(run({"kv", "get", "k2"}).out, "x\n");
  RunResult plain = RunCommand({OneboxBin(), "--agent", a.address(), "--timeout", "2", "kv", "get", "k"});
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_NE(plain.err.find("--cacert"), std::string::npos) << plain.err;
}

TEST_F(TlsTest, AnAgentRefusesBadTlsFilesAndAnOpenListenWithoutTls) {
  auto agent = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv{"timeout", "10", OneboxBin(), "agent", "--name", "bad", "--data-dir",
                                  dir_ / "bad-data", "--socket", dir_ / "bad.sock"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunCommand(argv);
  };
  RunResult open = agent({"--listen", "0.0.0.0:0"});
  EXPECT_EQ(open.exit_code, 1);
  EXPECT_NE(open.err.find("refusing to listen on 0.0.0.0 without TLS"), std::string::npos) << open.err;
  // The any address is no address the other agents can dial.
  for (const std::string any : {"0.0.0.0", "::"}) {
    RunResult wildcard = agent({"--listen", any.find(':') != std::string::npos ? "[" + any + "]:0" : any + ":0", "--insecure"});
    EXPECT_EQ(wildcard.exit_code, 1);
    EXPECT_NE(wildcard.err.find("cannot dial " + any), std::string::npos) << wildcard.err;
  }

  std::vector<std::string> admin_as_node = TlsArgs("ops");
  admin_as_node.insert(admin_as_node.end(), {"--listen", "127.0.0.1:0"});
  RunResult admin = agent(admin_as_node);
  EXPECT_EQ(admin.exit_code, 1);
  EXPECT_NE(admin.err.find("not a node certificate"), std::string::npos) << admin.err;

  RunResult mixed = agent({"--listen", "127.0.0.1:0", "--cacert", Pki("ca/ca.pem"), "--cert", Pki("t1.pem"), "--key",
                           Pki("t2.key")});
  EXPECT_EQ(mixed.exit_code, 1);
  EXPECT_NE(mixed.err.find("is not the key of"), std::string::npos) << mixed.err;

  RunResult foreign = agent({"--listen", "127.0.0.1:0", "--cacert", Pki("ca/ca.pem"), "--cert", Pki("intruder.pem"),
                             "--key", Pki("intruder.key")});
  EXPECT_EQ(foreign.exit_code, 1);
  EXPECT_NE(foreign.err.find("is not a certificate of the CA"), std::string::npos) << foreign.err;

  ASSERT_EQ(chmod(Pki("t1.key").c_str(), 0644), 0);
  std::vector<std::string> readable_key = TlsArgs("t1");
  readable_key.insert(readable_key.end(), {"--listen", "127.0.0.1:0"});
  RunResult readable = agent(readable_key);
  EXPECT_EQ(readable.exit_code, 1);
  EXPECT_NE(readable.err.find("readable by others"), std::string::npos) << readable.err;
}

}  // namespace
}  // namespace onebox::testing
