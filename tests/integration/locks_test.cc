// Cluster-wide advisory locks with three agents on loopback (file calls:
// each node's programs lock files in its own view, which the kernel alone
// would never make exclude each other's). Real programs under the shim:
// flock(1) from three nodes serializing a counter's increments; python's
// fcntl.lockf and F_GETLK for byte ranges, EAGAIN, a wait a signal ends and
// a holder that is killed; SQLite writing one database from two nodes; a
// waiter killed; a holder whose node dies; and leases (locks/lease_slots.h):
// a lock nobody else wants is the kernel's until another node asks, also
// across a restart of its node's agent.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "nodeagent/locks/kernel_locks.h"
#include "nodeagent/locks/lock_home.h"
#include "proto/gpid.h"
#include "proto/state_page.h"
#include "tests/integration/cluster_fixture.h"

namespace onebox::testing {
namespace {

using std::chrono::milliseconds;

class LocksTest : public ClusterTest {
 protected:
  std::map<std::string, std::string> On(AgentProcess& node) {
    return {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", node.socket()}};
  }
  // Waits until `cat path` under the shim on node prints want.
  ::testing::AssertionResult Reads(AgentProcess& node, const std::string& path, const std::string& want,
                                   seconds timeout = seconds(15)) {
    return WaitUntil(
        [&] {
          RunResult r = RunCommand({"/bin/cat", path}, On(node));
          return ::testing::AssertionResult(r.out == want) << r.out << r.err;
        },
        timeout, node.address() + " reads " + want + " in " + path);
  }
  // Waits for a file (outside the cluster) that a script writes when it is ready.
  std::string Await(const std::string& marker, seconds timeout = seconds(30)) {
    EXPECT_TRUE(WaitUntil([&] { return std::filesystem::exists(marker) && std::filesystem::file_size(marker) > 0; },
                          timeout, marker + " written", milliseconds(20)));
    std::ifstream in(marker);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  // The locks the kernel holds for process pid, from /proc/locks: "POSIX
  // WRITE 0 9", "FLOCK READ 0 EOF".
  // A python program that tries call ("flock" or "lockf") exclusive and
  // without waiting on the file argv[1] names, and prints "granted" or the
  // errno's name.
  static std::string TryLockScript(const std::string& call) {
    return fmt::format(R"(
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.{}(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print('granted')
except OSError as e:
    print(errno.errorcode[e.errno])
)",
                       call);
  }
  static std::vector<std::string> KernelLocksOf(pid_t pid) {
    std::vector<std::string> out;
    std::ifstream in("/proc/locks");
    for (std::string line; std::getline(in, line);) {
      std::istringstream words(line);
      std::vector<std::string> w;
      for (std::string x; words >> x;) w.push_back(x);
      if (w.size() >= 8 && w[1] != "->" && w[4] == std::to_string(pid))
        out.push_back(fmt::format("{} {} {} {}", w[1], w[3], w[6], w[7]));
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  // A flock lock a's program holds on path (under a's lease, a the file's
  // home): b's try is refused, also once a's agent restarted and after the
  // home's grace (the lock made the cluster's, not kept unconverted in a
  // lease; unconvertible: the lock could not be made the cluster's, and the
  // file was kept whole for a instead), and granted once end_holder ended
  // the program (SIGKILL).
  void RefusedToBAcrossARestartOfAUntilTheHolderEnds(const std::string& path, const std::function<void()>& end_holder,
                                                     bool unconvertible = false) {
    const std::string try_lock = TryLockScript("flock");
    EXPECT_EQ(RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*b)).out, "EAGAIN\n");
    a->Stop(SIGKILL);
    ASSERT_TRUE(a->Start());
    RunResult first;
    EXPECT_TRUE(WaitUntil(
        [&] {
          first = RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*b));
          return ::testing::AssertionResult(first.out != "ENOLCK\n") << first.out << first.err;
        },
        seconds(15), "b's try answered"));
    EXPECT_EQ(first.out, "EAGAIN\n") << first.err;
    std::this_thread::sleep_for(LockHome::kGrace + seconds(1));
    EXPECT_EQ(RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*b)).out, "EAGAIN\n");
    if (unconvertible) {
      EXPECT_NE(a->log().find(path + ": the lock process"), std::string::npos) << a->log();
      EXPECT_NE(a->log().find(path + ": kept whole for this node"), std::string::npos) << a->log();
    } else {
      EXPECT_EQ(a->log().find("cannot be made the cluster's"), std::string::npos) << a->log();
    }
    end_holder();
    EXPECT_TRUE(WaitUntil(
        [&] {
          RunResult r = RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*b));
          return ::testing::AssertionResult(r.out == "granted\n") << r.out << r.err;
        },
        seconds(10), "b's lock once the program ended"));
  }
  // Ends a program that holds a lock (SIGKILL, then the join of the thread
  // that runs it) once, however the test ends. Made once the program said
  // its pid: the signal goes through a pidfd of the test's child of that
  // pid, so it reaches that program or none.
  struct EndHolder {
    pid_t pid;
    std::thread& thread;
    int pidfd;
    EndHolder(pid_t program, std::thread& runs_it)
        : pid(program), thread(runs_it), pidfd(static_cast<int>(syscall(SYS_pidfd_open, program, 0))) {
      // Ours only if this test started it (its parent): else a process
      // given the pid of one that ended, and left alone.
      std::ifstream stat(fmt::format("/proc/{}/stat", pid));
      std::string line;
      std::getline(stat, line);
      const size_t after_name = line.rfind(')');
      pid_t parent = 0;
      if (after_name != std::string::npos) std::istringstream(line.substr(after_name + 2)) >> line >> parent;
      if (pidfd >= 0 && parent != getpid()) {
        close(pidfd);
        pidfd = -1;
      }
    }
    EndHolder(const EndHolder&) = delete;
    EndHolder& operator=(const EndHolder&) = delete;
    void operator()() {
      if (!thread.joinable()) return;
      if (pidfd >= 0) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
      thread.join();
    }
    ~EndHolder() {
      (*this)();
      if (pidfd >= 0) close(pidfd);
    }
  };
  // The pid a program (run on runs_it) wrote to file, or 0 once runs_it
  // ended (the program said none; never 0 to kill: that is the test's group).
  pid_t AwaitPid(const std::string& file, std::thread& runs_it) {
    const long pid = std::strtol(Await(file).c_str(), nullptr, 10);
    if (pid > 0) return static_cast<pid_t>(pid);
    runs_it.join();
    return 0;
  }
  // A python script on a that holds a lock on a file homed on a (named
  // prefix and a number; b reads it first), under a's lease, and writes its
  // pid to argv[2] once it holds it; while_held(pid, name) looks at it, then
  // RefusedToBAcrossARestartOfAUntilTheHolderEnds. The program is ended
  // (EndHolder) however the test ends. under: a command the program runs
  // under (which execs it).
  void HeldOnAAcrossARestartOfA(const std::string& prefix, const std::string& script,
                                const std::function<void(pid_t, const std::string& name)>& while_held,
                                const std::vector<std::string>& under = {}, bool unconvertible = false) {
    const std::vector<std::string> nodes{NodeIdOf("a"), NodeIdOf("b"), NodeIdOf("c")};
    std::string name;
    for (int i = 0; name.empty(); ++i)
      if (LockHome::HomeOf(fmt::format("cluster/{}{}", prefix, i), nodes) == nodes[0])
        name = fmt::format("{}{}", prefix, i);
    const std::string path = "/cluster/" + name, held = dir_ / (prefix + ".held");
    ASSERT_EQ(RunCommand({"/bin/sh", "-c", "echo x > " + path}, On(*a)).exit_code, 0);
    ASSERT_TRUE(Reads(*b, path, "x\n"));
    std::this_thread::sleep_for(std::chrono::nanoseconds(kLockLeaseStartDelayNs));
    RunResult holder_run;
    std::vector<std::string> holder = under;
    holder.insert(holder.end(), {"/usr/bin/python3", "-c", script, path, held});
    std::thread holding([&] { holder_run = RunCommand(holder, On(*a)); });
    const pid_t pid = AwaitPid(held, holding);
    if (pid == 0) FAIL() << "the holder said no pid: " << holder_run.err;
    EndHolder end_holder{pid, holding};
    while_held(end_holder.pid, name);
    if (HasFatalFailure()) return;
    RefusedToBAcrossARestartOfAUntilTheHolderEnds(path, std::ref(end_holder), unconvertible);
  }
  std::string NodeIdOf(const std::string& name) {
    for (const v1::Node& n : Nodes(*a))
      if (n.name() == name) return n.node_id();
    ADD_FAILURE() << "a lists no node " << name;
    return "";
  }
  uint32_t IndexOf(const std::string& name) {
    for (const v1::Node& n : Nodes(*a))
      if (n.name() == name) return n.index();
    ADD_FAILURE() << "a lists no node " << name;
    return 0;
  }
};

