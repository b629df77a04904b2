// Integration-test harness: starts real `onebox agent` processes on loopback
// (port 0, so the kernel picks a free port; the shim socket tells which), runs
// commands and captures their output, and waits for agents to converge.
// Everything started is stopped by pid. An agent or a command may also run
// inside a test node's own namespaces (NodeSpaces, node_spaces.h).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "proto/state_page.h"
#include "onebox/v1/cluster.pb.h"
#include "onebox/v1/namespace.pb.h"
#include "onebox/v1/peer.pb.h"
#include "onebox/v1/shim.pb.h"

namespace onebox::testing {

// Paths of the build outputs, compiled in by CMake.
std::string OneboxBin();
std::string ShimLib();
// A real C project for build tests and benches: GNU libiberty (66 C files, a
// generated configure, a plain Makefile) from Debian's binutils-source.
// The tarball's path, "" when the package is missing.
std::string BinutilsTarball();
// Shell commands that unpack libiberty from tarball in the current
// directory and configure it (in ./libiberty, ready for `make -j`).
std::string PrepareLibiberty(const std::string& tarball);

class NodeSpaces;

// An exit code from a wait status: -N when killed by signal N.
int ExitCodeOf(int status);
// waitpid that retries on EINTR; returns -1 (and sets *status to 0) on failure.
pid_t WaitFor(pid_t pid, int* status, int flags);

// argv and environment (the test's, with env's entries added or replaced)
// built before fork: a forked child of a threaded process may only call
// async-signal-safe functions, so it must not allocate.
class ExecSpec {
 public:
  ExecSpec(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env);
  ExecSpec(const ExecSpec&) = delete;
  ExecSpec& operator=(const ExecSpec&) = delete;
  // In the child: exec, or report and _exit(127). Async-signal-safe.
  [[noreturn]] void Exec() const;

 private:
  std::vector<std::string> args_, vars_;
  std::vector<char*> argv_, envp_;
};

struct RunResult {
  int exit_code = -1;  // -N when killed by signal N
  std::string out;
  std::string err;
  double seconds = 0;
};

// Runs argv to completion with extra environment, feeding stdin_data.
RunResult RunCommand(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {},
              const std::string& stdin_data = "");
// `onebox ARGS` run to completion: success, or a failure naming the
// command and what it said (for set-up steps: ca init, cert issue, ...).
::testing::AssertionResult OneboxSucceeds(const std::vector<std::string>& args);
// RunCommand inside node's namespaces (NodeSpaces::Spawn): the same output,
// stdin and exit codes. A program that cannot be started there has exit code
// -1 and says why in err.
RunResult RunInNode(const NodeSpaces& node, const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env = {}, const std::string& stdin_data = "");

// A memory figure of process pid from /proc/PID/status ("VmRSS:", "VmHWM:"), MiB; -1 if absent.
double ProcessMemoryMiB(pid_t pid, const std::string& field);
// CPU time (user + system, all its threads, ended ones too) of process pid so far, in
// seconds, from its CPU clock (ns); a zombie's stays at its total; 0 for a pid not found.
double CpuSeconds(pid_t pid);
// Whether process pid has ended: gone, a zombie or dying. (A child of the
// caller stays a zombie until reaped: its state tells, kill(pid, 0) does not.)
bool ProcessEnded(pid_t pid);

// Processes that keep every core busy at the test's priority while it lives
// (ended by pid): the programs a node's placing thread yields to while it
// is behind (architecture.md, Catch-up below programs), so that it lags
// behind a burst of peers' writes however fast the machine.
class BusyCores {
 public:
  BusyCores();
  ~BusyCores() { End(); }
  BusyCores(const BusyCores&) = delete;
  BusyCores& operator=(const BusyCores&) = delete;
  void End();

