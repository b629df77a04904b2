// The fixture of the process tests (process_test.cc, placement_test.cc):
// three agents n1..n3, each in a node of its own, with its own pid, mount
// and network namespaces (node_spaces.h), a cluster directory /cluster/w
// that every node sees, and what the tests run there.
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/util/json_util.h>

#include "onebox/v1/cluster.pb.h"
#include "onebox/v1/process.pb.h"
#include "proto/gpid.h"
#include "tests/integration/harness.h"
#include "tests/integration/node_spaces.h"
#include "tests/test_util.h"

namespace onebox::testing {

// Three agents n1..n3, agent i in node i's namespaces, and what the tests run there.
class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nodes_ = std::make_unique<Nodes>(3);
    if (!nodes_->net().ok()) GTEST_SKIP() << "cannot make network namespaces here: " << nodes_->net().error();
    ASSERT_TRUE(nodes_->Made());
    ASSERT_EQ(chmod(dir_.path().c_str(), 0755), 0);  // other users reach the sockets
    for (int i = 1; i <= 3; ++i) {
      agents_.push_back(AgentInNode(*nodes_, i, Name(i), dir_.path(), AgentArgs(i)));
      ASSERT_TRUE(agents_.back()->Start());
    }
    // Every node knows the three, alive, each with its index, and sees the
    // others' indexes as they are (gossip brings them a round or two later).
    ASSERT_TRUE(WaitUntil(
        [&] {
          std::string seen;
          std::vector<std::set<uint32_t>> views;
          for (int i = 1; i <= 3; ++i) {
            index_[i] = 0;
            RunResult r = Onebox(i, {"status", "-o", "json"});
            v1::StatusResponse st;
            if (r.exit_code == 0 && google::protobuf::util::JsonStringToMessage(r.out, &st).ok())
              index_[i] = st.node().index();
            RunResult nodes = Onebox(i, {"nodes", "-o", "json"});
            v1::ListNodesResponse listed;
            std::set<uint32_t> view;
            size_t alive = 0;
            if (nodes.exit_code == 0 && google::protobuf::util::JsonStringToMessage(nodes.out, &listed).ok())
              for (const v1::Node& n : listed.nodes())
                if (n.state() == v1::NODE_STATE_ALIVE) {
                  ++alive;
                  view.insert(n.index());
                }
            views.push_back(view);
            seen += fmt::format("n{}: index {}, {} alive, sees indexes {}; ", i, index_[i], alive, fmt::join(view, ","));
            if (index_[i] == 0 || alive != 3) return Observed(false, seen);
          }
          // Two nodes that chose before hearing of each other may hold one index for a moment.
          std::set<uint32_t> own{index_[1], index_[2], index_[3]};
          bool agreed = own.size() == 3;
          for (const std::set<uint32_t>& view : views) agreed = agreed && view == own;
          return Observed(agreed, seen);
        },
        std::chrono::seconds(30), "three nodes alive, each with an index of its own that every node sees"));
    ASSERT_EQ(std::set<uint32_t>({index_[1], index_[2], index_[3]}).size(), 3u);
    RunResult made = Sh(1, "mkdir -p /cluster/w && echo ready > /cluster/w/ready");
    ASSERT_EQ(made.exit_code, 0) << made.err;
    for (int i = 2; i <= 3; ++i) ASSERT_TRUE(Eventually(*agents_[i - 1], "cat /cluster/w/ready", "ready\n", std::chrono::seconds(20)));
  }
  void TearDown() override {
    std::vector<AgentProcess*> agents;
    for (auto& a : agents_) agents.push_back(a.get());
    KeepLogsIfFailed(dir_.path(), agents);
  }

  // More arguments for agent i (TLS files, say), and for every CLI call.
  virtual std::vector<std::string> AgentArgs(int i) { return {}; }
  virtual std::vector<std::string> CliArgs() { return {}; }

  static std::string Name(int i) { return fmt::format("n{}", i); }
  std::string Socket(int i) const { return dir_ / (Name(i) + ".sock"); }
  NodeSpaces& Node(int i) const { return (*nodes_)[i]; }
  std::map<std::string, std::string> ShimEnv(int i) const {
    return {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", Socket(i)}};
  }
  // `onebox ARGS` run in node i, through node i's agent.
  RunResult Onebox(int i, std::vector<std::string> args, const std::string& stdin_data = "") {
    args.insert(args.begin(), {OneboxBin(), "--socket", Socket(i)});
    std::vector<std::string> more = CliArgs();
    args.insert(args.begin() + 3, more.begin(), more.end());
    return RunInNode(Node(i), args, {{"ONEBOX_SOCKET", Socket(i)}}, stdin_data);
  }
  // bash -c cmd in node i under the shim, from /cluster/w.
  RunResult Sh(int i, const std::string& cmd, const std::string& stdin_data = "") {
    return RunInNode(Node(i), {"bash", "-c", "cd /cluster/w 2>/dev/null; " + cmd}, ShimEnv(i), stdin_data);
  }
  int64_t Gpid(int node, pid_t inner) const { return gpid::Make(index_.at(node), inner); }
  v1::ListProcessesResponse Ps(int i, std::vector<std::string> args = {}) {
    args.insert(args.begin(), {"ps", "-o", "json"});
    RunResult r = Onebox(i, args);
    v1::ListProcessesResponse resp;
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &resp).ok()) << r.out;
    return resp;
  }
  // Whether node i's kernel has a process with this (inner) pid.
  bool Alive(int i, pid_t inner) { return RunInNode(Node(i), {"kill", "-0", std::to_string(inner)}).exit_code == 0; }

  std::unique_ptr<Nodes> nodes_;  // before the agents: they end first
  TempDir dir_;
  std::vector<std::unique_ptr<AgentProcess>> agents_;
  std::map<int, uint32_t> index_;
};

}  // namespace onebox::testing