TEST_F(LocksTest, FlockFromThreeNodesSerializesTheIncrementsOfOneCounter) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(RunCommand({"/bin/sh", "-c", "echo 0 > /cluster/counter && : > /cluster/counter.lock"}, On(*a)).exit_code, 0);
  for (AgentProcess* node : {b.get(), c.get()}) ASSERT_TRUE(Reads(*node, "/cluster/counter", "0\n"));
  // 50 increments from each node at once, each under flock(1): read, add
  // one, write, unlock (at flock's exit). Without cluster-wide locks (or
  // without the next holder reading what the last one wrote) some are lost.
  std::string script;
  for (AgentProcess* node : {a.get(), b.get(), c.get()})
    script += fmt::format(
        "(for i in $(seq 50); do LD_PRELOAD={} ONEBOX_SOCKET={} flock /cluster/counter.lock "
        "sh -c 'n=$(cat /cluster/counter); echo $((n+1)) > /cluster/counter' || exit 1; done) & ",
        ShimLib(), node->socket());
  script += "wait";
  RunResult r = RunCommand({"/bin/bash", "-c", script});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(Reads(*node, "/cluster/counter", "150\n"));
}

TEST_F(LocksTest, ByteRangeLocksExcludeAcrossNodesNameTheirHolderAndEndWithTheHolder) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string held = dir_ / "held", ready = dir_ / "ready";
  const uint32_t index_a = IndexOf("a");
  ASSERT_EQ(RunCommand({"/usr/bin/python3", "-c", "open('/cluster/db', 'w').write('x' * 100)"}, On(*a)).exit_code, 0);
  ASSERT_TRUE(Reads(*b, "/cluster/db", std::string(100, 'x')));
  // a's program holds bytes 0-9 of /cluster/db, then sleeps until killed.
  const std::string holder = R"(
import fcntl, os, sys, time
fd = os.open('/cluster/db', os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
open(sys.argv[1], 'w').write(str(os.getpid()))
time.sleep(600)
)";
  RunResult holder_run;
  std::thread holding([&] { holder_run = RunCommand({"/usr/bin/python3", "-c", holder, held}, On(*a)); });
  const std::string holder_said = Await(held);
  if (holder_said.empty()) {  // it failed, and ended
    holding.join();
    FAIL() << holder_run.err;
  }
  const pid_t holder_pid = std::stoi(holder_said);
  // b's program: a range beside the held one is free, an overlapping one is
  // not (EAGAIN), F_GETLK names a's process by its gpid, flock is another
  // lock space, a blocking wait ends at a signal, and the lock comes once
  // its holder is killed.
  const std::string asker = R"(