 private:
  std::vector<pid_t> pids_;
};

// One request over the shim socket (framed as the shim frames it).
bool ShimCall(const std::string& socket_path, const v1::ShimRequest& req, v1::ShimResponse* resp, std::string* err,
              int timeout_seconds = 2);
// A Ping (id 77); the response says who the agent saw.
bool ShimPing(const std::string& socket_path, v1::ShimResponse* resp, std::string* err);

// One request on a connection to the shim socket, and its answer with the
// descriptor that rode on it (SCM_RIGHTS; *passed -1 if none). False unless
// the whole answer came in one read (the agent's answers to Hello and View
// are small).
bool AskWithDescriptor(int conn, const v1::ShimRequest& req, v1::ShimResponse* resp, int* passed);

// The agent's state page, mapped read-only as a shim maps it (it comes with
// Hello's answer), with the connection it came on held open as a shim holds
// it (the agent keeps the symlink count down and its heartbeat running only
// while such a connection is open). Empty if the page did not come.
class MappedStatePage {
 public:
  explicit MappedStatePage(const std::string& socket_path);
  ~MappedStatePage();
  MappedStatePage(const MappedStatePage&) = delete;
  MappedStatePage& operator=(const MappedStatePage&) = delete;
  explicit operator bool() const { return page_ != nullptr; }
  const StatePage* operator->() const { return page_; }

 private:
  const StatePage* page_ = nullptr;
  int connection_ = -1;
};

class AgentProcess;

// The join token file every agent the harness starts is given, unless its
// arguments name one, say --insecure or give TLS (--cacert): made once per
// test process (mode 0600, in TMPDIR), removed at exit.
const std::string& TestJoinTokenFile();
// Makes ctx's call one of a peer: with the token of TestJoinTokenFile.
void AddTestJoinToken(grpc::ClientContext* ctx);
// What agent's store holds for path ("/cluster/a/b", normalized) in the
// namespace, as a peer reads it (Peer/ReadRecord): a tombstone too.
grpc::Status ReadNsRecord(AgentProcess& agent, const std::string& path, v1::ReadRecordResponse* r);
// The namespace record of path as a peer reads it, chunk digests included
// (the Namespace service leaves them out); found false when there is none
// live.
v1::Inode RecordedInode(AgentProcess& agent, const std::string& path, bool* found = nullptr);
// Waits (at most timeout) until agent's store holds a live record of path.
::testing::AssertionResult WaitForRecord(AgentProcess& agent, const std::string& path,
                                         std::chrono::steady_clock::duration timeout);
// agent's Cluster/Status; a call that fails fails the test (the answer is then empty).
v1::StatusResponse AgentStatus(AgentProcess& agent);

// A method that acts as its caller ("/onebox.v1.Store/Put"), called over
// agent's Unix socket as the CLI calls it: the caller is this process (or
// whoever the test made it). The answer as gRPC would give it.
grpc::Status CallOverSocket(AgentProcess& agent, const std::string& method, const google::protobuf::Message& req,
                            google::protobuf::Message* resp);

// One unary call of method with these request bytes, as any gRPC program
// could make it (no generated stub, so any bytes): with join_token in the
// metadata when it is given.
grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& bytes, const std::string& join_token = "");

// cmd run by bash under the shim of agent (inside the agent's node when it has one).
RunResult Shell(AgentProcess& agent, const std::string& cmd);

// The threads of process pid, each with its name and nice, by tid.
struct ThreadNice {
  std::string name;
  int nice;
};
std::map<pid_t, ThreadNice> ThreadNices(pid_t pid);
// Each agent's threads (by the agent's pid), looked at about every 5 ms
// while work() runs: how many looks found its placing thread
// ("onebox-place") 10 nice levels below the agent (daemon/catch_up.h), and
// each other thread found at another priority than the agent's, named once
// (fetch helpers aside: they take their starter's).
struct PriorityLooks {
  std::map<pid_t, int> placing_lowered;
  std::map<pid_t, std::string> others_off;
};
PriorityLooks LookAtPrioritiesWhile(const std::vector<pid_t>& agents, const std::function<void()>& work);
// Runs cmd (Shell) until it succeeds with want as its output.
::testing::AssertionResult Eventually(AgentProcess& agent, const std::string& cmd, const std::string& want,
                                      std::chrono::seconds timeout = std::chrono::seconds(10));

