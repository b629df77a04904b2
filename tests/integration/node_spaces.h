// Test nodes that share one kernel but not its namespaces. A Network is a
// bridge with one network namespace per node behind it, on a private /24.
// NodeSpaces gives node i a pid namespace and a mount namespace (with a /proc
// of its own) as well, inside its network namespace. The test can start
// programs there and still signal and wait for them by their real pid, so a
// process test cannot pass just because every node shares one pid space.
// Everything made here is removed by the names or pids it was made with,
// never by a program's name.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace onebox::testing {

class AgentProcess;

// The path of ip(8) (iproute2); "" if there is none.
std::string IpTool();
// The path of the node's init (tests/tools/node_init.c), compiled in by CMake.
std::string NodeInitBin();

// A bridge and N namespaces behind it, removed (by the names made here) at the end.
class Network {
 public:
  explicit Network(int nodes);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  std::string Ns(int i) const;
  std::string Veth(int i) const;
  std::string Address(int i) const;
  std::vector<std::string> Inside(int i) const { return {ip_, "netns", "exec", Ns(i)}; }
  // Cuts node i off (its link on the bridge goes down), or heals it.
  bool SetLink(int i, bool up) { return Ip({"link", "set", Veth(i), up ? "up" : "down"}); }

 private:
  bool Ip(std::vector<std::string> args);
  std::string ip_, tag_, subnet_, error_;
  bool ok_ = false, made_bridge_ = false;
  std::vector<std::string> namespaces_;
};

// The standard streams of a program started in a node: -1 keeps the test's own.
struct Stdio {
  int in = -1;
  int out = -1;
  int err = -1;
};

// The pid that the innermost pid namespace of process pid (a real pid, as
// the test sees it) gives it: for a program in a node, the pid the node sees.
// It is the last field of the NSpid line of /proc/PID/status; -1 if there is
// no such process.
pid_t InnerPid(pid_t pid);

// The namespaces of node i of a Network. A holder process (node_init) is PID 1
// of a new pid namespace, with a mount namespace of its own where /proc is
// mounted for that pid namespace, inside the node's network namespace. It
// reaps the node's orphans. When it ends, the kernel kills everything in the
// node.
//
// Programs started here (Spawn) are the test's own children: the test
// process becomes a child subreaper, so their real pid is theirs and waitpid
// works. This has a price. When the holder ends, it cannot finish until the
// test has reaped every such program of the node. So declare NodeSpaces after
// its Network and before the agents or programs started in it: they are then
// destroyed (and reaped) first.
class NodeSpaces {
 public:
  // Starts the holder and waits until it runs; ok() says whether it did.
  NodeSpaces(const Network& net, int node, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Stops the holder by pid: SIGTERM, then SIGKILL after 5 s. Waits for it.
  ~NodeSpaces();
  NodeSpaces(const NodeSpaces&) = delete;
  NodeSpaces& operator=(const NodeSpaces&) = delete;

  bool ok() const { return holder_ > 0; }
  const std::string& error() const { return error_; }
  int node() const { return node_; }
  // The holder's real pid (its inner pid is 1). Killing it ends the node.
  pid_t holder_pid() const { return holder_; }

  // Starts argv inside this node's network, mount and pid namespaces. It runs
  // in the test's working directory, with the test's environment plus env,
  // and with the given standard streams. Returns the program's own real pid
  // (not a wrapper's), a child of the test process (kill it, waitpid it), or
  // -1 with *error saying why. A program that cannot be executed exits 127.
  pid_t Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, Stdio stdio,
              std::string* error) const;

 private:
  int node_;
  pid_t wrapper_ = -1;  // ip netns exec, then unshare: the test's child, and the holder's parent
  pid_t holder_ = -1;
  ino_t pid_namespace_ = 0;  // the holder's: a Spawn never enters another one
  std::string error_;
};

// A long-running program started in a node (NodeSpaces::Spawn): the sleeper, the
// listener, the process a test signals. It keeps the program's real and inner
// pids and waits for it by pid. At destruction it kills the program
// (SIGKILL) if it still runs, and reaps it.
class NodeProcess {
 public:
  // What Wait returns when the program has not exited in time.
  static constexpr int kStillRunning = -1000;

  // Starts argv in node with the test's environment plus env. Its stdout and
  // stderr are appended to log_path, or are the test's own if it is "".
  NodeProcess(const NodeSpaces& node, const std::vector<std::string>& argv,
              const std::map<std::string, std::string>& env = {}, const std::string& log_path = "");
  ~NodeProcess();
  NodeProcess(const NodeProcess&) = delete;
  NodeProcess& operator=(const NodeProcess&) = delete;

  bool ok() const { return pid_ > 0; }
  const std::string& error() const { return error_; }
  pid_t pid() const { return pid_; }              // real: what the test signals and waits for
  pid_t inner_pid() const { return inner_pid_; }  // what its node sees
  // Started and not waited for yet (it may have exited: Wait says).
  bool running() const { return pid_ > 0 && !reaped_; }
  // Sends sig by pid; false once the program has been waited for.
  bool Kill(int sig) const;
  // Waits for the program to exit. Returns its exit code, or -N if signal N
  // killed it. Returns kStillRunning if it has not exited by timeout.
  int Wait(std::chrono::milliseconds timeout = std::chrono::seconds(15));

 private:
  pid_t pid_ = -1, inner_pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = kStillRunning;
  std::string error_;
};


// A Network of `count` nodes and the NodeSpaces of each (nodes[i] is node i).
// Declare it before the agents and programs started in its nodes.
class Nodes {
 public:
  explicit Nodes(int count);
  const Network& net() const { return net_; }
  Network& net() { return net_; }
  NodeSpaces& operator[](int i) { return *spaces_.at(i - 1); }
  // Whether every node has its namespaces; if not, why.
  ::testing::AssertionResult Made() const;

 private:
  Network net_;
  std::vector<std::unique_ptr<NodeSpaces>> spaces_;
};

// An agent named name inside node i of nodes, on the node's address (port
// 7070), its data dir, socket and log in dir, joining node 1's agent unless
// it is node 1, with extra arguments after those. Not started yet.
std::unique_ptr<AgentProcess> AgentInNode(Nodes& nodes, int i, const std::string& name, const std::string& dir,
                                          const std::vector<std::string>& extra = {});

}  // namespace onebox::testing