import errno, fcntl, os, signal, struct, sys, time
fd = os.open('/cluster/db', os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 10)
print('beside: ok')
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 5)
    print('overlap: granted')
except OSError as e:
    print('overlap:', errno.errorcode[e.errno])
got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqixxxx', fcntl.F_WRLCK, os.SEEK_SET, 5, 1, 0))
t, w, start, length, pid = struct.unpack('hhqqixxxx', got)
print('getlk:', t == fcntl.F_WRLCK, start, length, pid)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print('flock: ok')
ro = os.open('/cluster/db', os.O_RDONLY)
try:
    fcntl.lockf(ro, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 50)
except OSError as e:
    print('write lock on a read-only fd:', errno.errorcode[e.errno])
def ring(sig, frame):
    raise TimeoutError()
signal.signal(signal.SIGALRM, ring)
signal.alarm(1)
began = time.time()
try:
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
    print('wait: granted')
except TimeoutError:
    print('wait: interrupted after', round(time.time() - began), 's')
open(sys.argv[1], 'w').write('waiting')
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
print('after the holder: granted')
)";
  RunResult asked;
  std::thread asking([&] { asked = RunCommand({"/usr/bin/python3", "-c", asker, ready}, On(*b)); });
  if (Await(ready).empty()) {
    kill(holder_pid, SIGKILL);
    asking.join();
    holding.join();
    FAIL() << asked.out << asked.err;
  }
  std::this_thread::sleep_for(milliseconds(300));  // b's program is in its wait
  kill(holder_pid, SIGKILL);
  asking.join();
  holding.join();
  EXPECT_EQ(asked.exit_code, 0) << asked.err;
  EXPECT_EQ(asked.out, fmt::format("beside: ok\noverlap: EAGAIN\ngetlk: True 0 10 {}\nflock: ok\n"
                                   "write lock on a read-only fd: EBADF\n"
                                   "wait: interrupted after 1 s\nafter the holder: granted\n",
                                   gpid::Make(index_a, holder_pid)))
      << asked.err;
}

TEST_F(LocksTest, SqliteFromTwoNodesInsertingIntoOneDatabaseLosesNoRow) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(RunCommand({"/usr/bin/python3", "-c",
                        "import sqlite3; c = sqlite3.connect('/cluster/app.db'); c.execute('create table t (who, i)'); "
                        "c.commit()"},
                       On(*a))
                .exit_code,
            0);
  const std::string count = "import sqlite3; print(sqlite3.connect('/cluster/app.db').execute('select count(*) from t').fetchall())";
  ASSERT_TRUE(WaitUntil([&] { return RunCommand({"/usr/bin/python3", "-c", count}, On(*b)).out == "[(0,)]\n"; },
                        seconds(15), "b opens the new database"));
  // Two writers at once, one on a and one on b, each committing 200 rows one
  // by one: SQLite's own locking (fcntl byte ranges on the database) is the
  // cluster's, and each node's open database file shows what the other wrote.
  const std::string writer = R"(
import sqlite3, sys
con = sqlite3.connect('/cluster/app.db', timeout=60, isolation_level=None)
for i in range(200):
    con.execute('BEGIN IMMEDIATE')
    con.execute('INSERT INTO t VALUES (?, ?)', (sys.argv[1], i))
    con.execute('COMMIT')
)";
  RunResult on_b;
  std::thread other([&] { on_b = RunCommand({"/usr/bin/python3", "-c", writer, "b"}, On(*b)); });
  RunResult on_a = RunCommand({"/usr/bin/python3", "-c", writer, "a"}, On(*a));
  other.join();
  EXPECT_EQ(on_a.exit_code, 0) << on_a.err;
  EXPECT_EQ(on_b.exit_code, 0) << on_b.err;
  const std::string check = R"(
import sqlite3
c = sqlite3.connect('/cluster/app.db')
print(c.execute('select who, count(*), count(distinct i) from t group by who').fetchall(), c.execute('pragma integrity_check').fetchall())
)";
  const std::string want = "[('a', 200, 200), ('b', 200, 200)] [('ok',)]\n";
  for (AgentProcess* node : {a.get(), b.get(), c.get()})
    EXPECT_TRUE(WaitUntil(
        [&] {
          RunResult r = RunCommand({"/usr/bin/python3", "-c", check}, On(*node));
          return ::testing::AssertionResult(r.out == want) << r.out << r.err;
        },
        seconds(20), node->address() + " reads every row"));
}

// Programs on two nodes, each keeping one counter file open, increment it
// 50 times each under lockf: every node reads 100. Without the unlock's
// record of the file it ends at 50 every time; without
// the recorder's rule for a stale close (docs/consistency.md, release-to-
// acquire coherence) it lost an increment or more in about one loaded run
// in ten.
TEST_F(LocksTest, ProgramsOnTwoNodesKeepingALockedFileOpenSeeEachOthersWrites) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(RunCommand({"/bin/sh", "-c", "printf 0 > /cluster/n"}, On(*a)).exit_code, 0);
  ASSERT_TRUE(Reads(*b, "/cluster/n", "0"));
  // Each opens the file once and keeps it open: under a write lock on it,
  // read the number, write it plus one (no close, no fsync), unlock. What
  // one node wrote must be what the other reads through its open descriptor.
  const std::string counter = R"(
