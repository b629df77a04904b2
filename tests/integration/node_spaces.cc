#include "tests/integration/node_spaces.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {

std::string NodeInitBin() { return ONEBOX_NODE_INIT; }

std::string IpTool() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (access(p, X_OK) == 0) return p;
  return "";
}

Network::Network(int nodes) : ip_(IpTool()) {
  int pid = getpid();
  // The pid tells test processes apart, the count the Networks of one process:
  // the kernel removes a deleted namespace's veth pair a moment later, so the
  // next Network must not take the same names. ("ob99999-99v1" has 12
  // characters; an interface name may have 15.)
  static std::atomic<int> made{0};
  tag_ = fmt::format("ob{}-{}", pid % 100000, made++);
  if (ip_.empty()) {
    error_ = "no ip(8) (iproute2)";
    return;
  }
  if (!Ip({"link", "add", tag_, "type", "bridge"})) return;
  made_bridge_ = true;  // removed at the end whatever fails next
  {
    // A /24 no other test's bridge has, chosen and taken under a lock that
    // every test process shares: two processes whose pids agree modulo 250
    // must not both route 10.251.N (their agents would be unreachable).
    int lock = open("/tmp/onebox-test-subnets.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (lock >= 0) flock(lock, LOCK_EX);
    std::set<int> taken;
    ifaddrs* addrs = nullptr;
    if (getifaddrs(&addrs) == 0) {
      for (ifaddrs* a = addrs; a != nullptr; a = a->ifa_next)
        if (a->ifa_addr != nullptr && a->ifa_addr->sa_family == AF_INET) {
          const uint32_t host = ntohl(reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr);
          if (host >> 16 == (10u << 8 | 251u)) taken.insert(static_cast<int>(host >> 8 & 0xff));
        }
      freeifaddrs(addrs);
    }
    int n = pid % 250;
    for (int tries = 0; tries < 250 && taken.count(n); ++tries) n = (n + 1) % 250;
    subnet_ = fmt::format("10.251.{}", n);
    const bool up = Ip({"addr", "add", subnet_ + ".254/24", "dev", tag_}) && Ip({"link", "set", tag_, "up"});
    if (lock >= 0) close(lock);  // (the address is in place: the next chooser sees it)
    if (!up) return;
  }
  for (int i = 1; i <= nodes; ++i) {
    std::string ns = Ns(i), veth = Veth(i);
    if (!Ip({"netns", "add", ns})) return;
    namespaces_.push_back(ns);
    if (!Ip({"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns}) ||
        !Ip({"link", "set", veth, "master", tag_, "up"}) ||
        !Ip({"netns", "exec", ns, ip_, "addr", "add", Address(i) + "/24", "dev", "eth0"}) ||
        !Ip({"netns", "exec", ns, ip_, "link", "set", "eth0", "up"}) ||
        !Ip({"netns", "exec", ns, ip_, "link", "set", "lo", "up"}))
      return;
  }
  ok_ = true;
}

Network::~Network() {
  for (const std::string& ns : namespaces_) Ip({"netns", "del", ns});  // takes its veth pair along
  if (made_bridge_) Ip({"link", "del", tag_});
}

std::string Network::Ns(int i) const { return fmt::format("{}n{}", tag_, i); }
std::string Network::Veth(int i) const { return fmt::format("{}v{}", tag_, i); }
std::string Network::Address(int i) const { return fmt::format("{}.{}", subnet_, i); }

bool Network::Ip(std::vector<std::string> args) {
  args.insert(args.begin(), ip_);
  RunResult r = RunCommand(args);
  if (r.exit_code != 0 && error_.empty()) {
    error_ = "ip";
    for (size_t i = 1; i < args.size(); ++i) error_ += " " + args[i];
    error_ += ": " + r.err;
  }
  return r.exit_code == 0;
}

namespace {

// Makes the test process a child subreaper (once): a program started in a
// node by a double fork is reparented to the test when the middle child
// exits, instead of to the system's init, so the test can waitpid it. A
// holder whose wrapper dies first is reparented to the test in the same way.
void BecomeChildSubreaper() {
  static const bool done = prctl(PR_SET_CHILD_SUBREAPER, 1) == 0;
  (void)done;
}

// The pid of a child of parent (read from /proc/PID/stat), or -1.
// /proc/PID/task/TID/children is not in every kernel (CONFIG_PROC_CHILDREN).
pid_t ChildOf(pid_t parent) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    // A process may exit between the listing and the read, which then fails
    // with ESRCH: read(2), not a stream (whose iterator throws on that).
    std::string stat(1024, '\0');
    int fd = open((entry.path() / "stat").c_str(), O_RDONLY | O_CLOEXEC);
    ssize_t got = fd < 0 ? -1 : read(fd, stat.data(), stat.size());
    if (fd >= 0) close(fd);
    if (got <= 0) continue;
    stat.resize(static_cast<size_t>(got));
    size_t after_comm = stat.rfind(')');  // comm may hold spaces and parentheses
    if (after_comm == std::string::npos) continue;
    std::istringstream fields(stat.substr(after_comm + 1));
    std::string state;
    pid_t ppid = -1;
    if (fields >> state >> ppid && ppid == parent) return std::stoi(name);
  }
  return -1;
}

// Reads fd until it says "ready\n", reaches its end, or timeout passes;
// returns what it said.
std::string ReadUntilReady(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string said;
  while (said.find("ready\n") == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char buf[256];
    ssize_t got = read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // its end: the holder never ran
    said.append(buf, static_cast<size_t>(got));
  }
  return said;
}

// The inode of a namespace file (/proc/PID/ns/KIND); 0 if it cannot be read.
ino_t NamespaceInode(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

// What the middle child of Spawn tells the test: the program's real pid, or
// the step that failed and its errno.
struct SpawnReport {
  pid_t pid;
  int failed_step;
  int error;
};

}  // namespace

pid_t InnerPid(pid_t pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("NSpid:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    pid_t last = -1;
    for (pid_t p; fields >> p;) last = p;
    return last;
  }
  return -1;
}

NodeSpaces::NodeSpaces(const Network& net, int node, std::chrono::milliseconds timeout) : node_(node) {
  if (!net.ok()) {
    error_ = "the network was not made: " + net.error();
    return;
  }
  if (access(NodeInitBin().c_str(), X_OK) != 0) {
    error_ = NodeInitBin() + ": " + strerror(errno);
    return;
  }
  BecomeChildSubreaper();
  std::vector<std::string> argv = net.Inside(node);
  // unshare makes the pid and mount namespaces and forks the holder into
  // them (mounting their /proc first). If unshare dies, --kill-child takes
  // the holder, and so the node, with it.
  argv.insert(argv.end(), {"unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL", "--", NodeInitBin()});
  ExecSpec spec(argv, {});
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    error_ = std::string("pipe: ") + strerror(errno);
    return;
  }
  pid_t parent = getpid();
  wrapper_ = fork();
  if (wrapper_ == 0) {
    // The node dies with the test that made it, even one killed before its
    // destructors run: the wrapper gets SIGKILL, and the holder goes with it.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    dup2(ready[1], 1);
    spec.Exec();
  }
  close(ready[1]);
  if (wrapper_ < 0) {
    close(ready[0]);
    error_ = std::string("fork: ") + strerror(errno);
    return;
  }
  // The holder says "ready" once it runs, and by then its /proc is mounted.
  std::string said = ReadUntilReady(ready[0], timeout);
  close(ready[0]);
  pid_t holder = said.find("ready\n") != std::string::npos ? ChildOf(wrapper_) : -1;
  if (holder > 0 && InnerPid(holder) == 1) {
    holder_ = holder;
    pid_namespace_ = NamespaceInode(fmt::format("/proc/{}/ns/pid", holder_));
    return;
  }
  kill(wrapper_, SIGKILL);
  int status = 0;
  WaitFor(wrapper_, &status, 0);
  wrapper_ = -1;
  error_ = fmt::format("the holder of node {} did not start (it said '{}', then its wrapper ended with {}; "
                       "their errors are on the test's stderr)",
                       node, said, ExitCodeOf(status));
}

NodeSpaces::~NodeSpaces() {
  if (wrapper_ <= 0) return;
  int status = 0;
  // Only while the wrapper runs can the holder's pid not have been reused (the
  // wrapper reaps the holder, and the test reaps the wrapper). The wrapper
  // ends once the holder has, which waits until the test has reaped each
  // program of the node that is the test's child.
  if (WaitFor(wrapper_, &status, WNOHANG) != 0) return;
  kill(holder_, SIGTERM);
  auto wrapper_ended = [&] { return WaitFor(wrapper_, &status, WNOHANG) != 0; };
  if (WaitUntil(wrapper_ended, std::chrono::seconds(5), "the node's holder ends", std::chrono::milliseconds(10)))
    return;
  kill(holder_, SIGKILL);
  kill(wrapper_, SIGKILL);
  WaitFor(wrapper_, &status, 0);
}

pid_t NodeSpaces::Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                        Stdio stdio, std::string* error) const {
  if (!ok()) {
    *error = fmt::format("node {} has no namespaces: {}", node_, error_);
    return -1;
  }
  // Everything the children need is made before fork: the test process has
  // other threads (gRPC's), so a forked child may only do async-signal-safe
  // work.
  ExecSpec spec(argv, env);
  std::error_code ec;
  const std::string cwd = std::filesystem::current_path(ec).string();
  struct Space {
    const char* kind;
    int type;
    int fd;
  };
  // The mount namespace last: entering it moves the working directory to its
  // root (it is put back below).
  Space spaces[] = {{"net", CLONE_NEWNET, -1}, {"pid", CLONE_NEWPID, -1}, {"mnt", CLONE_NEWNS, -1}};
  auto close_spaces = [&] {
    for (Space& s : spaces)
      if (s.fd >= 0) close(s.fd);
  };
  for (Space& s : spaces) {
    std::string path = fmt::format("/proc/{}/ns/{}", holder_, s.kind);
    s.fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s.fd < 0) {
      *error = fmt::format("node {}: open {}: {} (has its holder ended?)", node_, path, strerror(errno));
      close_spaces();
      return -1;
    }
  }
  struct stat pid_space;
  if (fstat(spaces[1].fd, &pid_space) != 0 || pid_space.st_ino != pid_namespace_) {
    *error = fmt::format("node {}: its holder {} has ended", node_, holder_);
    close_spaces();
    return -1;
  }
  BecomeChildSubreaper();
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + strerror(errno);
    close_spaces();
    return -1;
  }
  static const char* const kSteps[] = {"setns(net)", "setns(pid)", "setns(mnt)", "chdir", "fork"};
  pid_t middle = fork();
  if (middle == 0) {
    auto fail = [&](int step) {
      SpawnReport r{-1, step, errno};
      [[maybe_unused]] ssize_t n = write(report[1], &r, sizeof r);
      _exit(1);
    };
    for (int i = 0; i < 3; ++i)
      if (setns(spaces[i].fd, spaces[i].type) != 0) fail(i);
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) fail(3);
    // Entering a pid namespace takes effect for children only: the program
    // is a child of this one. _Fork, unlike fork, runs no atfork handlers,
    // so it is async-signal-safe.
    pid_t program = _Fork();
    if (program == 0) {
      if (stdio.in >= 0) dup2(stdio.in, 0);
      if (stdio.out >= 0) dup2(stdio.out, 1);
      if (stdio.err >= 0) dup2(stdio.err, 2);
      spec.Exec();
    }
    if (program < 0) fail(4);
    SpawnReport r{program, -1, 0};  // its pid as the test sees it: this process is still in the test's pid namespace
    [[maybe_unused]] ssize_t n = write(report[1], &r, sizeof r);
    _exit(0);
  }
  close_spaces();
  close(report[1]);
  if (middle < 0) {
    close(report[0]);
    *error = std::string("fork: ") + strerror(errno);
    return -1;
  }
  SpawnReport r{-1, -1, 0};
  ssize_t got;
  do {
    got = read(report[0], &r, sizeof r);
  } while (got < 0 && errno == EINTR);
  close(report[0]);
  // Once the middle child has been reaped, the program has been reparented
  // to the test: an exiting process hands on its children before it can be
  // waited for.
  int status = 0;
  WaitFor(middle, &status, 0);
  if (got != static_cast<ssize_t>(sizeof r)) {
    *error = fmt::format("node {}: the middle child ended with {} without a word", node_, ExitCodeOf(status));
    return -1;
  }
  if (r.pid < 0) {
    *error = fmt::format("node {}: {}: {}", node_, kSteps[r.failed_step], strerror(r.error));
    return -1;
  }
  return r.pid;
}

