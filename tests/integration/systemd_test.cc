// The agent as systemd runs it (deploy/systemd/onebox-agent.service,
// docs/operations.md): the unit passes `systemd-analyze verify`; the agent
// speaks the notify protocol to a real NOTIFY_SOCKET (READY=1 once it
// serves, WATCHDOG=1 while it runs, no more often than a quarter of the
// watchdog's interval, STOPPING=1 on SIGTERM), from its own
// pid, as NotifyAccess=main wants; and two agents held to the unit's
// CapabilityBoundingSet still record and replicate a user's private file
// with its owner and mode, and place it from a thread below the agent's
// priority (which only a capability of the set allows them to raise back).
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::string UnitPath() { return std::string(ONEBOX_SOURCE_DIR) + "/deploy/systemd/onebox-agent.service"; }

// The value of the unit's key= line, "" when it has none.
std::string UnitValue(const std::string& unit, const std::string& key) {
  std::istringstream lines(unit);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind(key + "=", 0) == 0) return line.substr(key.size() + 1);
  return "";
}

// What a service manager listens on: a datagram socket at a path, which
// learns each sender's pid (SO_PASSCRED).
class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path_.c_str());
    int on = 1;
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
          setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }

  struct Message {
    pid_t sender = -1;
    std::string text;
  };
  // The next message, or none (sender -1) after timeout.
  Message Next(milliseconds timeout) {
    Message m;
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd_, &msg, 0);
    if (n < 0) return m;
    m.text.assign(buf, static_cast<size_t>(n));
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
        m.sender = reinterpret_cast<ucred*>(CMSG_DATA(c))->pid;
    return m;
  }
  // The next message that says `state` (other messages skipped), or none.
  Message NextSaying(const std::string& state, milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {};
      Message m = Next(left);
      if (m.sender == -1 || Says(m.text, state)) return m;
    }
  }
  static bool Says(const std::string& text, const std::string& state) {
    return ("\n" + text + "\n").find("\n" + state + "\n") != std::string::npos;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
};

// Sets an environment variable for the agents this test starts, and puts it back after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* was = getenv(name)) was_ = was;
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (was_) setenv(name_, was_->c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> was_;
};

TEST(SystemdTest, TheUnitPassesSystemdAnalyzeVerify) {
  TempDir dir;
  std::string unit = ReadFile(UnitPath());
  ASSERT_EQ(UnitValue(unit, "Type"), "notify");
  // verify checks that ExecStart's program exists: the one built here stands in.
  const std::string installed = "\nExecStart=/usr/local/bin/onebox ";
  size_t at = unit.find(installed);
  ASSERT_NE(at, std::string::npos) << unit;
  unit.replace(at, installed.size(), "\nExecStart=" + OneboxBin() + " ");
  const std::string copy = dir / "onebox-agent.service";
  std::ofstream(copy) << unit;
  RunResult verified = RunCommand({"systemd-analyze", "verify", copy});
  EXPECT_EQ(verified.exit_code, 0) << verified.err;
  // verify only warns (exit 0) about a key it does not know or a value it cannot parse.
  EXPECT_EQ(verified.out + verified.err, "");
}

TEST(SystemdTest, TheAgentSaysReadyWhenServingFeedsTheWatchdogAndSaysStoppingOnSigterm) {
  TempDir dir;
  NotifySocket manager(dir / "notify.sock");
  ASSERT_TRUE(manager.ok()) << strerror(errno);
  std::unique_ptr<AgentProcess> agent;
  {
    ScopedEnv notify("NOTIFY_SOCKET", manager.path());
    ScopedEnv watchdog("WATCHDOG_USEC", "4000000");
    agent = QuietLoopbackAgent(dir.path(), "sd");
    ASSERT_TRUE(agent->Start());
  }
  NotifySocket::Message ready = manager.NextSaying("READY=1", seconds(10));
  ASSERT_NE(ready.sender, -1) << "no READY=1 came";
  EXPECT_EQ(ready.sender, agent->pid()) << "systemd's NotifyAccess=main takes only the main pid's";
  EXPECT_NE(ready.text.find("STATUS=serving node sd on " + agent->address()), std::string::npos) << ready.text;

  // The gossip loop moves on at least twice a second (a round here: one
  // call to a seed-less cluster of one, and its end); the watchdog hears of
  // it at most every quarter of its 4 s: about 3 times in 3.5 s, not 7.
  int pings = 0;
  const auto until = std::chrono::steady_clock::now() + milliseconds(3500);
  while (std::chrono::steady_clock::now() < until) {
    auto left = std::chrono::duration_cast<milliseconds>(until - std::chrono::steady_clock::now());
    NotifySocket::Message m = manager.Next(std::max(left, milliseconds(1)));
    if (m.sender == -1) break;
    EXPECT_EQ(m.sender, agent->pid());
    pings += NotifySocket::Says(m.text, "WATCHDOG=1");
  }
  EXPECT_GE(pings, 2);
  EXPECT_LE(pings, 4);

  EXPECT_EQ(agent->Stop(SIGTERM), 0) << agent->log();
  EXPECT_NE(manager.NextSaying("STOPPING=1", seconds(2)).sender, -1) << "no STOPPING=1 came";
}