// Other members alive, as agent's state page counts them (updated after
// each gossip round; a shim asks its agent for an exclusive create only
// while this is not 0). -1 if the page did not come.
int64_t PeersAliveOnPage(AgentProcess& agent);
// Waits until the state page of every agent in agents counts `peers` others alive.
::testing::AssertionResult WaitForPagesCounting(const std::vector<AgentProcess*>& agents, int64_t peers);

// What Converge makes of an agent that does not answer Cluster/Status.
enum class Unanswered {
  kFails,    // the wait fails at once: every agent is expected up and reachable
  kWaitsOn,  // not converged yet: an agent just healed from a partition, say
};
// Waits until every agent reports the same state digest and the same view
// digest (Cluster/Status): they hold the same records, and their programs
// see the same entries with the same bytes. Each is asked on a channel of its own, so that
// a connection a partition broke is never in the way.
::testing::AssertionResult Converge(const std::vector<AgentProcess*>& agents, std::chrono::seconds timeout,
                                    Unanswered unanswered = Unanswered::kFails);

// When the running test has failed: copies the agents' logs (*.log in dir) to
// a directory of their own in TMPDIR, and prints the tail of each and where
// they are, for a post-mortem.
void KeepLogsIfFailed(const std::string& dir, const std::vector<AgentProcess*>& agents);

class AgentProcess {
 public:
  AgentProcess(std::string name, std::string data_dir, std::string socket_path,
               std::string listen = "127.0.0.1:0");
  // An agent started with exactly these arguments after `onebox agent`
  // (a config file, say); socket_path is where it will answer.
  static std::unique_ptr<AgentProcess> WithArgs(std::vector<std::string> args, std::string socket_path,
                                                std::string log_path);
  ~AgentProcess();  // SIGKILL if still running

  // Runs the agent under this command (e.g. {"ip", "netns", "exec", NS}),
  // which must exec it (so that pid() stays the agent's).
  void set_command_prefix(std::vector<std::string> prefix) { prefix_ = std::move(prefix); }
  // Runs the agent (and its prefix, if any) inside node's namespaces, from
  // the next Start on: pid() is then its real pid, and Shell runs there too.
  // It must listen on the node's Network address (the test's loopback is
  // not the node's). node must outlive the agent's run (declare it first).
  void set_spaces(const NodeSpaces* node) { spaces_ = node; }
  const NodeSpaces* spaces() const { return spaces_; }
  // Starts the agent and waits until grpc.health.v1 answers SERVING.
  ::testing::AssertionResult Start(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Sends sig and waits; returns the exit code (-N if killed by signal N).
  int Stop(int sig = SIGTERM);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

  const std::string& address() const { return address_; }
  const std::string& socket() const { return socket_; }
  const std::string& data_dir() const { return data_dir_; }
  std::string log() const;  // what the agent wrote to stderr
  std::shared_ptr<grpc::Channel> channel();
  // A channel of its own to the agent: over TLS, as an anonymous client,
  // when the agent was given --cacert.
  std::shared_ptr<grpc::Channel> NewChannel(grpc::ChannelArguments args = {}) const;

 private:
  AgentProcess() = default;
  std::vector<std::string> args_, prefix_;
  std::string data_dir_, socket_, log_path_, address_;
  pid_t pid_ = -1;
  const NodeSpaces* spaces_ = nullptr;
  std::shared_ptr<grpc::Channel> channel_;
};

// What the benchmarks start: an agent named name on a loopback port the
// kernel picks, its data dir, socket and log in dir, logging warnings only,
// joining `join` when given, with extra arguments after those.
std::unique_ptr<AgentProcess> QuietLoopbackAgent(const std::string& dir, const std::string& name,
                                                 const std::string& join = "",
                                                 const std::vector<std::string>& extra = {});

}  // namespace onebox::testing
