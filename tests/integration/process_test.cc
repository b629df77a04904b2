// The cluster's process table, signals across nodes and `onebox run`, with
// three agents each in a node of its own: its own pid, mount and network
// namespaces (node_spaces.h). A program of one node is invisible to the
// others' kernels, so everything a test sees of another node's processes
// came through onebox: a gpid that named a local pid, or a run that ran
// locally, would fail here.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/util/json_util.h>

#include "onebox/v1/cluster.pb.h"
#include "onebox/v1/process.pb.h"
#include "proto/gpid.h"
#include "tests/integration/process_cluster.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The process with gpid in a listing (a copy: listings are temporaries).
std::optional<v1::ProcessInfo> Find(const v1::ListProcessesResponse& ps, int64_t gpid) {
  for (const v1::ProcessInfo& p : ps.processes())
    if (p.gpid() == gpid) return p;
  return std::nullopt;
}

// How many processes of a listing are in process group pgid.
size_t InGroup(const v1::ListProcessesResponse& ps, pid_t pgid) {
  size_t n = 0;
  for (const v1::ProcessInfo& p : ps.processes()) n += p.pgid() == pgid;
  return n;
}

TEST_F(ProcessTest, PsOnAnyNodeListsEveryNodesProcessesUnderOneboxWithGlobalPids) {
  NodeProcess shimmed(Node(2), {"sleep", "300"}, ShimEnv(2));
  NodeProcess plain(Node(3), {"sleep", "301"});
  ASSERT_TRUE(shimmed.ok() && plain.ok());
  // The kernels: node 2's sleep is not node 1's.
  ASSERT_TRUE(WaitUntil([&] { return Alive(2, shimmed.inner_pid()); }, seconds(5), "sleep runs in node 2"));
  const int64_t gpid = Gpid(2, shimmed.inner_pid());
  ASSERT_TRUE(WaitUntil(
      [&] {
        std::optional<v1::ProcessInfo> p = Find(Ps(1), gpid);
        return Observed(p && p->argv_size() == 2 && p->argv(1) == "300", p ? p->DebugString() : "none");
      },
      seconds(10), "node 1's ps lists node 2's sleep"));
  std::optional<v1::ProcessInfo> p = Find(Ps(3), gpid);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->node(), "n2");
  EXPECT_EQ(p->pid(), shimmed.inner_pid());
  EXPECT_EQ(p->node_index(), index_[2]);
  EXPECT_TRUE(p->under_onebox());
  EXPECT_EQ(p->user(), "root");
  EXPECT_GT(p->start_time_ms(), 0);
  EXPECT_TRUE(gpid::IsGlobal(p->gpid()));
  // Without the shim: listed with --all only.
  const int64_t plain_gpid = Gpid(3, plain.inner_pid());
  EXPECT_FALSE(Find(Ps(1), plain_gpid));
  std::optional<v1::ProcessInfo> all = Find(Ps(1, {"--all"}), plain_gpid);
  ASSERT_TRUE(all);
  EXPECT_FALSE(all->under_onebox());
  // Filters.
  EXPECT_FALSE(Find(Ps(1, {"--node", "n3"}), gpid));
  EXPECT_TRUE(Find(Ps(1, {"--node", std::to_string(index_[2])}), gpid));
  EXPECT_FALSE(Find(Ps(1, {"--user", "4242"}), gpid));
  EXPECT_TRUE(Find(Ps(1, {"--user", "root"}), gpid));
  RunResult text = Onebox(1, {"ps"});
  EXPECT_NE(text.out.find(fmt::format("{} n2", gpid)), std::string::npos) << text.out;
  RunResult unknown = Onebox(1, {"ps", "--node", "nosuch"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no node is named nosuch"), std::string::npos) << unknown.err;
}

TEST_F(ProcessTest, KillOfAGpidSignalsItOnItsNodeWithTheCallersRights) {
  NodeProcess target(Node(2), {"sleep", "300"}, ShimEnv(2));
  ASSERT_TRUE(WaitUntil([&] { return Alive(2, target.inner_pid()); }, seconds(5), "sleep runs in node 2"));
  const int64_t gpid = Gpid(2, target.inner_pid());
  // Signal 0 probes, from the CLI and from kill(2) under the shim.
  EXPECT_EQ(Onebox(1, {"kill", "-0", std::to_string(gpid)}).exit_code, 0);
  EXPECT_EQ(Sh(3, fmt::format("kill -0 {} && echo there", gpid)).out, "there\n");
  // Another user may not: the kernel's EPERM, on node 2, for uid 4242 of node 1.
  RunResult denied = Sh(1, fmt::format("setpriv --reuid 4242 --regid 4242 --clear-groups bash -c 'kill -TERM {}'", gpid));
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_NE(denied.err.find("Operation not permitted"), std::string::npos) << denied.err;
  RunResult cli_denied = RunInNode(Node(1), {"setpriv", "--reuid", "4242", "--regid", "4242", "--clear-groups",
                                             OneboxBin(), "--socket", Socket(1), "kill", std::to_string(gpid)});
  EXPECT_EQ(cli_denied.exit_code, 1);
  EXPECT_NE(cli_denied.err.find("not permitted"), std::string::npos) << cli_denied.err;
  EXPECT_TRUE(target.running());
  EXPECT_EQ(target.Wait(milliseconds(200)), NodeProcess::kStillRunning);
  // ESRCH: a pid node 2 does not have, and a node no one has.
  RunResult gone = Sh(1, fmt::format("kill -0 {}", Gpid(2, 4000000)));
  EXPECT_NE(gone.err.find("No such process"), std::string::npos) << gone.err;
  RunResult no_node = Sh(1, fmt::format("kill -0 {}", gpid::Make(200, 5)));
  EXPECT_NE(no_node.err.find("No such process"), std::string::npos) << no_node.err;
  EXPECT_EQ(Onebox(1, {"kill", std::to_string(gpid::Make(200, 5))}).exit_code, 1);
  // The shim's kill (bash's builtin) delivers it there; the process dies of it.
  RunResult sent = Sh(1, fmt::format("kill -USR1 {}", gpid));
  EXPECT_EQ(sent.exit_code, 0) << sent.err;
  EXPECT_EQ(target.Wait(seconds(10)), -SIGUSR1);
  // The CLI: -s NAME, -NAME and -NUMBER.
  NodeProcess second(Node(3), {"sleep", "300"}, ShimEnv(3));
  ASSERT_TRUE(WaitUntil([&] { return Alive(3, second.inner_pid()); }, seconds(5), "sleep runs in node 3"));
  EXPECT_EQ(Onebox(2, {"kill", "-s", "HUP", std::to_string(Gpid(3, second.inner_pid()))}).exit_code, 0);
  EXPECT_EQ(second.Wait(seconds(10)), -SIGHUP);
  // A process group: killpg of the group a shell leads there.
  NodeProcess group(Node(3), {"setsid", "bash", "-c", "sleep 300 & sleep 301; wait"}, ShimEnv(3));
  ASSERT_TRUE(WaitUntil([&] { return Alive(3, group.inner_pid()); }, seconds(5), "the group runs in node 3"));
  const int64_t leader = Gpid(3, group.inner_pid());
  ASSERT_TRUE(WaitUntil(
      [&] {
        size_t members = InGroup(Ps(1, {"--node", "n3"}), group.inner_pid());
        return Observed(members == 3, members);
      },
      seconds(10), "three processes in the group"));
  RunResult group_kill = Onebox(1, {"kill", "-TERM", "-" + std::to_string(leader)});
  EXPECT_EQ(group_kill.exit_code, 0) << group_kill.err;
  EXPECT_EQ(group.Wait(seconds(10)), -SIGTERM);
  EXPECT_TRUE(WaitUntil(
      [&] {
        size_t members = InGroup(Ps(1, {"--node", "n3"}), group.inner_pid());
        return Observed(members == 0, members);
      },
      seconds(10), "the whole group gone"));
}

TEST_F(ProcessTest, RunStartsTheProgramOnTheNodeAsTheCallerWithItsStdioAndExit) {
  // It runs in node 2's pid namespace, as the caller, in the same cluster directory.
  RunResult where = Onebox(1, {"run", "--node", "n2", "--cwd", "/cluster/w", "--", "bash", "-c",
                               "readlink /proc/self/ns/pid; id -u; pwd; umask; echo made > by-run"});
  ASSERT_EQ(where.exit_code, 0) << where.err;
  std::string node2_pid_ns;
  {
    char buf[128];
    ssize_t n = readlink(fmt::format("/proc/{}/ns/pid", Node(2).holder_pid()).c_str(), buf, sizeof buf);
    ASSERT_GT(n, 0);
    node2_pid_ns.assign(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(where.out, node2_pid_ns + "\n0\n/cluster/w\n0022\n");
  EXPECT_TRUE(Eventually(*agents_[0], "cat /cluster/w/by-run", "made\n", seconds(20)));
  // As another user: that user there, not root.
  RunResult as_user = RunInNode(Node(1), {"setpriv", "--reuid", "4242", "--regid", "4242", "--clear-groups",
                                          OneboxBin(), "--socket", Socket(1), "run", "--node", "n3", "--cwd",
                                          "/cluster/w", "--", "bash", "-c", "id -u; id -g; touch /cluster/w/by-root-only"});
  EXPECT_EQ(as_user.out, "4242\n4242\n") << as_user.err;
  EXPECT_NE(as_user.exit_code, 0) << "uid 4242 cannot write root's 0755 directory there";
  // stdin to the program, with its end; stdout and stderr apart; the exit code.
  RunResult echo = Onebox(1, {"run", "--node", "n2", "--cwd", "/cluster/w", "--", "cat"}, "x\n");
  EXPECT_EQ(echo.exit_code, 0) << echo.err;
  EXPECT_EQ(echo.out, "x\n");
  RunResult both = Onebox(1, {"run", "--node", "3", "--cwd", "/cluster/w", "--", "bash", "-c", "echo out; echo err >&2; exit 7"});
  EXPECT_EQ(both.exit_code, 7);
  EXPECT_EQ(both.out, "out\n");
  EXPECT_EQ(both.err, "err\n");
  // -t with input that is no terminal: the input's end is the terminal's EOF there.
  RunResult on_tty = Onebox(1, {"run", "-t", "--node", "n2", "--cwd", "/cluster/w", "--", "cat"}, "hi\n");
  EXPECT_EQ(on_tty.exit_code, 0) << on_tty.err;
  EXPECT_NE(on_tty.out.find("hi\r\n"), std::string::npos) << on_tty.out;
  // Death by a signal there is death by the same signal here.
  RunResult killed = Onebox(1, {"run", "--node", "n2", "--cwd", "/cluster/w", "--", "bash", "-c", "kill -TERM $$"});
  EXPECT_EQ(killed.exit_code, -SIGTERM) << killed.err;
  // From the cluster directory itself (the stand-in under the shim), no --cwd needed.
  RunResult here = Sh(1, fmt::format("{} run --node n3 -- pwd", OneboxBin()));
  EXPECT_EQ(here.out, "/cluster/w\n") << here.err;
  // Bad input: one line, exit 1; a missing program: 127, as a shell says it.
  RunResult outside = RunInNode(Node(1), {OneboxBin(), "--socket", Socket(1), "run", "--node", "n2", "--", "true"});
  EXPECT_EQ(outside.exit_code, 1);
  EXPECT_NE(outside.err.find("is not under /cluster"), std::string::npos) << outside.err;
  RunResult no_node = Onebox(1, {"run", "--node", "nosuch", "--cwd", "/cluster/w", "--", "true"});
  EXPECT_EQ(no_node.exit_code, 1);
  EXPECT_NE(no_node.err.find("no node is named nosuch"), std::string::npos) << no_node.err;
  RunResult missing = Onebox(1, {"run", "--node", "n2", "--cwd", "/cluster/w", "--", "no-such-program"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_NE(missing.err.find("no-such-program: command not found on node n2"), std::string::npos) << missing.err;
  RunResult no_dir = Onebox(1, {"run", "--node", "n2", "--cwd", "/cluster/none", "--", "true"});
  EXPECT_EQ(no_dir.exit_code, 1);
  EXPECT_NE(no_dir.err.find("/cluster/none: no such directory on node n2"), std::string::npos) << no_dir.err;
}

TEST_F(ProcessTest, TheStandInIsARealChildForBashJobControlAndPipelines) {
  std::string ob = fmt::format("{} --socket {}", OneboxBin(), Socket(1));
  RunResult jobs = Sh(1, fmt::format(
      "set -m; {0} run --node n2 -- sleep 300 & sleep 1; jobs | grep -c Running; kill %1; wait %1; echo status $?; "
      "{0} run --node n3 -- bash -c 'exit 7' & wait $!; echo status $?; "
      "echo abc | {0} run --node n2 -- tr a-z A-Z | {0} run --node n3 -- cat; "
      "{0} run --node n2 -- true; echo status $?",
      ob));
  EXPECT_EQ(jobs.out, "1\nstatus 143\nstatus 7\nABC\nstatus 0\n") << jobs.err;
}

TEST_F(ProcessTest, ARunIsInPsWithItsHomeAndDiesWithItsStandIn) {
  NodeProcess standin(Node(1), {OneboxBin(), "--socket", Socket(1), "run", "--node", "n2", "--cwd", "/cluster/w",
                                "--", "sleep", "333"});
  ASSERT_TRUE(standin.ok());
  std::optional<v1::ProcessInfo> run;
  ASSERT_TRUE(WaitUntil(
      [&] {
        v1::ListProcessesResponse ps = Ps(3, {"--node", "n2"});
        for (const v1::ProcessInfo& p : ps.processes())
          if (p.argv_size() == 2 && p.argv(0) == "sleep" && p.argv(1) == "333") run = p;
        return Observed(run.has_value(), ps.processes_size());
      },
      seconds(10), "the run in ps"));
  EXPECT_EQ(run->home_node(), "n1");
  EXPECT_EQ(run->home_gpid(), Gpid(1, standin.inner_pid()));
  EXPECT_TRUE(run->under_onebox());
  const pid_t remote = run->pid();
  // Signals to the stand-in reach the program; SIGKILL of the stand-in kills it there within 5 s.
  standin.Kill(SIGKILL);
  EXPECT_EQ(standin.Wait(seconds(5)), -SIGKILL);
  EXPECT_TRUE(WaitUntil([&] { return !Alive(2, remote); }, seconds(5), "the orphan killed on node 2"));
}

TEST_F(ProcessTest, ALostTargetNodeEndsTheRunWith255WithinTenSeconds) {
  for (int sig : {SIGSTOP, SIGKILL}) {
    SCOPED_TRACE(sig == SIGSTOP ? "target agent stopped" : "target agent killed");
    NodeProcess standin(Node(1), {OneboxBin(), "--socket", Socket(1), "run", "--node", "n3", "--cwd", "/cluster/w",
                                  "--", "sleep", "300"},
                        {}, dir_ / "standin.log");
    ASSERT_TRUE(WaitUntil(
        [&] {
          v1::ListProcessesResponse ps = Ps(1, {"--node", "n3"});
          for (const v1::ProcessInfo& p : ps.processes())
            if (p.home_node() == "n1") return true;
          return false;
        },
        seconds(10), "the run started"));
    ::kill(agents_[2]->pid(), sig);
    auto begun = std::chrono::steady_clock::now();
    EXPECT_EQ(standin.Wait(seconds(12)), 255);
    EXPECT_LT(std::chrono::steady_clock::now() - begun, seconds(11));
    std::ifstream log(dir_ / "standin.log");
    std::string said((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
    EXPECT_NE(said.find("lost node n3"), std::string::npos) << said;
    if (sig == SIGSTOP) {
      ::kill(agents_[2]->pid(), SIGCONT);
      // Its program was killed once its stream ended.
      EXPECT_TRUE(WaitUntil(
          [&] {
            RunResult r = RunInNode(Node(3), {"pgrep", "-x", "sleep"});
            return Observed(r.out.empty(), r.out);
          },
          seconds(10), "no orphan on node 3"));
    } else {
      agents_[2]->Stop(SIGKILL);
    }
  }
}

TEST_F(ProcessTest, LargeOutputIsRelayedByteForByteInConstantAgentMemory) {
  const std::string big = dir_ / "big";
  {
    std::ofstream out(big, std::ios::binary);
    std::string block(1 << 20, '\0');
    for (int i = 0; i < 200; ++i) {
      for (size_t k = 0; k < block.size(); ++k) block[k] = static_cast<char>((k * 131 + static_cast<size_t>(i) * 7) % 251);
      out.write(block.data(), static_cast<std::streamsize>(block.size()));
    }
  }
  double before_home = ProcessMemoryMiB(agents_[0]->pid(), "VmRSS:");
  double before_target = ProcessMemoryMiB(agents_[1]->pid(), "VmRSS:");
  RunResult r = RunInNode(Node(1), {"bash", "-c", fmt::format("{} --socket {} run --node n2 --cwd /cluster/w -- cat {} | sha256sum; sha256sum < {}",
                                                              OneboxBin(), Socket(1), big, big)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string relayed, local;
  std::getline(lines, relayed);
  std::getline(lines, local);
  EXPECT_EQ(relayed, local);
  EXPECT_FALSE(relayed.empty());
  // Both ways at once: its input through the program and back, no deadlock.
  RunResult through = RunInNode(Node(1), {"bash", "-c", fmt::format("{} --socket {} run --node n3 --cwd /cluster/w -- cat < {} | sha256sum",
                                                                    OneboxBin(), Socket(1), big)});
  ASSERT_EQ(through.exit_code, 0) << through.err;
  EXPECT_EQ(through.out, local + "\n");
  double grew_home = ProcessMemoryMiB(agents_[0]->pid(), "VmHWM:") - before_home;
  double grew_target = ProcessMemoryMiB(agents_[1]->pid(), "VmHWM:") - before_target;
  EXPECT_LT(grew_home, 64) << "home agent's peak grew by " << grew_home << " MiB for 200 MiB relayed";
  EXPECT_LT(grew_target, 64) << "target agent's peak grew by " << grew_target << " MiB";
}

// (Each program's shim says Hello to its agent while the agents start a
// hundred programs: it waits for a busy agent, it does not give up.)
TEST_F(ProcessTest, AHundredConcurrentRunsEachGiveTheirOwnOutput) {
  const std::string out = dir_ / "runs";
  RunResult r = RunInNode(
      Node(1), {"bash", "-c",
                fmt::format("mkdir -p {0}; for i in $(seq 1 100); do {1} --socket {2} run --node n$((i % 3 + 1)) "
                            "--cwd /cluster/w -- bash -c \"echo $i\" > {0}/$i 2>&1 & done; wait; "
                            "cat {0}/* | sort -n | uniq | wc -l; for f in {0}/*; do [ \"$(cat $f)\" = \"${{f##*/}}\" ] || "
                            "{{ echo \"run ${{f##*/}}: $(cat $f)\" >&2; }}; done",
                            out, OneboxBin(), Socket(1))});
  EXPECT_EQ(r.out, "100\n") << r.err;
}


// -t: a terminal there, driven here from a terminal (python's pty module):
// raw keys, ^C and ^Z reach the remote foreground job, window size changes
// follow, the exit code comes back, and the local terminal is as it was.
TEST_F(ProcessTest, RunWithATerminalPassesKeysWindowSizesAndJobControl) {
  const std::string script = R"PY(
import fcntl, os, pty, select, signal, struct, sys, termios, time
signal.alarm(90)  # never hang the test
onebox, sock = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(onebox, [onebox, '--socket', sock, 'run', '--node', 'n2', '--cwd', '/cluster/w', '--',
                      'bash', '--norc', '--noprofile', '-i'])
seen = b''
def until(want, timeout=15):
    global seen
    end = time.time() + timeout
    while want not in seen:
        left = end - time.time()
        if left <= 0: sys.exit('timed out waiting for %r; saw %r' % (want, seen[-400:]))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try: seen += os.read(fd, 4096)
            except OSError: sys.exit('terminal closed; saw %r' % seen[-400:])
def say(text): os.write(fd, text)
say(b'PS1=@; tty | grep -c /dev/pts/; echo A$((40+2))\n'); until(b'A42'); print('tty', b'1\r\n' in seen)
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', 33, 101, 0, 0))
time.sleep(0.5)
say(b'stty size\n'); until(b'33 101'); print('size ok')
say(b'sleep 100\n'); time.sleep(1); say(b'\x03'); time.sleep(0.5); say(b'echo after-$?\n'); until(b'after-130'); print('interrupt ok')
say(b'sleep 101\n'); time.sleep(1); say(b'\x1a'); until(b'Stopped'); print('stop ok')
say(b'fg\n'); time.sleep(1); say(b'\x03'); time.sleep(0.5); say(b'echo fg-$?\n'); until(b'fg-130'); print('fg ok')
say(b'exit 5\n')
_, status = os.waitpid(pid, 0)
print('exit', os.WEXITSTATUS(status))
attrs = termios.tcgetattr(fd)
print('restored', bool(attrs[3] & termios.ECHO) and bool(attrs[3] & termios.ICANON))
)PY";
  RunResult r = RunInNode(Node(1), {"python3", "-c", script, OneboxBin(), Socket(1)});
  EXPECT_EQ(r.out, "tty True\nsize ok\ninterrupt ok\nstop ok\nfg ok\nexit 5\nrestored True\n") << r.err;
}


// Signals sent to the stand-in reach the program; a home node cut off from
// the target (its link down) gets its program killed there within seconds.
TEST_F(ProcessTest, SignalsToTheStandInReachTheProgramAndACutOffHomeLeavesNoOrphan) {
  const std::string log = dir_ / "trapped.log";
  NodeProcess standin(Node(1), {OneboxBin(), "--socket", Socket(1), "run", "--node", "n2", "--cwd", "/cluster/w", "--",
                                "bash", "-c", "for s in HUP INT QUIT USR1 USR2 WINCH CONT; do trap \"echo got-$s\" $s; done; "
                                "echo ready; while :; do sleep 0.05; done"},
                      {}, log);
  auto said = [&] {
    std::ifstream in(log);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  ASSERT_TRUE(WaitUntil([&] { return Observed(said().find("ready") != std::string::npos, said()); }, seconds(10),
                        "the program trapping"));
  for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT}) {
    std::string want = std::string("got-") + sigabbrev_np(sig);
    standin.Kill(sig);
    EXPECT_TRUE(WaitUntil([&] { return Observed(said().find(want) != std::string::npos, said()); }, seconds(10), want));
  }
  // SIGTERM is not trapped: the program dies of it there, the stand-in of it here.
  standin.Kill(SIGTERM);
  EXPECT_EQ(standin.Wait(seconds(10)), -SIGTERM);

  // A run, then its home node's link cut: the target kills the program.
  NodeProcess cut(Node(1), {OneboxBin(), "--socket", Socket(1), "run", "--node", "n2", "--cwd", "/cluster/w", "--",
                            "sleep", "444"});
  pid_t remote = -1;
  ASSERT_TRUE(WaitUntil(
      [&] {
        v1::ListProcessesResponse ps = Ps(2, {"--node", "n2"});
        for (const v1::ProcessInfo& p : ps.processes())
          if (p.argv_size() == 2 && p.argv(1) == "444") remote = p.pid();
        return remote > 0;
      },
      seconds(10), "the run on n2"));
  ASSERT_TRUE(nodes_->net().SetLink(1, false));
  auto cut_at = std::chrono::steady_clock::now();
  EXPECT_TRUE(WaitUntil([&] { return !Alive(2, remote); }, seconds(10), "the cut-off home's program killed on n2"));
  EXPECT_LT(std::chrono::steady_clock::now() - cut_at, seconds(6));
  EXPECT_EQ(cut.Wait(seconds(15)), 255);  // and the stand-in says the node was lost
  ASSERT_TRUE(nodes_->net().SetLink(1, true));
}

}  // namespace
}  // namespace onebox::testing
