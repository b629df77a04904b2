// Membership: agents that --join one another list every member with its
// state, address and a cluster-unique index; a killed member turns suspect,
// then dead, and comes back alive (same id and index) when restarted.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

class ClusterTest : public ::testing::Test {
 protected:
  std::unique_ptr<AgentProcess> Agent(const std::string& name, const std::string& join = "") {
    std::vector<std::string> args{"--name", name, "--data-dir", dir_ / (name + "-data"), "--listen", "127.0.0.1:0",
                                  "--socket", dir_ / (name + ".sock")};
    if (!join.empty()) {
      args.push_back("--join");
      args.push_back(join);
    }
    return AgentProcess::WithArgs(args, dir_ / (name + ".sock"), dir_ / (name + ".log"));
  }
  static std::vector<v1::Node> Nodes(AgentProcess& a) {
    v1::ListNodesResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
    EXPECT_TRUE(v1::Cluster::NewStub(a.channel())->ListNodes(&ctx, {}, &r).ok());
    return {r.nodes().begin(), r.nodes().end()};
  }
  // Waits until a lists every name in want with the given state.
  ::testing::AssertionResult WaitForStates(AgentProcess& a, const std::map<std::string, v1::NodeState>& want,
                                           seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last;
    while (std::chrono::steady_clock::now() < deadline) {
      std::map<std::string, v1::NodeState> got;
      last.clear();
      for (const v1::Node& n : Nodes(a)) {
        got[n.name()] = n.state();
        last += n.name() + "=" + v1::NodeState_Name(n.state()) + " ";
      }
      if (got == want) return ::testing::AssertionSuccess();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return ::testing::AssertionFailure() << "states never became as wanted; last: " << last;
  }

  // a, then b and c joining a; returns once each sees all three alive.
  void StartThree() {
    a = Agent("a");
    ASSERT_TRUE(a->Start());
    b = Agent("b", a->address());
    c = Agent("c", a->address());
    ASSERT_TRUE(b->Start());
    ASSERT_TRUE(c->Start());
    for (AgentProcess* agent : {a.get(), b.get(), c.get()}) ASSERT_TRUE(WaitForStates(*agent, all_alive, seconds(10)));
  }

  TempDir dir_;
  std::unique_ptr<AgentProcess> a, b, c;
  const std::map<std::string, v1::NodeState> all_alive{
      {"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_ALIVE}};
};

TEST_F(ClusterTest, JoinedAgentsListEachOtherThenNoticeAFailureAndARecovery) {
  StartThree();
  if (HasFatalFailure()) return;

  // Indexes: chosen once gossip has settled, distinct, the same seen from anywhere.
  std::map<std::string, uint32_t> index_of;
  auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    std::set<uint32_t> distinct;
    index_of.clear();
    for (const v1::Node& n : Nodes(*b)) {
      index_of[n.name()] = n.index();
      if (n.index() != 0) distinct.insert(n.index());
    }
    if (distinct.size() == 3) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(index_of.size(), 3u);
  std::set<uint32_t> distinct;
  for (auto& [name, idx] : index_of) distinct.insert(idx);
  EXPECT_EQ(distinct, (std::set<uint32_t>{1, 2, 3}));
  std::string c_id;
  for (const v1::Node& n : Nodes(*a)) {
    if (n.name() == "c") c_id = n.node_id();
    EXPECT_EQ(n.self(), n.name() == "a");
  }
  // The CLI shows them all.
  RunResult cli = RunCommand({OneboxBin(), "--agent", a->address(), "nodes"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(std::count(cli.out.begin(), cli.out.end(), '\n'), 4) << cli.out;

  // c fails: suspect, then dead, as a and b see it.
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  EXPECT_TRUE(WaitForStates(*a, {{"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_SUSPECT}},
                            seconds(6)));
  EXPECT_TRUE(WaitForStates(*b, {{"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_DEAD}},
                            seconds(20)));

  // c comes back (on another port): alive again, same id and index, new address.
  ASSERT_TRUE(c->Start());
  EXPECT_TRUE(WaitForStates(*a, all_alive, seconds(10)));
  for (const v1::Node& n : Nodes(*a)) {
    if (n.name() != "c") continue;
    EXPECT_EQ(n.node_id(), c_id);
    EXPECT_EQ(n.index(), index_of["c"]);
    EXPECT_EQ(n.address(), c->address());
  }
}

grpc::Status Put(AgentProcess& a, const std::string& key, const std::string& value) {
  v1::PutRequest q;
  q.set_key(key);
  q.set_value(value);
  v1::PutResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
  return v1::Store::NewStub(a.channel())->Put(&ctx, q, &r);
}

std::string Digest(AgentProcess& a) {
  v1::StatusResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
  EXPECT_TRUE(v1::Cluster::NewStub(a.channel())->Status(&ctx, {}, &r).ok());
  return r.state_digest();
}

// Waits until every agent reports the same state digest.
::testing::AssertionResult Converge(const std::vector<AgentProcess*>& agents, seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    std::set<std::string> digests;
    last.clear();
    for (AgentProcess* agent : agents) {
      std::string d = Digest(*agent);
      digests.insert(d);
      last += d.substr(0, 8) + " ";
    }
    if (digests.size() == 1) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return ::testing::AssertionFailure() << "digests never agreed: " << last;
}

TEST_F(ClusterTest, WritesReachEveryNodeAndADownNodeCatchesUp) {
  StartThree();
  if (HasFatalFailure()) return;

  ASSERT_TRUE(Put(*a, "from/a", "1").ok());
  ASSERT_TRUE(Put(*b, "from/b", "2").ok());
  // A file written through the shim on a: its metadata reaches b and c.
  RunResult shim = RunCommand({"bash", "-c", "echo replicated > /cluster/r.txt"},
                              {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
  ASSERT_EQ(shim.exit_code, 0) << shim.err;
  // a records the file when its writer closes it (the creation may be recorded
  // first, empty): only then is there something to converge on.
  auto recorded = [](AgentProcess& agent) {
    v1::StatRequest sq;
    sq.set_path("/cluster/r.txt");
    v1::StatResponse sr;
    grpc::ClientContext sctx;
    return v1::Namespace::NewStub(agent.channel())->Stat(&sctx, sq, &sr).ok() && sr.found() &&
           sr.inode().size() == 11u;
  };
  for (auto deadline = std::chrono::steady_clock::now() + seconds(10);
       !recorded(*a) && std::chrono::steady_clock::now() < deadline;)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(recorded(*a));
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(10)));
  for (AgentProcess* agent : {b.get(), c.get()}) {
    v1::GetRequest q;
    q.set_key("from/a");
    v1::GetResponse r;
    grpc::ClientContext ctx;
    ASSERT_TRUE(v1::Store::NewStub(agent->channel())->Get(&ctx, q, &r).ok());
    EXPECT_EQ(r.value(), "1");
    v1::StatRequest sq;
    sq.set_path("/cluster/r.txt");
    v1::StatResponse sr;
    grpc::ClientContext sctx;
    ASSERT_TRUE(v1::Namespace::NewStub(agent->channel())->Stat(&sctx, sq, &sr).ok());
    EXPECT_TRUE(sr.found());
    EXPECT_EQ(sr.inode().size(), 11u);
  }

  // c is down while a and b write, delete, and race on one key.
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Put(*a, "while-down/" + std::to_string(i), "v").ok());
  {
    v1::DeleteRequest q;
    q.set_key("from/b");
    v1::DeleteResponse r;
    grpc::ClientContext ctx;
    ASSERT_TRUE(v1::Store::NewStub(b->channel())->Delete(&ctx, q, &r).ok());
  }
  std::thread racer([&] {
    for (int i = 0; i < 20; ++i) (void)Put(*a, "race", "a" + std::to_string(i));
  });
  for (int i = 0; i < 20; ++i) (void)Put(*b, "race", "b" + std::to_string(i));
  racer.join();
  ASSERT_TRUE(c->Start());  // on another port: it gossips, is found alive, and is sent what it missed
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
  v1::ScanRequest q;
  q.set_prefix("while-down/");
  q.set_limit(1000);
  v1::ScanResponse r;
  grpc::ClientContext ctx;
  ASSERT_TRUE(v1::Store::NewStub(c->channel())->Scan(&ctx, q, &r).ok());
  EXPECT_EQ(r.entries_size(), 50);
  std::set<std::string> race_values;
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    v1::GetRequest g;
    g.set_key("race");
    v1::GetResponse gr;
    grpc::ClientContext gctx;
    ASSERT_TRUE(v1::Store::NewStub(agent->channel())->Get(&gctx, g, &gr).ok());
    race_values.insert(gr.value());
    v1::GetRequest d;
    d.set_key("from/b");
    v1::GetResponse dr;
    grpc::ClientContext dctx;
    ASSERT_TRUE(v1::Store::NewStub(agent->channel())->Get(&dctx, d, &dr).ok());
    EXPECT_FALSE(dr.found()) << "the delete did not reach every node";
  }
  EXPECT_EQ(race_values.size(), 1u) << "concurrent writes did not resolve alike everywhere";
}

}  // namespace
}  // namespace onebox::testing
