// Membership: agents that --join one another list every member with its
// state, address and a cluster-unique index; a killed member turns suspect,
// then dead, and comes back alive (same id and index) when restarted.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "onebox/v1/cluster.grpc.pb.h"
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

  TempDir dir_;
};

TEST_F(ClusterTest, JoinedAgentsListEachOtherThenNoticeAFailureAndARecovery) {
  auto a = Agent("a");
  ASSERT_TRUE(a->Start());
  auto b = Agent("b", a->address());
  auto c = Agent("c", a->address());
  ASSERT_TRUE(b->Start());
  ASSERT_TRUE(c->Start());
  std::map<std::string, v1::NodeState> all_alive{
      {"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_ALIVE}};
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) ASSERT_TRUE(WaitForStates(*agent, all_alive, seconds(10)));

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

}  // namespace
}  // namespace onebox::testing
