// Test nodes with namespaces of their own (node_spaces.h), proved with real
// programs. A program in one node has a small pid there, and no other node
// can see it. Each node's 127.0.0.1 is its own. The end of a node's holder
// ends every program in the node. The test still signals and waits for a
// program by its real pid. Three agents, each in its own node, converge and
// share files through the shim. Process tests across nodes (cluster-wide
// pids, killing a pid on another node) rely on this: they must not pass just
// because every node runs in one pid space.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "tests/integration/harness.h"
#include "tests/integration/node_spaces.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

// What /proc/PID/ns/KIND names (e.g. "pid:[4026531836]"); "" if unreadable.
std::string NamespaceOf(pid_t pid, const std::string& kind) {
  std::error_code ec;
  return std::filesystem::read_symlink(fmt::format("/proc/{}/ns/{}", pid, kind), ec).string();
}

// Waits until the real pid runs `program` (Spawn returns before its exec).
::testing::AssertionResult Runs(pid_t pid, const std::string& program) {
  return WaitUntil(
      [&] {
        std::string comm = ReadFile(fmt::format("/proc/{}/comm", pid));
        return Observed(comm == program + "\n", comm);
      },
      seconds(10), fmt::format("pid {} runs {}", pid, program));
}

// The real pid of the process of node that the node calls inner (looked
// for in the test's /proc); -1 if there is none.
pid_t RealPidOf(const NodeSpaces& node, pid_t inner) {
  const std::string space = NamespaceOf(node.holder_pid(), "pid");
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = std::stoi(name);
    if (InnerPid(pid) == inner && NamespaceOf(pid, "pid") == space) return pid;
  }
  return -1;
}

// Skips the test where namespaces cannot be made (not root, no ip), as
// PartitionTest does; fails it if the network was made but a node's pid and
// mount namespaces were not.
#define SKIP_UNLESS_NODES_CAN_BE_MADE(nodes)                                          \
  if (!(nodes).net().ok())                                                            \
    GTEST_SKIP() << "cannot make network namespaces here: " << (nodes).net().error(); \
  ASSERT_TRUE((nodes).Made())

TEST(NodeSpacesTest, AProgramInOneNodeHasASmallPidThereAndNoOtherNodeSeesIt) {
  Nodes nodes(2);
  SKIP_UNLESS_NODES_CAN_BE_MADE(nodes);
  // Node 1 uses up some pids first, so its sleeper's pid cannot also be that of
  // node 2's checking shell: a fresh node numbers its programs 2, 3, ...
  ASSERT_EQ(RunInNode(nodes[1], {"bash", "-c", "for i in $(seq 10); do /bin/true; done"}).exit_code, 0);
  NodeProcess sleeper(nodes[1], {"sleep", "1001"});
  ASSERT_TRUE(sleeper.ok()) << sleeper.error();
  ASSERT_TRUE(Runs(sleeper.pid(), "sleep")) << "the real pid is the program's own, not a wrapper's";
  const pid_t inner = sleeper.inner_pid();
  EXPECT_GT(inner, 10);
  EXPECT_LT(inner, 100) << "a node numbers its processes afresh";
  EXPECT_NE(inner, sleeper.pid());
  EXPECT_EQ(InnerPid(nodes[1].holder_pid()), 1);

  // Its namespaces are node 1's, none of them the test's.
  const pid_t test = getpid();
  for (const char* kind : {"pid", "mnt", "net"}) {
    EXPECT_EQ(NamespaceOf(sleeper.pid(), kind), NamespaceOf(nodes[1].holder_pid(), kind)) << kind;
    EXPECT_NE(NamespaceOf(sleeper.pid(), kind), NamespaceOf(test, kind)) << kind;
    EXPECT_NE(NamespaceOf(sleeper.pid(), kind), NamespaceOf(nodes[2].holder_pid(), kind)) << kind;
  }
  struct stat named, entered;
  ASSERT_EQ(stat(("/run/netns/" + nodes.net().Ns(1)).c_str(), &named), 0);
  ASSERT_EQ(stat(fmt::format("/proc/{}/ns/net", sleeper.pid()).c_str(), &entered), 0);
  EXPECT_EQ(named.st_ino, entered.st_ino) << "it runs in the Network's namespace of node 1";

  // Node 1's /proc is its own: the holder is its PID 1, and the sleeper is
  // there under its inner pid.
  EXPECT_EQ(RunInNode(nodes[1], {"cat", "/proc/1/comm"}).out, "node_init\n");
  const std::string probe = fmt::format("kill -0 {0} && tr '\\0' ' ' < /proc/{0}/cmdline", inner);
  RunResult in_1 = RunInNode(nodes[1], {"bash", "-c", probe});
  EXPECT_EQ(in_1.exit_code, 0) << in_1.err;
  EXPECT_EQ(in_1.out, "sleep 1001 ");
  RunResult in_2 = RunInNode(nodes[2], {"bash", "-c", probe});
  EXPECT_NE(in_2.exit_code, 0) << "node 2 sees node 1's pid " << inner << ": " << in_2.out;
  EXPECT_NE(in_2.err.find("No such process"), std::string::npos) << in_2.err;

  // Node 2 lists nothing of node 1; node 1 lists the sleeper.
  const std::string listing = "cat /proc/[0-9]*/cmdline | tr '\\0' ' '";
  EXPECT_EQ(RunInNode(nodes[2], {"bash", "-c", listing}).out.find("sleep 1001"), std::string::npos);
  EXPECT_NE(RunInNode(nodes[1], {"bash", "-c", listing}).out.find("sleep 1001"), std::string::npos);
}