import fcntl, os
fd = os.open('/cluster/n', os.O_RDWR)
for _ in range(50):
    fcntl.lockf(fd, fcntl.LOCK_EX)
    v = int(os.pread(fd, 32, 0) or b'0')
    data = str(v + 1).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    fcntl.lockf(fd, fcntl.LOCK_UN)
)";
  RunResult on_b;
  std::thread other([&] { on_b = RunCommand({"/usr/bin/python3", "-c", counter}, On(*b)); });
  RunResult on_a = RunCommand({"/usr/bin/python3", "-c", counter}, On(*a));
  other.join();
  EXPECT_EQ(on_a.exit_code, 0) << on_a.err;
  EXPECT_EQ(on_b.exit_code, 0) << on_b.err;
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(Reads(*node, "/cluster/n", "100"));
}

TEST_F(LocksTest, AWaiterKilledWhileItWaitsTakesNothingAwayFromTheNextOne) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string held = dir_ / "held", go = dir_ / "go";
  ASSERT_EQ(RunCommand({"/bin/sh", "-c", ": > /cluster/q.lock"}, On(*a)).exit_code, 0);
  for (AgentProcess* node : {b.get(), c.get()}) ASSERT_TRUE(Reads(*node, "/cluster/q.lock", ""));
  // a holds it until told; b's flock(1) waits and is killed meanwhile; a
  // lets go: the lock must not go to the dead waiter for good.
  const std::string holder = R"(
import fcntl, os, sys, time
f = open('/cluster/q.lock')
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[1], 'w').write(str(os.getpid()))
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
fcntl.flock(f, fcntl.LOCK_UN)
)";
  RunResult holder_run;
  std::thread holding([&] { holder_run = RunCommand({"/usr/bin/python3", "-c", holder, held, go}, On(*a)); });
  if (Await(held).empty()) {
    holding.join();
    FAIL() << holder_run.err;
  }
  const std::string waiter_pid = dir_ / "waiter";
  RunResult waiter = RunCommand(
      {"/bin/bash", "-c",
       fmt::format("LD_PRELOAD={} ONEBOX_SOCKET={} flock /cluster/q.lock true & echo $! > {}; sleep 1; kill -9 $!; wait",
                   ShimLib(), b->socket(), waiter_pid)});
  std::ofstream(go) << "go";
  holding.join();
  EXPECT_EQ(holder_run.exit_code, 0) << holder_run.err;
  RunResult next = RunCommand({"/usr/bin/flock", "-w", "10", "/cluster/q.lock", "true"}, On(*c));
  EXPECT_EQ(next.exit_code, 0) << "the lock stayed with the killed waiter: " << next.err;
}

TEST_F(LocksTest, ALockHeldOnANodeThatDiesIsFreedOnceTheNodeIsDeclaredDead) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string held = dir_ / "held";
  ASSERT_EQ(RunCommand({"/bin/sh", "-c", ": > /cluster/job.lock"}, On(*a)).exit_code, 0);
  for (AgentProcess* node : {b.get(), c.get()}) ASSERT_TRUE(Reads(*node, "/cluster/job.lock", ""));
  const std::string holder = R"(
import fcntl, os, sys, time
f = open('/cluster/job.lock')
fcntl.flock(f, fcntl.LOCK_EX)
open(sys.argv[1], 'w').write(str(os.getpid()))
time.sleep(600)
)";
  RunResult holder_run;
  std::thread holding([&] { holder_run = RunCommand({"/usr/bin/python3", "-c", holder, held}, On(*c)); });
  const std::string holder_said = Await(held);
  if (holder_said.empty()) {
    holding.join();
    FAIL() << holder_run.err;
  }
  const pid_t holder_pid = std::stoi(holder_said);
  RunResult refused = RunCommand({"/usr/bin/flock", "-n", "/cluster/job.lock", "true"}, On(*b));
  EXPECT_EQ(refused.exit_code, 1) << "flock -n while c holds it: " << refused.err;
  // c's agent dies (its program lives on, cut off): once a and b declare c
  // dead, its lock is gone and b's waiting flock(1) gets it.
  const auto killed = std::chrono::steady_clock::now();
  RunResult waited;
  std::thread waiting([&] { waited = RunCommand({"/usr/bin/flock", "/cluster/job.lock", "true"}, On(*b)); });
  std::this_thread::sleep_for(milliseconds(500));
  c->Stop(SIGKILL);
  waiting.join();
  const auto took = std::chrono::steady_clock::now() - killed;
  EXPECT_EQ(waited.exit_code, 0) << waited.err;
  EXPECT_GT(took, seconds(8)) << "granted before c could be declared dead";
  EXPECT_LT(took, seconds(40));
  kill(holder_pid, SIGKILL);
  holding.join();
}

// A node's programs lock a file nobody else locks with the kernel (the
// node holds a lease on its locks): /proc/locks shows them as the holder's
// own locks on the view file, where without a lease it shows nothing (the
// agent keeps them). Another node's calls end the lease: they meet the
// locks as the cluster's (EAGAIN, F_GETLK's gpid, flock's shared and
// exclusive), and get them at the holder's unlocks.
TEST_F(LocksTest, ALockNobodyElseWantsIsTheKernelsOnItsNodeUntilAnotherNodeAsks) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string held = dir_ / "held", asked_marker = dir_ / "asked", go = dir_ / "go",
                    released = dir_ / "released";
  ASSERT_EQ(RunCommand({"/usr/bin/python3", "-c", "open('/cluster/db', 'w').write('x' * 100)"}, On(*a)).exit_code, 0);
  ASSERT_TRUE(Reads(*b, "/cluster/db", std::string(100, 'x')));
  std::this_thread::sleep_for(std::chrono::nanoseconds(kLockLeaseStartDelayNs));  // no agent grants one sooner
  const std::string holder = R"(