TEST(SystemdTest, AgentsHeldToTheUnitsCapabilitiesReplicateAUsersPrivateFileWithItsOwnerAndMode) {
  if (geteuid() != 0) GTEST_SKIP() << "runs the agents as root with fewer capabilities: needs root (CI runs as root)";
  TempDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);  // the user reaches the socket
  // CapabilityBoundingSet=CAP_CHOWN CAP_... as setpriv's -all,+chown,...
  std::istringstream caps(UnitValue(ReadFile(UnitPath()), "CapabilityBoundingSet"));
  std::string bounding = "-all";
  int count = 0;
  for (std::string cap; caps >> cap; ++count) {
    ASSERT_EQ(cap.rfind("CAP_", 0), 0u) << cap;
    std::string name = cap.substr(4);
    for (char& ch : name) ch = static_cast<char>(tolower(ch));
    bounding += ",+" + name;
  }
  ASSERT_GT(count, 0) << "the unit names no CapabilityBoundingSet";
  auto a = QuietLoopbackAgent(dir.path(), "capa");
  a->set_command_prefix({"setpriv", "--bounding-set", bounding});
  ASSERT_TRUE(a->Start());
  // (b's placing thread behind whenever anything waits: lowered with
  // the first file of the burst below, whatever the pace of its batches.)
  auto b = QuietLoopbackAgent(dir.path(), "capb", a->address(), {"--catch-up-backlog", "1"});
  b->set_command_prefix({"setpriv", "--bounding-set", bounding});
  ASSERT_TRUE(b->Start());
  // The agents hold the unit's capabilities: all of them that this test
  // holds itself (a sandbox may lack some: setpriv can add none), no other.
  auto bounding_of = [](const std::string& status_text) {
    std::istringstream status(status_text);
    uint64_t mask = 0;
    for (std::string line; std::getline(status, line);)
      if (line.rfind("CapBnd:", 0) == 0) mask = std::stoull(line.substr(7), nullptr, 16);
    return mask;
  };
  RunResult held = RunCommand({"setpriv", "--bounding-set", bounding, "cat", "/proc/self/status"});
  ASSERT_EQ(held.exit_code, 0) << held.err;
  const uint64_t want = bounding_of(held.out), ours = bounding_of(ReadFile("/proc/self/status"));
  EXPECT_EQ(__builtin_popcountll(want), __builtin_popcountll(ours & want)) << std::hex << want;
  EXPECT_LE(__builtin_popcountll(want), count);
  EXPECT_GE(__builtin_popcountll(want), count - 1) << "the unit's set, less at most one this sandbox lacks";
  for (AgentProcess* agent : {a.get(), b.get()})
    EXPECT_EQ(bounding_of(ReadFile(fmt::format("/proc/{}/status", agent->pid()))), want) << std::hex << want;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get()}, 1));

  // A directory only uid 4242 may enter, and in it a file only it may read.
  RunResult made = Shell(*a, "mkdir /cluster/u && chown 4242:4242 /cluster/u && chmod 700 /cluster/u");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  RunResult wrote = RunCommand(
      {"setpriv", "--reuid=4242", "--regid=4242", "--clear-groups", "bash", "-c",
       "echo secret > /cluster/u/f && chmod 600 /cluster/u/f"},
      {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  // Node a's agent read it to record it; node b's placed it as 4242's, 0600.
  EXPECT_TRUE(Eventually(*b, "stat -c '%u %g %a %s' /cluster/u/f && cat /cluster/u/f", "4242 4242 600 7\nsecret\n",
                         seconds(20)))
      << a->log() << b->log();
  // The unit's capabilities let b lower its placing thread while it is
  // behind (and raise it back: daemon/catch_up.h), where this sandbox has
  // CAP_SYS_NICE to give: seen below the agent while a burst is placed.
  // (The default backlog is ClusterTest's, PlacingPeersFiles...)
  const bool lowered = CanRaiseNiceBack();
  const PriorityLooks looks = LookAtPrioritiesWhile({b->pid()}, [&] {
    BusyCores busy;
    RunResult burst =
        Shell(*a, "mkdir /cluster/burst && cd /cluster/burst && for i in $(seq 1 1000); do echo $i > f$i; done");
    EXPECT_EQ(burst.exit_code, 0) << burst.err;
    EXPECT_TRUE(Eventually(*b, "cat /cluster/burst/f1000", "1000\n", seconds(60)));
  });
  const int placing_lowered = looks.placing_lowered.count(b->pid()) ? looks.placing_lowered.at(b->pid()) : 0;
  if (lowered)
    EXPECT_GT(placing_lowered, 0) << "b's placing thread never seen below the agent";
  else
    EXPECT_EQ(placing_lowered, 0) << "lowered with no way to raise it back";
  KeepLogsIfFailed(dir.path(), {a.get(), b.get()});
}

}  // namespace
}  // namespace onebox::testing