TEST(NodeSpacesTest, TheTestSignalsAndWaitsForAProgramInANodeByItsRealPid) {
  Nodes nodes(1);
  SKIP_UNLESS_NODES_CAN_BE_MADE(nodes);
  NodeProcess sleeper(nodes[1], {"sleep", "1002"});
  ASSERT_TRUE(sleeper.ok()) << sleeper.error();
  ASSERT_TRUE(Runs(sleeper.pid(), "sleep"));
  // Stopped and continued from the test; the node sees its state change.
  auto state_in_node = [&](const std::string& want) {
    return WaitUntil(
        [&] {
          std::string status = fmt::format("/proc/{}/status", sleeper.inner_pid());
          RunResult r = RunInNode(nodes[1], {"grep", "^State:", status});
          return Observed(r.out.find(want) != std::string::npos, r.out + r.err);
        },
        seconds(10), "node 1 sees the sleeper in state " + want);
  };
  ASSERT_TRUE(sleeper.Kill(SIGSTOP));
  EXPECT_TRUE(state_in_node("T (stopped)"));
  ASSERT_TRUE(sleeper.Kill(SIGCONT));
  EXPECT_TRUE(state_in_node("S (sleeping)"));
  EXPECT_EQ(sleeper.Wait(std::chrono::milliseconds(0)), NodeProcess::kStillRunning);
  ASSERT_TRUE(sleeper.Kill(SIGTERM));
  EXPECT_EQ(sleeper.Wait(), -SIGTERM);
  EXPECT_FALSE(sleeper.running());
  EXPECT_FALSE(sleeper.Kill(SIGKILL)) << "a program waited for is never signalled again";
  errno = 0;
  EXPECT_NE(kill(sleeper.pid(), 0), 0);
  EXPECT_EQ(errno, ESRCH) << "reaped: the real pid is gone";

  // RunInNode is RunCommand inside: exit codes, signals, stdin, stdout, stderr, env, cwd.
  EXPECT_EQ(RunInNode(nodes[1], {"bash", "-c", "exit 3"}).exit_code, 3);
  EXPECT_EQ(RunInNode(nodes[1], {"bash", "-c", "kill -KILL $$"}).exit_code, -SIGKILL);
  RunResult fed = RunInNode(nodes[1], {"bash", "-c", "cat; echo \"$GREETING\" >&2"}, {{"GREETING", "hi"}}, "fed\n");
  EXPECT_EQ(fed.exit_code, 0);
  EXPECT_EQ(fed.out, "fed\n");
  EXPECT_EQ(fed.err, "hi\n");
  std::error_code ec;
  EXPECT_EQ(RunInNode(nodes[1], {"pwd", "-P"}).out, std::filesystem::current_path(ec).string() + "\n");
  RunResult missing = RunInNode(nodes[1], {"/nonexistent/program"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_EQ(missing.err, "exec failed\n");
}

TEST(NodeSpacesTest, EachNodesLoopbackIsItsOwn) {
  Nodes nodes(2);
  SKIP_UNLESS_NODES_CAN_BE_MADE(nodes);
  TempDir dir;
  const std::string port = "7171";
  const std::string listener_py =
      "import socket, sys\n"
      "s = socket.socket()\n"
      "s.bind(('127.0.0.1', int(sys.argv[2])))\n"
      "s.listen()\n"
      "while True:\n"
      "    c, _ = s.accept()\n"
      "    c.sendall((sys.argv[1] + '\\n').encode())\n"
      "    c.close()\n";
  const std::string client_py =
      "import socket, sys\n"
      "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
      "print(b''.join(iter(lambda: s.recv(100), b'')).decode(), end='')\n";
  auto ask_from = [&](int node) { return RunInNode(nodes[node], {"/usr/bin/python3", "-c", client_py, port}); };
  auto answered_by = [&](int asking, const std::string& who) {
    return WaitUntil(
        [&] {
          RunResult r = ask_from(asking);
          return Observed(r.out == who + "\n", r.out + r.err);
        },
        seconds(10), fmt::format("127.0.0.1:{} in node {} answers {}", port, asking, who));
  };
  NodeProcess listener_1(nodes[1], {"/usr/bin/python3", "-c", listener_py, "node1", port}, {}, dir / "listener1.log");
  ASSERT_TRUE(listener_1.ok()) << listener_1.error();
  ASSERT_TRUE(answered_by(1, "node1")) << ReadFile(dir / "listener1.log");
  RunResult from_2 = ask_from(2);
  EXPECT_NE(from_2.exit_code, 0) << from_2.out;
  EXPECT_NE(from_2.err.find("ConnectionRefusedError"), std::string::npos) << from_2.err;
  // The same port is free in node 2: a listener there binds it, and each
  // node reaches its own.
  NodeProcess listener_2(nodes[2], {"/usr/bin/python3", "-c", listener_py, "node2", port}, {}, dir / "listener2.log");
  ASSERT_TRUE(listener_2.ok()) << listener_2.error();
  ASSERT_TRUE(answered_by(2, "node2")) << ReadFile(dir / "listener2.log");
  EXPECT_EQ(ask_from(1).out, "node1\n");
}

TEST(NodeSpacesTest, TheEndOfTheHolderEndsEveryProgramOfItsNode) {
  Nodes nodes(1);
  SKIP_UNLESS_NODES_CAN_BE_MADE(nodes);
  NodeProcess sleeper(nodes[1], {"sleep", "1003"});
  ASSERT_TRUE(sleeper.ok()) << sleeper.error();
  // An orphan: its shell exits at once, and the node's PID 1 (the holder), not
  // the test, adopts it.
  RunResult made = RunInNode(nodes[1], {"bash", "-c", "sleep 1004 </dev/null >/dev/null 2>&1 & echo $!"});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const pid_t orphan_inner = std::stoi(made.out);
  EXPECT_TRUE(WaitUntil(
      [&] {
        RunResult r = RunInNode(nodes[1], {"grep", "^PPid:", fmt::format("/proc/{}/status", orphan_inner)});
        return Observed(r.out == "PPid:\t1\n", r.out + r.err);
      },
      seconds(10), "the holder adopts the orphan"));
  const pid_t orphan = RealPidOf(nodes[1], orphan_inner);
  ASSERT_GT(orphan, 0);
  ASSERT_TRUE(Runs(orphan, "sleep"));

  ASSERT_EQ(kill(nodes[1].holder_pid(), SIGKILL), 0);
  EXPECT_EQ(sleeper.Wait(), -SIGKILL) << "the kernel kills every process of a pid namespace whose init ends";
  EXPECT_TRUE(WaitUntil([&] { return !std::filesystem::exists(fmt::format("/proc/{}", orphan)); }, seconds(10),
                        "the orphan is gone"));
  RunResult after = RunInNode(nodes[1], {"true"});
  EXPECT_EQ(after.exit_code, -1) << "nothing starts in a node whose holder ended";
  EXPECT_FALSE(after.err.empty());
}

// Declared after the agents and their dir: if the test failed, keeps the
// agents' logs (KeepLogsIfFailed) before they and the dir go.
class KeepLogsOf {
 public:
  KeepLogsOf(const TempDir& dir, const std::vector<std::unique_ptr<AgentProcess>>& agents)
      : dir_(dir), agents_(agents) {}
  ~KeepLogsOf() {
    std::vector<AgentProcess*> agents;
    for (const auto& a : agents_) agents.push_back(a.get());
    KeepLogsIfFailed(dir_.path(), agents);
  }

 private:
  const TempDir& dir_;
  const std::vector<std::unique_ptr<AgentProcess>>& agents_;
};

TEST(NodeSpacesTest, ThreeAgentsEachInItsOwnNodeConvergeAndShareFiles) {
  Nodes nodes(3);
  SKIP_UNLESS_NODES_CAN_BE_MADE(nodes);
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> agents;  // after the nodes: ended and reaped before them
  KeepLogsOf keep_logs(dir, agents);
  for (int i = 1; i <= 3; ++i) {
    agents.push_back(AgentInNode(nodes, i, fmt::format("s{}", i), dir.path(), {"--log-level", "debug"}));
    ASSERT_TRUE(agents.back()->Start());
  }
  AgentProcess &a = *agents[0], &b = *agents[1], &c = *agents[2];
  std::set<std::string> pid_spaces;
  for (AgentProcess* agent : {&a, &b, &c}) {
    ASSERT_TRUE(Runs(agent->pid(), "onebox-core"));
    EXPECT_LT(InnerPid(agent->pid()), 100);
    pid_spaces.insert(NamespaceOf(agent->pid(), "pid"));
  }
  pid_spaces.insert(NamespaceOf(getpid(), "pid"));
  EXPECT_EQ(pid_spaces.size(), 4u) << "each agent in a pid namespace of its own, none the test's";

  ASSERT_TRUE(Converge({&a, &b, &c}, seconds(20)));
  // Shell runs in the agent's node: the node's holder is its PID 1, and the
  // agent is there under its inner pid.
  EXPECT_EQ(Shell(a, "cat /proc/1/comm").out, "node_init\n");
  EXPECT_EQ(Shell(c, fmt::format("cat /proc/{}/comm", InnerPid(c.pid()))).out, "onebox-core\n");
  RunResult wrote = Shell(a, "mkdir -p /cluster/spaces && echo across > /cluster/spaces/f");
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  EXPECT_TRUE(Eventually(c, "cat /cluster/spaces/f", "across\n", seconds(20)));
  EXPECT_TRUE(Eventually(b, "cat /cluster/spaces/f", "across\n", seconds(20)));
}

TEST(NodeSpacesTest, AnAgentInANodeStoppedWithSigkillIsGoneByItsRealPid) {
  Nodes nodes(1);
  SKIP_UNLESS_NODES_CAN_BE_MADE(nodes);
  TempDir dir;
  AgentProcess agent("k1", dir / "k1-data", dir / "k1.sock", nodes.net().Address(1) + ":7070");
  agent.set_spaces(&nodes[1]);
  ASSERT_TRUE(agent.Start());
  const pid_t pid = agent.pid();
  ASSERT_TRUE(Runs(pid, "onebox-core"));  // the front (onebox) execs the agent
  const pid_t inner = InnerPid(pid);
  EXPECT_EQ(RunInNode(nodes[1], {"bash", "-c", fmt::format("kill -0 {}", inner)}).exit_code, 0);

  EXPECT_EQ(agent.Stop(SIGKILL), -SIGKILL);
  EXPECT_FALSE(agent.running());
  errno = 0;
  EXPECT_NE(kill(pid, 0), 0);
  EXPECT_EQ(errno, ESRCH) << "the agent is gone and reaped";
  // Pids in a node are handed out upwards, so no later process of it has the agent's.
  RunResult in_node = RunInNode(nodes[1], {"bash", "-c", fmt::format("kill -0 {}", inner)});
  EXPECT_NE(in_node.exit_code, 0);
  EXPECT_NE(in_node.err.find("No such process"), std::string::npos) << in_node.err;

  // It starts again in the same node (a new pid), and answers.
  ASSERT_TRUE(agent.Start());
  EXPECT_NE(agent.pid(), pid);
  EXPECT_EQ(NamespaceOf(agent.pid(), "pid"), NamespaceOf(nodes[1].holder_pid(), "pid"));
  EXPECT_EQ(agent.Stop(SIGTERM), 0) << agent.log();
}

}  // namespace
}  // namespace onebox::testing