import fcntl, os, sys, time
fd = os.open('/cluster/db', os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
f = open('/cluster/db')
fcntl.flock(f, fcntl.LOCK_SH)
open(sys.argv[1], 'w').write(str(os.getpid()))
while not os.path.exists(sys.argv[2]):
    time.sleep(0.02)
fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
fcntl.flock(f, fcntl.LOCK_UN)
open(sys.argv[3], 'w').write('released')
time.sleep(600)
)";
  RunResult holder_run;
  std::thread holding([&] { holder_run = RunCommand({"/usr/bin/python3", "-c", holder, held, go, released}, On(*a)); });
  const std::string holder_said = Await(held);
  if (holder_said.empty()) {
    holding.join();
    FAIL() << holder_run.err;
  }
  const pid_t holder_pid = std::stoi(holder_said);
  EXPECT_EQ(KernelLocksOf(holder_pid), (std::vector<std::string>{"FLOCK READ 0 EOF", "POSIX WRITE 0 9"}));
  const std::string asker = R"(
import errno, fcntl, os, struct, sys
fd = os.open('/cluster/db', os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 5)
    print('overlap: granted')
except OSError as e:
    print('overlap:', errno.errorcode[e.errno])
got = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack('hhqqixxxx', fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
t, w, start, length, pid = struct.unpack('hhqqixxxx', got)
print('getlk:', t == fcntl.F_WRLCK, start, length, pid)
shared = open('/cluster/db')
fcntl.flock(shared, fcntl.LOCK_SH | fcntl.LOCK_NB)
print('flock shared: ok')
fcntl.flock(shared, fcntl.LOCK_UN)
excl = open('/cluster/db')
try:
    fcntl.flock(excl, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print('flock exclusive: granted')
except OSError as e:
    print('flock exclusive:', errno.errorcode[e.errno])
open(sys.argv[1], 'w').write('asked')
fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)
fcntl.flock(excl, fcntl.LOCK_EX)
print('after the unlocks: granted, the holder was told to unlock:', os.path.exists(sys.argv[2]))
)";
  RunResult asked;
  std::thread asking(
      [&] { asked = RunCommand({"/usr/bin/python3", "-c", asker, asked_marker, go}, On(*b)); });
  const bool asker_waits = !Await(asked_marker).empty();
  // The lease ended, the kernel's locks stay (they are the cluster's now too).
  EXPECT_EQ(KernelLocksOf(holder_pid), (std::vector<std::string>{"FLOCK READ 0 EOF", "POSIX WRITE 0 9"}));
  std::ofstream(go) << "go";
  EXPECT_FALSE(Await(released).empty());
  EXPECT_EQ(KernelLocksOf(holder_pid), std::vector<std::string>{});
  asking.join();
  kill(holder_pid, SIGKILL);
  holding.join();
  ASSERT_TRUE(asker_waits) << asked.out << asked.err;
  EXPECT_EQ(asked.exit_code, 0) << asked.err;
  EXPECT_EQ(asked.out, fmt::format("overlap: EAGAIN\ngetlk: True 0 10 {}\nflock shared: ok\n"
                                   "flock exclusive: EAGAIN\nafter the unlocks: granted, the holder was told to unlock: True\n",
                                   gpid::Make(IndexOf("a"), holder_pid)))
      << asked.err;
}