NodeProcess::NodeProcess(const NodeSpaces& node, const std::vector<std::string>& argv,
                         const std::map<std::string, std::string>& env, const std::string& log_path) {
  int log_fd = -1;
  if (!log_path.empty()) {
    log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      error_ = "open " + log_path + ": " + strerror(errno);
      return;
    }
  }
  pid_ = node.Spawn(argv, env, {-1, log_fd, log_fd}, &error_);
  if (log_fd >= 0) close(log_fd);
  // Known at once: the program exists (if not exec'd yet) when Spawn returns.
  if (pid_ > 0) inner_pid_ = InnerPid(pid_);
}

NodeProcess::~NodeProcess() {
  if (!running()) return;
  kill(pid_, SIGKILL);
  int status = 0;
  WaitFor(pid_, &status, 0);
}

bool NodeProcess::Kill(int sig) const { return running() && kill(pid_, sig) == 0; }

int NodeProcess::Wait(std::chrono::milliseconds timeout) {
  if (!running()) return exit_code_;
  int status = 0;
  pid_t r = 0;
  auto exited = [&] { return (r = WaitFor(pid_, &status, WNOHANG)) != 0; };
  if (!WaitUntil(exited, timeout, "the program exits", std::chrono::milliseconds(10))) return kStillRunning;
  reaped_ = true;
  exit_code_ = r == pid_ ? ExitCodeOf(status) : -1;
  return exit_code_;
}


Nodes::Nodes(int count) : net_(count) {
  if (!net_.ok()) return;
  for (int i = 1; i <= count; ++i) spaces_.push_back(std::make_unique<NodeSpaces>(net_, i));
}

::testing::AssertionResult Nodes::Made() const {
  for (const auto& s : spaces_)
    if (!s->ok()) return ::testing::AssertionFailure() << s->error();
  return ::testing::AssertionSuccess();
}

std::unique_ptr<AgentProcess> AgentInNode(Nodes& nodes, int i, const std::string& name, const std::string& dir,
                                          const std::vector<std::string>& extra) {
  const std::string socket = dir + "/" + name + ".sock";
  std::vector<std::string> args{"--name", name, "--data-dir", dir + "/" + name + "-data", "--listen",
                                nodes.net().Address(i) + ":7070", "--socket", socket};
  if (i > 1) args.insert(args.end(), {"--join", nodes.net().Address(1) + ":7070"});
  args.insert(args.end(), extra.begin(), extra.end());
  std::unique_ptr<AgentProcess> agent = AgentProcess::WithArgs(args, socket, dir + "/" + name + ".log");
  agent->set_spaces(&nodes[i]);
  return agent;
}

}  // namespace onebox::testing
