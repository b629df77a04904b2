// Three agents on loopback for the tests of the file half across nodes
// (cluster_test.cc, locks_test.cc): a, then b and c joining it, with their
// sockets, data dirs and logs in a temp dir, kept when a test fails.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "onebox/v1/cluster.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {

using std::chrono::seconds;

class ClusterTest : public ::testing::Test {
 protected:
  std::unique_ptr<AgentProcess> Agent(const std::string& name, const std::string& join = "") {
    std::vector<std::string> args{"--name", name, "--data-dir", dir_ / (name + "-data"), "--listen", "127.0.0.1:0",
                                  "--socket", dir_ / (name + ".sock")};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
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
    grpc::Status listed = v1::Cluster::NewStub(a.channel())->ListNodes(&ctx, {}, &r);
    EXPECT_TRUE(listed.ok()) << listed.error_message();
    return {r.nodes().begin(), r.nodes().end()};
  }
  // Waits until a lists every name in want with the given state.
  ::testing::AssertionResult WaitForStates(AgentProcess& a, const std::map<std::string, v1::NodeState>& want,
                                           seconds timeout) {
    std::string wanted;
    for (const auto& [name, state] : want) wanted += name + "=" + v1::NodeState_Name(state) + " ";
    return WaitUntil(
        [&] {
          std::map<std::string, v1::NodeState> got;
          std::string seen;
          for (const v1::Node& n : Nodes(a)) {
            got[n.name()] = n.state();
            seen += n.name() + "=" + v1::NodeState_Name(n.state()) + " ";
          }
          return ::testing::AssertionResult(got == want) << seen;
        },
        timeout, a.address() + " lists " + wanted);
  }
  // a, then b and c joining a; returns once each sees all three alive.
  void StartThree() {
    a = Agent("a");
    if (!a_prefix_.empty()) a->set_command_prefix(a_prefix_);
    ASSERT_TRUE(a->Start());
    b = Agent("b", a->address());
    c = Agent("c", a->address());
    ASSERT_TRUE(b->Start());
    ASSERT_TRUE(c->Start());
    for (AgentProcess* agent : {a.get(), b.get(), c.get()}) ASSERT_TRUE(WaitForStates(*agent, all_alive, seconds(10)));
  }

  // Waits until python script, run under the shim on agent, prints want.
  ::testing::AssertionResult PrintsUnderShim(AgentProcess& agent, const std::string& script, const std::string& want,
                                             seconds timeout = seconds(15)) {
    return WaitUntil(
        [&] {
          RunResult r = RunCommand({"/usr/bin/python3", "-c", script},
                                   {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent.socket()}});
          return ::testing::AssertionResult(r.out == want) << r.out << r.err;
        },
        timeout, agent.address() + " prints " + want);
  }

  // Runs python script (argv: arg, a marker path) under the shim on agent;
  // once the script creates the marker (its files still open), calls
  // while_open, then removes the marker, which lets the script end.
  RunResult RunWhileOpen(AgentProcess& agent, const std::string& script, const std::string& arg, seconds timeout,
                         const std::function<void()>& while_open) {
    std::string marker = dir_ / "script-paused";
    RunResult r;
    std::atomic<bool> ended = false;
    std::thread writer([&] {
      r = RunCommand({"/usr/bin/python3", "-c", script, arg, marker},
                     {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent.socket()}});
      ended = true;
    });
    EXPECT_TRUE(WaitUntil([&] { return std::filesystem::exists(marker) || ended; }, timeout,
                          "the script has made its marker (or ended)", std::chrono::milliseconds(10)));
    while_open();
    std::filesystem::remove(marker);
    writer.join();
    return r;
  }

  void TearDown() override { KeepLogsIfFailed(dir_.path(), {a.get(), b.get(), c.get()}); }

  TempDir dir_;
  std::vector<std::string> a_prefix_;    // a command StartThree runs a under (which execs it)
  std::vector<std::string> extra_args_;  // for every agent started after it is set
  std::unique_ptr<AgentProcess> a, b, c;
  const std::map<std::string, v1::NodeState> all_alive{
      {"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_ALIVE}};
};

}  // namespace onebox::testing