// A restart of an agent (killed) while a program holds a lock under a
// lease: the lock still excludes another node's, and ends at the program's
// unlock. Three cases: a's program holds it and a's agent restarts, with
// the file's home elsewhere (which keeps the lease meanwhile; the new agent
// finds the lock in the kernel and returns the lease with it) or on a
// itself (which forgot it: the new agent's return puts it back within its
// new home's grace); and the home, b, restarts (a sees b's new incarnation
// and reclaims the lease there within b's grace). The program's unlock
// goes to a's new agent: the old one's slots its shim no longer trusts.
TEST_F(LocksTest, ALockTakenUnderALeaseOutlivesARestartOfItsAgent) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::vector<std::string> nodes{NodeIdOf("a"), NodeIdOf("b"), NodeIdOf("c")};
  struct Case {
    std::string name, what;
    AgentProcess* restarts;
    AgentProcess* asks;
  };
  std::vector<Case> cases;
  for (auto [home, restarts, asks, what] :
       {std::tuple{-1, a.get(), b.get(), "homed on another node, a restarts"},
        std::tuple{0, a.get(), b.get(), "homed on a, a restarts"},
        std::tuple{1, b.get(), c.get(), "homed on b, b restarts"}})
    for (int i = 0;; ++i) {
      const std::string name = fmt::format("job{}", i);
      const std::string at = LockHome::HomeOf("cluster/" + name, nodes);
      if (home < 0 ? at == nodes[0] : at != nodes[home]) continue;
      if (std::any_of(cases.begin(), cases.end(), [&](const Case& c) { return c.name == name; })) continue;
      cases.push_back({name, what, restarts, asks});
      break;
    }
  for (const Case& test : cases) {
    SCOPED_TRACE(test.name + ", " + test.what);
    const std::string& name = test.name;
    const std::string held = dir_ / (name + ".held"), go = dir_ / (name + ".go"), released = dir_ / (name + ".released"),
                      shell_held = dir_ / (name + ".shell-held"), shell_released = dir_ / (name + ".shell-released");
    const std::string path = "/cluster/" + name;
    ASSERT_EQ(RunCommand({"/bin/sh", "-c", "echo x > " + path}, On(*a)).exit_code, 0);
    ASSERT_TRUE(Reads(*b, path, "x\n"));
    std::this_thread::sleep_for(std::chrono::nanoseconds(kLockLeaseStartDelayNs));
    const std::string holder = R"(
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
open(sys.argv[2], 'w').write(str(os.getpid()))
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
fcntl.lockf(fd, fcntl.LOCK_UN)
open(sys.argv[4], 'w').write('released')
time.sleep(600)
)";
    RunResult holder_run;
    std::thread holding(
        [&] { holder_run = RunCommand({"/usr/bin/python3", "-c", holder, path, held, go, released}, On(*a)); });
    const std::string holder_said = Await(held);
    if (holder_said.empty()) {
      holding.join();
      FAIL() << holder_run.err;
    }
    const pid_t holder_pid = std::stoi(holder_said);
    // And a shell holds its flock lock, taken by flock(1), which exited:
    // the kernel names that process as the taker. Its sleeps inherit the
    // descriptor and end all the time: one caught exiting by the agent's
    // conversion holds nothing (it once failed the conversion, and the
    // other node was granted the lock).
    RunResult shell_run;
    std::thread shell([&] {
      shell_run = RunCommand({"/bin/bash", "-c",
                              fmt::format("exec 9<>{}; flock 9 || exit 1; echo $$ > {}; "
                                          "while [ ! -e {} ]; do sleep 0.01; done; flock -u 9; echo released > {}; "
                                          "sleep 600",
                                          path, shell_held, go, shell_released)},
                             On(*a));
    });
    const std::string shell_said = Await(shell_held);
    if (shell_said.empty()) {
      kill(holder_pid, SIGKILL);
      holding.join();
      shell.join();
      FAIL() << shell_run.err;
    }
    const pid_t shell_pid = std::stoi(shell_said);
    auto end_holders = [&] {
      kill(holder_pid, SIGKILL);
      kill(shell_pid, SIGKILL);
      holding.join();
      shell.join();
    };
    // To the end of the file: short of the agent's marks.
    const std::vector<std::string> kernel_holds{fmt::format("POSIX WRITE 0 {}", kLockMarkBase - 1)};
    if (KernelLocksOf(holder_pid) != kernel_holds) {
      end_holders();
      FAIL() << "no lease: " << fmt::format("{}", fmt::join(KernelLocksOf(holder_pid), ", "));
    }
    const std::string try_lock = R"(
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
said = []
for name, lock in (('lockf', lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
                   ('flock', lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))):
    try:
        lock()
        said.append(name + ' granted')
    except OSError as e:
        said.append(name + ' ' + errno.errorcode[e.errno])
print(', '.join(said))
)";
    test.restarts->Stop(SIGKILL);
    if (::testing::AssertionResult started = test.restarts->Start(); !started) {
      end_holders();
      FAIL() << started.message();
    }
    // ENOLCK while a home (or the lease's node) cannot be reached yet; never
    // granted, also once the restarted home's grace is over.
    RunResult first;
    EXPECT_TRUE(WaitUntil(
        [&] {
          first = RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*test.asks));
          return ::testing::AssertionResult(first.out.find("ENOLCK") == std::string::npos) << first.out << first.err;
        },
        seconds(15), "the other node's try answered"));
    EXPECT_EQ(first.out, "lockf EAGAIN, flock EAGAIN\n") << first.err;
    std::this_thread::sleep_for(LockHome::kGrace + seconds(1));
    EXPECT_EQ(RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*test.asks)).out,
              "lockf EAGAIN, flock EAGAIN\n");
    std::ofstream(go) << "go";
    EXPECT_FALSE(Await(released).empty());
    EXPECT_FALSE(Await(shell_released).empty());
    EXPECT_TRUE(WaitUntil(
        [&] {
          RunResult r = RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*test.asks));
          return ::testing::AssertionResult(r.out == "lockf granted, flock granted\n") << r.out << r.err;
        },
        seconds(10), "the other node's locks once a's programs unlocked"));
    end_holders();
  }
}

// A program whose main thread ended (pthread_exit) while another thread
// goes on still holds its flock lock: the kernel names the main thread's
// process, a zombie with no descriptors, and the live thread has them. A
// restarted agent, also the file's home, finds the lock there and makes it
// the cluster's: the other node is refused, also after the home's grace.
TEST_F(LocksTest, AFlockOfAProgramWhoseMainThreadEndedOutlivesARestartOfItsAgent) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string holder = R"(
import ctypes, fcntl, os, sys, threading, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
threading.Thread(target=lambda: time.sleep(600)).start()
open(sys.argv[2], 'w').write(str(os.getpid()))
ctypes.CDLL(None).pthread_exit(None)
)";
  HeldOnAAcrossARestartOfA("thread", holder, [&](pid_t pid, const std::string&) {
    // Its main thread is gone: the leader is a zombie, with no descriptors.
    ASSERT_TRUE(WaitUntil([&] { return std::filesystem::is_empty(fmt::format("/proc/{}/fd", pid)); }, seconds(5),
                          "the main thread ended"));
  });
}

// A thread with a descriptor table of its own (unshare(CLONE_FILES)) that
// takes a flock lock under its node's lease (the main thread's lock and
// unlock before it brought the lease): the kernel names its process, whose
// own table has no descriptor of the file; the thread's table has it. The
// other node is refused while the thread holds it (the lease's return
// finds it there), also after a restart of the agent (the file's home), and
// gets it once the program ends.
TEST_F(LocksTest, AFlockOfAThreadWithADescriptorTableOfItsOwnHoldsAcrossNodesAndARestart) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string holder = R"(
import ctypes, fcntl, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def hold():
    if libc.unshare(0x400) != 0:  # CLONE_FILES
        print('unshare', os.strerror(ctypes.get_errno()), file=sys.stderr)
        os._exit(3)
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    open(sys.argv[2], 'w').write(str(os.getpid()))
    time.sleep(600)
first = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(first, fcntl.LOCK_EX)
fcntl.flock(first, fcntl.LOCK_UN)
os.close(first)
threading.Thread(target=hold).start()
time.sleep(600)
)";
  HeldOnAAcrossARestartOfA("own", holder, [&](pid_t pid, const std::string& name) {
    // The process's own table (its main thread's) has no descriptor of the file.
    for (const auto& fd : std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid))) {
      std::error_code ec;
      EXPECT_NE(std::filesystem::read_symlink(fd.path(), ec).filename().string(), name) << fd.path();
    }
  });
}

// A lock the kernel holds that the agent cannot make the cluster's, at a
// restart of the agent that is also the file's home (whose tables went with
// it). a's agent runs without CAP_SYS_PTRACE (a deployment may leave it
// out), and so does its program, which takes a flock lock under a's lease
// and then makes itself non-dumpable: the agent can no longer copy its
// descriptor (pidfd_getfd). b's try is refused, at first because the
// lease's return leaves the lock unconverted and the lease with its home;
// after a's restart because the new agent keeps the file whole for a at
// the home (itself), reclaimed within its grace; before, b was granted the
// lock once the grace was over. It is granted once the program ends. Then
// the same with a lock that /proc/locks names by a process that is gone: a
// child took it on the description it shares with the program and exited.
TEST_F(LocksTest, AnUnconvertibleLockHoldsAcrossARestartOfTheAgentThatIsItsHome) {
  const std::vector<std::string> no_ptrace{"/usr/bin/setpriv", "--bounding-set", "-sys_ptrace"};
  a_prefix_ = no_ptrace;
  StartThree();
  if (HasFatalFailure()) return;
  // A python program that holds a flock lock on argv[1], taken by `take`
  // on its descriptor fd, makes itself non-dumpable and writes its pid to argv[2].
  auto hidden_holder = [](const std::string& take) {
    return fmt::format(R"(
import ctypes, fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
{}
if ctypes.CDLL(None).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
    sys.exit(3)
open(sys.argv[2], 'w').write(str(os.getpid()))
time.sleep(600)
)",
                       take);
  };
  HeldOnAAcrossARestartOfA(
      "unconvertible", hidden_holder("fcntl.flock(fd, fcntl.LOCK_EX)"),
      [&](pid_t pid, const std::string&) {
        EXPECT_EQ(KernelLocksOf(pid), std::vector<std::string>{"FLOCK WRITE 0 EOF"});
      },
      no_ptrace, /*unconvertible=*/true);
  if (HasFatalFailure()) return;
  // Taken by a child that exits, on the description the program keeps.
  HeldOnAAcrossARestartOfA(
      "handed",
      hidden_holder("taker = os.fork()\n"
                    "if taker == 0:\n"
                    "    fcntl.flock(fd, fcntl.LOCK_EX)\n"
                    "    os._exit(0)\n"
                    "os.waitpid(taker, 0)"),
      [&](pid_t pid, const std::string&) {
        EXPECT_EQ(KernelLocksOf(pid), std::vector<std::string>{}) << "/proc/locks names the taker, not the holder";
      },
      no_ptrace, /*unconvertible=*/true);
}

// A thread with a descriptor table of its own (unshare(CLONE_FILES)) locks
// a file that programs on other nodes lock too, outside any lease: the
// shim finds the file in the thread's table (the process's has another
// file under that number) and the agent copies the descriptor through the
// thread (PIDFD_THREAD). b's lock keeps it out until b's program ends, and
// its lock keeps b out.
TEST_F(LocksTest, AThreadWithADescriptorTableOfItsOwnLocksAFileOtherNodesLockToo) {
  if (const int own = static_cast<int>(syscall(SYS_pidfd_open, gettid(), kPidfdThread)); own >= 0) close(own);
  else if (errno == EINVAL) GTEST_SKIP() << "this kernel has no thread pidfds (Linux 6.9): such a thread gets ENOLCK";
  StartThree();
  if (HasFatalFailure()) return;
  const std::string path = "/cluster/shared", b_held = dir_ / "b.held", a_held = dir_ / "a.held";
  ASSERT_EQ(RunCommand({"/bin/sh", "-c", "echo x > " + path}, On(*a)).exit_code, 0);
  ASSERT_TRUE(Reads(*b, path, "x\n"));
  const std::string b_holder = R"(
import fcntl, os, sys, time
open(sys.argv[2] + '.pid', 'w').write(str(os.getpid()))
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], 'w').write('1')
time.sleep(600)
)";
  RunResult b_run;
  std::thread b_holding([&] { b_run = RunCommand({"/usr/bin/python3", "-c", b_holder, path, b_held}, On(*b)); });
  const pid_t b_pid = AwaitPid(b_held + ".pid", b_holding);
  if (b_pid == 0) FAIL() << b_run.err;
  EndHolder end_b{b_pid, b_holding};
  ASSERT_FALSE(Await(b_held).empty()) << "b's program never held the lock";
  const std::string a_program = R"(
import ctypes, errno, fcntl, os, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
unshared, other_open = threading.Event(), threading.Event()
def own():
    if libc.unshare(0x400) != 0:  # CLONE_FILES
        print('unshare', os.strerror(ctypes.get_errno()), flush=True)
        os._exit(3)
    unshared.set()
    other_open.wait()
    fd = os.open(sys.argv[1], os.O_RDWR)
    print('same number' if fd == other else 'numbers differ', flush=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print('granted while b holds it', flush=True)
    except OSError as e:
        print(errno.errorcode[e.errno], flush=True)
    open(sys.argv[2] + '.tried', 'w').write('1')
    deadline = time.time() + 20
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if time.time() > deadline:
                print('never granted:', errno.errorcode[e.errno], flush=True)
                os._exit(4)
            time.sleep(0.05)
    print('granted', flush=True)
    open(sys.argv[2], 'w').write('1')
    time.sleep(600)
open(sys.argv[2] + '.pid', 'w').write(str(os.getpid()))
threading.Thread(target=own).start()
unshared.wait()
other = os.open('/dev/null', os.O_RDONLY)  # the process's table: this number is another file
other_open.set()
time.sleep(600)
)";
  RunResult a_run;
  std::thread a_running([&] { a_run = RunCommand({"/usr/bin/python3", "-c", a_program, path, a_held}, On(*a)); });
  const pid_t a_pid = AwaitPid(a_held + ".pid", a_running);
  if (a_pid == 0) FAIL() << a_run.out << a_run.err;
  EndHolder end_a{a_pid, a_running};
  ASSERT_FALSE(Await(a_held + ".tried").empty()) << "a's thread did not try while b held the lock";
  end_b();  // b's lock ends with its program
  ASSERT_FALSE(Await(a_held).empty()) << "a's thread never got the lock once b's program ended";
  EXPECT_EQ(RunCommand({"/usr/bin/python3", "-c", TryLockScript("flock"), path}, On(*b)).out, "EAGAIN\n");
  end_a();
  EXPECT_EQ(a_run.out, "same number\nEAGAIN\ngranted\n") << a_run.err;
  EXPECT_TRUE(WaitUntil(
      [&] {
        RunResult r = RunCommand({"/usr/bin/python3", "-c", TryLockScript("flock"), path}, On(*b));
        return ::testing::AssertionResult(r.out == "granted\n") << r.out << r.err;
      },
      seconds(10), "b's lock once a's program ended"));
}

// A node's agent stopped (SIGSTOP) for longer than the others wait before
// declaring it dead: they drop its lease, and another node's program takes
// the lock. When the agent goes on, its leases have lapsed (its beat saw
// the gap before it beat again): its programs' locks go through the agent
// and meet the other node's, never the kernel's alone. Two files: one homed
// on the stopped node, which comes back as a new incarnation (its old table
// forgotten, a grace in which the other node reclaims its lock), and one
// homed on another node.
TEST_F(LocksTest, ALeaseOfAnAgentThatWasStoppedLongerThanTheOthersWaitIsOverWhenItGoesOn) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::vector<std::string> nodes{NodeIdOf("a"), NodeIdOf("b"), NodeIdOf("c")};
  std::vector<std::string> paths;
  for (bool on_a : {true, false})
    for (int i = 0;; ++i)
      if (std::string name = fmt::format("paused{}", i); (LockHome::HomeOf("cluster/" + name, nodes) == nodes[0]) == on_a) {
        paths.push_back("/cluster/" + name);
        break;
      }
  for (const std::string& path : paths) {
    ASSERT_EQ(RunCommand({"/bin/sh", "-c", "echo x > " + path}, On(*a)).exit_code, 0);
    ASSERT_TRUE(Reads(*b, path, "x\n"));
  }
  std::this_thread::sleep_for(std::chrono::nanoseconds(kLockLeaseStartDelayNs));
  const std::string try_lock = TryLockScript("lockf");
  // a's program locks and unlocks each: a keeps the leases.
  for (const std::string& path : paths)
    ASSERT_EQ(RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*a)).out, "granted\n");
  ASSERT_EQ(kill(a->pid(), SIGSTOP), 0);
  std::this_thread::sleep_for(seconds(12));  // b and c declare a dead (10 s), dropping its leases
  const std::string holder = R"(
import fcntl, os, sys, time
fds = [os.open(p, os.O_RDWR) for p in sys.argv[2:]]
for fd in fds:
    fcntl.lockf(fd, fcntl.LOCK_EX)
open(sys.argv[1], 'w').write(str(os.getpid()))
time.sleep(600)
)";
  const std::string held = dir_ / "held";
  std::vector<std::string> holder_argv{"/usr/bin/python3", "-c", holder, held};
  holder_argv.insert(holder_argv.end(), paths.begin(), paths.end());
  RunResult holder_run;
  std::thread holding([&] { holder_run = RunCommand(holder_argv, On(*b)); });
  const std::string holder_said = Await(held, seconds(20));
  EXPECT_EQ(kill(a->pid(), SIGCONT), 0);
  if (holder_said.empty()) {
    holding.join();
    FAIL() << holder_run.err;
  }
  // Never granted on a while b's program holds them (EAGAIN once the homes
  // agree again; ENOLCK while they do not).
  for (const std::string& path : paths) {
    SCOPED_TRACE(path);
    std::string said;
    for (int i = 0; i < 10; ++i) {
      said = RunCommand({"/usr/bin/python3", "-c", try_lock, path}, On(*a)).out;
      EXPECT_NE(said, "granted\n") << "a's program got a lock b's program holds";
      std::this_thread::sleep_for(milliseconds(300));
    }
    EXPECT_EQ(said, "EAGAIN\n");
  }
  kill(std::stoi(holder_said), SIGKILL);
  holding.join();
}

}  // namespace
}  // namespace onebox::testing
