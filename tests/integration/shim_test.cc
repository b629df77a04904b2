// Unmodified programs under libonebox.so with a real agent: a workload of
// coreutils, tar, shell and python gives the same output in /cluster as in a
// native directory; what they write is recorded in the namespace; the view's
// real location never shows; nothing leads out of the view; without an agent
// cluster calls fail fast and work again once it is back.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "proto/shim_frame.h"
#include "proto/state_page.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "preload/interposed.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
  return s;
}

class ShimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    agent_ = std::make_unique<AgentProcess>("shim", dir_ / "data", dir_ / "agent.sock");
    ASSERT_TRUE(agent_->Start());
  }
  std::map<std::string, std::string> Env() const {
    return {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent_->socket()}};
  }
  RunResult Sh(const std::string& script) { return RunCommand({"bash", "-c", script}, Env()); }

  TempDir dir_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(ShimTest, WorkloadOutputMatchesANativeDirectory) {
  std::string workload = std::string(ONEBOX_SOURCE_DIR) + "/tests/integration/shim_workload.sh";
  std::string native_dir = dir_ / "native";
  std::filesystem::create_directories(native_dir);
  RunResult native = RunCommand({"bash", workload, native_dir}, {{"D", native_dir}});
  ASSERT_EQ(native.exit_code, 0) << native.err;
  ASSERT_EQ(Sh("mkdir -p /cluster/work").exit_code, 0);
  auto env = Env();
  env["D"] = "/cluster/work";
  RunResult shimmed = RunCommand({"bash", workload, "/cluster/work"}, env);
  EXPECT_EQ(shimmed.exit_code, 0) << shimmed.err;
  EXPECT_EQ(ReplaceAll(shimmed.out, "/cluster/work", "$D"), ReplaceAll(native.out, native_dir, "$D"));
  EXPECT_EQ(ReplaceAll(shimmed.err, "/cluster/work", "$D"), ReplaceAll(native.err, native_dir, "$D"));
  EXPECT_GT(std::count(native.out.begin(), native.out.end(), '\n'), 60) << "the workload did little: " << native.out;
}

TEST_F(ShimTest, WritesAreRecordedInTheNamespace) {
  RunResult r = Sh("mkdir -p /cluster/rec && printf 'abc' > /cluster/rec/f && cp /cluster/rec/f /cluster/rec/g");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto stub = v1::Namespace::NewStub(agent_->channel());
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest("abc", 3, d, &n, EVP_sha256(), nullptr);
  for (const char* path : {"/cluster/rec/f", "/cluster/rec/g"}) {
    v1::StatResponse st;
    grpc::Status rpc;
    auto recorded = [&] {
      v1::StatRequest q;
      q.set_path(path);
      grpc::ClientContext ctx;
      rpc = stub->Stat(&ctx, q, &st);
      return !rpc.ok() || (st.found() && st.inode().size() == 3);  // a failed call ends the wait too
    };
    EXPECT_TRUE(WaitUntil(recorded, std::chrono::seconds(5), std::string(path) + " is recorded, 3 bytes",
                          std::chrono::milliseconds(10)));
    ASSERT_TRUE(rpc.ok()) << rpc.error_message();
    ASSERT_TRUE(st.found()) << path;
    v1::Inode inode = RecordedInode(*agent_, path);  // with its chunk digests, as peers see it
    ASSERT_EQ(inode.chunks_size(), 1) << path;
    EXPECT_EQ(inode.chunks(0), std::string(reinterpret_cast<char*>(d), n)) << path;
  }
}

TEST_F(ShimTest, FsyncRecordsTheVersionBeforeItReturns) {
  // The file stays open: no close tells the agent anything, only fsync. One
  // byte and fsync; then more bytes, not recorded by writing; then fsync.
  std::string script = R"PY(
import json, os, subprocess, sys, time
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
def recorded_size():
    out = subprocess.run(["/usr/bin/python3", sys.argv[1], sys.argv[2], "call", "onebox.v1.Namespace/Stat",
                          '{"path": "/cluster/synced"}'], env=env, capture_output=True, text=True, check=True).stdout
    return int(json.loads(out).get("inode", {}).get("size", 0))
fd = os.open("/cluster/synced", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, b"x")
os.fsync(fd)  # the baseline: recorded by this fsync, whatever the creation event saw
print(recorded_size())
os.write(fd, b"x" * 70000)
time.sleep(0.2)
print(recorded_size())
os.fsync(fd)
print(recorded_size())
os.close(fd)
)PY";
  RunResult r = RunCommand(
      {"python3", "-c", script, std::string(ONEBOX_SOURCE_DIR) + "/tests/tools/grpc_reflect.py", agent_->address()},
      Env());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1\n1\n70001\n") << r.err;  // writes alone are not recorded; fsync is
}

TEST_F(ShimTest, HostProgramsKeepWorkingWithThreadsForksAndClosedFds) {
  std::string script = R"PY(
import os, threading
os.makedirs("/cluster/host", exist_ok=True)
# A daemon-style program that closes every descriptor it did not open itself.
os.closerange(3, 65536)
open("/cluster/host/after-closerange", "w").write("ok")
print(open("/cluster/host/after-closerange").read())
# Threads working in the cluster at once.
def work(t):
    for i in range(50):
        p = f"/cluster/host/t{t}-{i}"
        with open(p, "w") as f:
            f.write(p)
        assert open(p).read() == p
threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(len([n for n in os.listdir("/cluster/host") if n.startswith("t")]))
# fork: parent and child both keep talking to the agent, each on its own link.
pid = os.fork()
if pid == 0:
    os.makedirs("/cluster/host/child", exist_ok=True)
    open("/cluster/host/child/f", "w").write("child")
    os._exit(0)
os.makedirs("/cluster/host/parent", exist_ok=True)
_, status = os.waitpid(pid, 0)
print(status, open("/cluster/host/child/f").read(), os.path.isdir("/cluster/host/parent"))
# subprocess (vfork + close_range in the child): the parent keeps its state, and leaks nothing.
import subprocess
os.stat("/cluster/host/child/f")
before = len(os.listdir("/proc/self/fd"))
for i in range(100):
    subprocess.run(["true"], check=True)
    os.stat("/cluster/host/child/f")
print("fds grew by", len(os.listdir("/proc/self/fd")) - before)
)PY";
  RunResult r = RunCommand({"python3", "-c", script}, Env());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ok\n400\n0 child True\nfds grew by 0\n") << r.err;
  EXPECT_EQ(r.err, "");
}

TEST_F(ShimTest, ForkVforkAndOddRootsNeitherHangNorConfuseTheShim) {
  // Forks while another thread works relative to a cluster cwd: no child may
  // inherit a lock held by that thread.
  RunResult forks = RunCommand({"timeout", "60", "python3", "-c", R"PY(
import os, threading
os.makedirs("/cluster/forks", exist_ok=True)
os.chdir("/cluster/forks")
open("x", "w").write("x")
stop = False
def spin():
    while not stop:
        os.stat("x")
t = threading.Thread(target=spin)
t.start()
for i in range(200):
    pid = os.fork()
    if pid == 0:
        os.stat("x")
        os._exit(0)
    os.waitpid(pid, 0)
stop = True
t.join()
print("forked", i + 1)
)PY"},
                               Env());
  EXPECT_EQ(forks.out, "forked 200\n") << forks.err;
  // The first cluster call of a process happens in a vfork child.
  ASSERT_EQ(Sh("mkdir -p /cluster/vf && printf '#!/bin/sh\\nexit 3\\n' > /cluster/vf/prog.sh && "
               "chmod +x /cluster/vf/prog.sh").exit_code, 0);
  std::string native_dir = dir_ / "vf";
  ASSERT_EQ(RunCommand({"bash", "-c", "mkdir -p " + native_dir + " && printf '#!/bin/sh\\nexit 3\\n' > " +
                                          native_dir + "/prog.sh && chmod +x " + native_dir + "/prog.sh"})
                .exit_code, 0);
  RunResult native = RunCommand({ONEBOX_VFORK_PROBE, native_dir});
  RunResult shimmed = RunCommand({"timeout", "20", ONEBOX_VFORK_PROBE, "/cluster/vf"}, Env());
  EXPECT_EQ(native.out, "child exit 3\nstat 0 errno 0\nstat 0 errno 0\nstat 0 errno 0\n");
  EXPECT_EQ(shimmed.out, native.out) << shimmed.err;
  // A cluster root that contains the agent's own data dir: no self-deadlock.
  auto env = Env();
  env["ONEBOX_ROOT"] = dir_.path();
  RunResult odd = RunCommand({"timeout", "20", "ls", dir_.path()}, env);
  EXPECT_NE(odd.exit_code, 124) << "hung";
  // A root of several components works, and is a mount point too.
  env["ONEBOX_ROOT"] = "/mnt/onebox-test";
  RunResult nested = RunCommand(
      {"bash", "-c", "mkdir /mnt/onebox-test/a && ls /mnt/onebox-test && rmdir /mnt/onebox-test; echo rc=$?"}, env);
  EXPECT_EQ(nested.out, "a\nrc=1\n") << nested.err;
}

// Each process caches directory lookups; another process's rename, rmdir or
// symlink swap must never let it see the old tree afterwards. Run natively and
// in the cluster: the outputs must match.
TEST_F(ShimTest, CachedLookupsNeverOutliveAnotherProcesssChanges) {
  std::string script = R"PY(
import os, subprocess, sys
b = sys.argv[1]
def other(cmd):  # another process (under the shim too, when this one is)
    # os.system: posix_spawn, so no shim code of ours runs in the child before exec
    assert os.system(f"cd {b} && {cmd}") == 0
def show(p):
    try:
        st = os.stat(os.path.join(b, p))
        with open(os.path.join(b, p)) as f:
            return f"{p}: size {st.st_size} {f.read().strip()}"
    except OSError as e:
        return f"{p}: {e.strerror}"
other("mkdir -p a d1 d2 && echo one > a/f && echo first > d1/f && echo second-dir > d2/f && ln -s d1 l")
for round in range(2):
    print(show("a/f"), "|", show("l/f"))
    other("mv a moved && mkdir a && echo replaced-content > a/f")
    print(show("a/f"), "|", show("moved/f"))
    other("rm -rf a && mkdir a")
    print(show("a/f"))
    other("rm l && ln -s d2 l")
    print(show("l/f"))
    other("rm l && ln -s d1 l && rm -rf moved && echo one > a/f")
# A symlink swapped right after a lookup through it, with no directory moved
# (nothing the agent's own watch would flag): the shim that swapped it says so.
for target in ["d2", "d1", "d2"]:
    print(show("l/f"))
    other(f"ln -sfn {target} l.new && mv -T l.new l")
    print(show("l/f"))
    other(f"rm l && ln -s {'d1' if target == 'd2' else 'd2'} l")
    print(show("l/f"))
)PY";
  std::string native_dir = dir_ / "cache-native";
  std::filesystem::create_directories(native_dir);
  RunResult native = RunCommand({"python3", "-c", script, native_dir});
  ASSERT_EQ(native.exit_code, 0) << native.err;
  ASSERT_EQ(Sh("mkdir -p /cluster/cache").exit_code, 0);
  RunResult shimmed = RunCommand({"python3", "-c", script, "/cluster/cache"}, Env());
  EXPECT_EQ(shimmed.exit_code, 0) << shimmed.err;
  EXPECT_EQ(shimmed.out, native.out);
  EXPECT_NE(native.out.find("a/f: size 17 replaced-content"), std::string::npos) << native.out;
}

TEST_F(ShimTest, TheViewsRealLocationNeverShows) {
  RunResult r = Sh(
      "mkdir -p /cluster/w/x && cd /cluster/w/x && pwd && pwd -P && /bin/pwd && realpath . && readlink -f .. && "
      "python3 -c 'import os; print(os.getcwd(), os.path.realpath(\".\"))' && cd .. && ls");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "/cluster/w/x\n/cluster/w/x\n/cluster/w/x\n/cluster/w/x\n/cluster/w\n/cluster/w/x /cluster/w/x\nx\n");
  EXPECT_EQ(r.out.find(agent_->data_dir()), std::string::npos);
  // Leaving the cluster upwards lands in the real "/", not in the view's parent.
  RunResult up = Sh("cd /cluster && cd .. && pwd && ls -d bin etc && cat /cluster/../etc/hostname > /dev/null && echo ok");
  EXPECT_EQ(up.out, "/\nbin\netc\nok\n") << up.err;
}

// A script in the cluster learns its own path from $0, as natively: configure
// finds its sources so ("cannot find sources in /proc/self/fd" before).
TEST_F(ShimTest, AScriptInTheClusterSeesItsPathAsItWasRunAndItsInterpretersArgument) {
  RunResult r = Sh(
      "mkdir -p /cluster/s/sub && cd /cluster/s && "
      "printf '#!/bin/sh\\necho \"$0\" \"$@\"; cat \"$(dirname \"$0\")/data\"\\n' > sub/run.sh && "
      "printf '#! /bin/sh -e\\necho \"$-\" | grep -q e && echo errexit\\n' > sub/opt.sh && "
      "printf 'no interpreter line\\n' > sub/plain && echo data > sub/data && chmod +x sub/run.sh sub/opt.sh sub/plain && "
      "./sub/run.sh a 'b c' && /cluster/s/sub/run.sh && cd sub && ./opt.sh && ./plain; echo plain $?");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // (plain: bash runs a file without "#!" itself, after the kernel's ENOEXEC.)
  EXPECT_EQ(r.out, "./sub/run.sh a b c\ndata\n/cluster/s/sub/run.sh\ndata\nerrexit\nplain 127\n") << r.err;
}

// The agent reads a symlink's target when it records it; after a program set
// the symlink's own times (utimensat with AT_SYMLINK_NOFOLLOW, pjdfstest's
// utimensat/05.t), reading it again would move its atime (relatime). (The
// link's creation is recorded first, a second before: one whose times are
// set before the agent recorded it is still read then; see compatibility.md.)
TEST_F(ShimTest, ASymlinksTimesSetByAProgramStayAsSet) {
  RunResult r = Sh("mkdir -p /cluster/lt && cd /cluster/lt && echo x > f && ln -s f l && sleep 1 && "
                   "touch -h -d @1960000000 l && sleep 1 && stat -c '%X %Y' l && readlink l");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1960000000 1960000000\nf\n");
}

// open, stat and lstat decide "native" on an inlined glance at the path
// (preload/native_path.h): a path that reaches the cluster only once "..",
// "." or "//" are taken out must still reach it, wherever they are in it.
TEST_F(ShimTest, PathsThatNormalizeIntoTheClusterReachItWhereverTheDotsAre) {
  RunResult r = RunCommand({"python3", "-c", R"PY(
import os
os.makedirs("/cluster/nz", exist_ok=True)
with open("/cluster/nz/f", "w") as f:
    f.write("in the cluster\n")
wrong = []
for k in range(0, 50):
    pad = "x" * k
    for p in ["/" + pad + "/../cluster/nz/f", "/" + pad + "/./../cluster/nz/f", "/" + pad + "//../cluster/nz/f",
              "/." * (k % 5 + 1) + "/cluster/nz/f", "/" * (k % 5 + 2) + "cluster/nz/f",
              "/cluster/x" + pad + "/../nz/f"]:
        try:
            fd = os.open(p, os.O_RDONLY)
            got = os.read(fd, 100)
            os.close(fd)
            if got != b"in the cluster\n" or os.stat(p).st_size != 15 or os.lstat(p).st_size != 15:
                wrong.append(p)
        except OSError as e:
            wrong.append(p + ": " + e.strerror)
print(len(wrong), wrong[:3])
)PY"},
                           Env());
  EXPECT_EQ(r.out, "0 []\n") << r.err;
}


// The kernel limits the string a call gets to PATH_MAX, not the name it
// reaches: a relative path of nearly PATH_MAX bytes from a directory in the
// cluster works there as natively (pjdfstest's */03.t), though its cluster
// name is longer; a longer one says ENAMETOOLONG; none leads out of the view
// through a symlink; and a cwd that deep keeps its cluster name.
TEST_F(ShimTest, APathAsLongAsTheKernelTakesWorksFromADirectoryInTheCluster) {
  RunResult r = RunCommand({"python3", "-c", R"PY(
import errno, os
os.makedirs("/cluster/deep", exist_ok=True)
os.chdir("/cluster/deep")
comp = "d" * 127
parts = [comp] * 31                        # 31 * 128 = 3968 bytes with the slashes
fd = os.open(".", os.O_RDONLY)
for p in parts:                            # each mkdir by a short name, from the last one made
    os.mkdir(p, dir_fd=fd)
    fd = os.open(p, os.O_RDONLY, dir_fd=fd)
parent = "/".join(parts)
name = parent + "/" + "n" * (4095 - len(parent) - 1)
assert len(name) == 4095, len(name)
def errname(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
out = []
out.append(errname(lambda: os.mkdir(name)))
out.append(os.path.isdir(name))
out.append(errname(lambda: os.rmdir(name)))
with open(name, "w") as f:
    f.write("deep\n")
out.append(open(name).read() == "deep\n" and os.read(os.open(name.rsplit("/", 1)[1], os.O_RDONLY, dir_fd=fd), 9) == b"deep\n")
renamed = name[:-1] + "m"
os.rename(name, renamed)
out.append(os.path.exists(name) or not os.path.exists(renamed))
os.unlink(renamed)
os.symlink("target", name)
out.append(os.readlink(name))
os.unlink(name)
out.append(errname(lambda: os.mkdir(name + "x")))              # 4096 bytes: too long, as natively
root = os.open("/cluster/deep", os.O_RDONLY)
out.append(errname(lambda: os.mkdir(name, dir_fd=root)))     # relative to a descriptor in the cluster
out.append(errname(lambda: os.rmdir(name, dir_fd=root)))
# Nothing out of the view: symlinks at the bottom to the host's /etc, directly and by "..".
bottom = parent + "/" + "e" * 110
os.mkdir(bottom)
os.symlink("/etc", bottom + "/out")
os.symlink("../" * 40 + "etc", bottom + "/up")
for link in ("out", "up"):
    path = bottom + "/" + link + "/hostname"
    assert 4082 < len(path) < 4095, len(path)
    out.append(errname(lambda: open(path).read()))
# A cwd whose real place in the view is longer than PATH_MAX: getcwd names it
# in the cluster, and ".." climbs the cluster's tree, not the view's real one.
os.chdir(bottom)
out.append(os.getcwd() == "/cluster/deep/" + bottom)
out.append(os.listdir("../" * 32) == [comp])
out.append(sorted(os.listdir("../" * 34)) == sorted(os.listdir("/")))
print(out)
)PY"},
                           Env());
  EXPECT_EQ(r.out,
            "['ok', True, 'ok', True, False, 'target', 'ENAMETOOLONG', 'ok', 'ok', 'ENAMETOOLONG', 'ENAMETOOLONG', "
            "True, True, True]\n")
      << r.err;
}
TEST_F(ShimTest, NothingLeadsOutOfTheView) {
  RunResult r = Sh(
      "ln -s ../../../../../../etc/hostname /cluster/up; ln -s /etc/hostname /cluster/abs; "
      "cat /cluster/up; echo \"rel=$?\"; cat /cluster/abs; echo \"abs=$?\"; readlink /cluster/abs");
  EXPECT_NE(r.out.find("rel=1"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("abs=1"), std::string::npos) << r.out << r.err;
  EXPECT_NE(r.out.find("/etc/hostname\n"), std::string::npos) << "readlink shows the target as written";
  // An absolute symlink to a cluster path works, as it would on one machine.
  RunResult ok = Sh("echo inside > /cluster/target && ln -s /cluster/target /cluster/alias && cat /cluster/alias");
  EXPECT_EQ(ok.out, "inside\n") << ok.err;
  // Relative to a directory fd opened in the cluster, ".." climbs the cluster
  // tree and then the real one, never the view's real location.
  RunResult dirfd = RunCommand({"python3", "-c", R"PY(
import os
os.makedirs("/cluster/fdt/sub", exist_ok=True)
fd = os.open("/cluster/fdt/sub", os.O_RDONLY)
print(os.stat("..", dir_fd=fd).st_ino == os.stat("/cluster/fdt").st_ino)
print(os.stat("../../..", dir_fd=fd).st_ino == os.stat("/").st_ino)
print(sorted(os.listdir(os.open("../../..", os.O_RDONLY, dir_fd=fd))) == sorted(os.listdir("/")))
open("/cluster/fdt/sub/x", "w").write("via dirfd")
print(open(os.open("x", os.O_RDONLY, dir_fd=fd)).read())
)PY"},
                               Env());
  EXPECT_EQ(dirfd.out, "True\nTrue\nTrue\nvia dirfd\n") << dirfd.err;
  // mkstemp from a cwd in the cluster to a path outside it: the real place.
  std::string rel_to_dir = "../../.." + dir_.path() + "/escXXXXXX";
  RunResult tmp = RunCommand({"python3", "-c", R"PY(
import ctypes, os, sys
os.makedirs("/cluster/m/n", exist_ok=True)
os.chdir("/cluster/m/n")
libc = ctypes.CDLL(None)
buf = ctypes.create_string_buffer(sys.argv[1].encode())
fd = libc.mkstemp(buf)
print(fd >= 0, os.path.exists(os.path.join(os.path.dirname(sys.argv[1]), os.path.basename(buf.value.decode()))))
)PY", rel_to_dir},
                             Env());
  EXPECT_EQ(tmp.out, "True True\n") << tmp.err;
  EXPECT_EQ(RunCommand({"bash", "-c", "ls " + agent_->data_dir() + " | grep -c esc"}).out, "0\n");
  // A program run from the cluster holds nothing of the view open.
  RunResult fds = Sh("cp /bin/ls /cluster/ls && /cluster/ls -l /proc/self/fd | grep -c view");
  EXPECT_EQ(fds.out, "0\n") << fds.err;
  // nftw does not follow a symlink out of the cluster.
  RunResult walk = Sh("mkdir -p /cluster/wk && ln -s ../../.. /cluster/wk/up && "
                      "python3 -c 'import ctypes' && find /cluster/wk | sort");
  EXPECT_EQ(walk.out, "/cluster/wk\n/cluster/wk/up\n") << walk.err;
  // The cluster root behaves as a mount point.
  // (A rename, not mv: mv copies across file systems, and left a copy of the
  // cluster behind at a fixed path outside the test's directory.)
  const std::string moved = dir_ / "moved-root";
  RunResult root = Sh("rmdir /cluster; echo \"rmdir=$?\"; python3 -c 'import os\ntry: os.rename(\"/cluster\", \"" +
                      moved + "\")\nexcept OSError: print(\"refused\")'");
  EXPECT_NE(root.out.find("rmdir=1"), std::string::npos) << root.out;
  EXPECT_NE(root.out.find("refused"), std::string::npos) << root.out << root.err;
  EXPECT_NE(access(moved.c_str(), F_OK), 0) << "the cluster root was moved out";
}

// stat, lstat and access take one plain lookup in the view while it holds no
// symlink (nodeagent/view/symlink_guard.h). Symlinks made after many such stats,
// by this process or another, resolve as they always did: inside the cluster
// they lead on, out of it (absolute, or climbing with "..") to nothing. And
// the fast answers are the confined lookup's, field for field and errno for errno.
TEST_F(ShimTest, SymlinksMadeAfterFastStatsResolveAsBefore) {
  std::string outside = dir_ / "outside";
  std::filesystem::create_directories(outside);
  std::ofstream(outside + "/f") << "outside!";
  std::string script = R"PY(
import os, sys, time
b, outside = sys.argv[1], sys.argv[2]
os.makedirs(b + "/in")
os.makedirs(b + "-other")
with open(b + "/in/f", "w") as f:
    f.write("inside")
ino = os.stat(b + "/in/f").st_ino
def show(p):
    try:
        st = os.stat(p)
        return "inside" if st.st_ino == ino else f"OUTSIDE? size {st.st_size}"
    except OSError as e:
        return e.strerror
def many():
    for _ in range(20000):
        os.stat(b + "/in/f")
def probe():
    out = []
    for p in ["in/f", "in", "", "in/", "in/f/", "in/missing", "missing/x", "in/f/x"]:
        for fn in (os.stat, os.lstat):
            try:
                st = fn(os.path.join(b, p))
                out.append((p, fn.__name__, st.st_dev, st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_gid,
                            st.st_size, st.st_mtime_ns, st.st_ctime_ns))
            except OSError as e:
                out.append((p, fn.__name__, e.errno))
        out.append((p, "access", os.access(os.path.join(b, p), os.R_OK)))
    return out
time.sleep(0.2)
fast = probe()
os.symlink("x", b + "-other/keep")  # a symlink in the view: every lookup is confined
slow = probe()
os.unlink(b + "-other/keep")
time.sleep(0.2)
print("same answers", fast == slow, probe() == slow)
# Each made while the view holds no other symlink (the agent has had the time
# to prove it), right after many stats, and looked through at once.
up = "../" * 30 + outside.lstrip("/")
for name, target in [("rel", "in"), ("abs", outside), ("up", up)]:
    time.sleep(0.2)
    many()
    os.symlink(target, b + "/" + name)
    link = b + "/" + name
    print(name, show(link + "/f"), os.access(link + "/f", os.F_OK), os.readlink(link) == target)
    os.unlink(b + "/" + name)
# Made by another process.
for target in [outside, "../../../../../../../.." + outside, "in"]:
    time.sleep(0.2)
    many()
    assert os.system(f"ln -s {target} {b}/other") == 0
    print("other", show(b + "/other/f"))
    os.unlink(b + "/other")
)PY";
  RunResult r = RunCommand({"python3", "-c", script, "/cluster/fast", outside}, Env());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "same answers True True\n"
            "rel inside True True\n"
            "abs No such file or directory False True\n"
            "up No such file or directory False True\n"
            "other No such file or directory\n"
            "other No such file or directory\n"
            "other inside\n")
      << r.err;
}

// One thread makes and removes symlinks (out of the view by an absolute path,
// out by climbing "..", and within it) while others stat, lstat, statx and
// access paths through them: no answer ever describes the file outside.
TEST_F(ShimTest, NoStatFollowsASymlinkOutOfTheViewWhileTheyComeAndGo) {
  std::string outside = dir_ / "outside";
  std::filesystem::create_directories(outside);
  std::ofstream(outside + "/f") << "outside!";
  RunResult r = RunCommand({ONEBOX_SYMLINK_RACE, "/cluster/race", outside, "3"}, Env());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::smatch m;
  std::regex counts(R"(stats (\d+) inside (\d+) missing (\d+) leaks (\d+) cycles (\d+))");
  ASSERT_TRUE(std::regex_search(r.out, m, counts)) << r.out;
  EXPECT_EQ(m[4], "0") << r.err;
  EXPECT_GT(std::stol(m[1]), 10000) << r.out;
  EXPECT_GT(std::stol(m[2]), 0) << "rel/f never resolved: " << r.out;
  EXPECT_GT(std::stol(m[5]), 10) << r.out;
}

// symlink() waits for the agent's lock on the view's lock file (held for a
// moment at the end of a proof) at most about 2 s: an agent that holds it
// longer is stuck, and the call fails as without an agent, saying so once.
TEST_F(ShimTest, SymlinkGivesUpOnALockTheAgentDoesNotRelease) {
  ASSERT_EQ(Sh("mkdir -p /cluster/l").exit_code, 0);
  std::string script = R"PY(
import errno, os, signal, time
signal.signal(signal.SIGALRM, signal.SIG_DFL)
signal.alarm(20)  # a wait without end is a failure, not a hung test
for _ in range(2):
    t0 = time.monotonic()
    try:
        os.symlink("x", "/cluster/l/a")
        print("made")
    except OSError as e:
        print(errno.errorcode[e.errno], 1.5 < time.monotonic() - t0 < 5)
)PY";
  // The agent stuck at the end of a proof: its write lock held.
  int fd = open((agent_->data_dir() + "/view/" + kSymlinkLockFile).c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << strerror(errno);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  ASSERT_EQ(fcntl(fd, F_OFD_SETLK, &fl), 0) << strerror(errno);
  RunResult r = RunCommand({"python3", "-c", script}, Env());
  close(fd);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ENOTCONN True\nENOTCONN True\n") << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("onebox: no agent at " + agent_->socket() + " (symlink lock"), std::string::npos) << r.err;
  // Unlocked: made as usual.
  r = RunCommand({"python3", "-c", script}, Env());
  EXPECT_EQ(r.out, "made\nEEXIST False\n") << r.err;
}

// An announced symlink keeps the count up until the shim says it is made,
// its process exits, or the connection it announced on closes (exec, a
// cancelled thread): here a process that announces and closes, and lives on.
TEST_F(ShimTest, AnAnnouncementEndsWithItsConnection) {
  MappedStatePage page(agent_->socket());  // held open, as a shim holds its connection
  ASSERT_TRUE(page);
  ASSERT_TRUE(WaitUntil([&] { return page->symlinks.load() == 0; }, std::chrono::seconds(10),
                        "the view is proven free of symlinks", std::chrono::milliseconds(2)));
  v1::ShimRequest req;
  req.set_id(3);
  req.mutable_announce_symlink();
  v1::ShimResponse resp;
  std::string err;
  ASSERT_TRUE(ShimCall(agent_->socket(), req, &resp, &err)) << err;  // connects, asks, closes
  ASSERT_NE(resp.announce_symlink().token(), 0u) << resp.message();
  EXPECT_TRUE(WaitUntil([&] { return page->symlinks.load() == 0; }, std::chrono::seconds(5),
                        "the announcement ends with its connection", std::chrono::milliseconds(2)));
}

// A symlink() in the first 400 ms of an agent waits for that delay to end,
// and no longer behind fsync's Publish, which may take long: here four of
// them wait for the recorder, which hashes a large file meanwhile.
TEST_F(ShimTest, AnEarlyAnnouncementWaitsOnlyForTheStartDelay) {
  agent_->Stop();
  std::string view = agent_->data_dir() + "/view/cluster";
  std::filesystem::create_directories(view);
  for (int i = 0; i < 4; ++i) std::ofstream(view + "/small" + std::to_string(i)) << i;
  auto agent = std::make_unique<AgentProcess>("shim", agent_->data_dir(), agent_->socket());
  std::string socket = agent->socket();
  bool answered = false;
  v1::ShimResponse resp;
  std::string err;
  std::chrono::steady_clock::duration took{};
  // On a thread of its own while this one starts the agent (which dies with the thread that started it).
  std::thread early([&] {
    v1::ShimResponse ping;
    std::string e;
    // Looked at every 0.5 ms: the rest must happen within the agent's first 400 ms.
    EXPECT_TRUE(WaitUntil([&] { return ShimPing(socket, &ping, &e); }, std::chrono::seconds(20),
                          "the agent's socket answers", std::chrono::microseconds(500)));
    // The recorder hashes 1 GiB holding the view's record lock: Publish waits for it.
    int fd = open((view + "/big").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, off_t{1} << 30), 0);
    close(fd);
    // Not a wait for a condition the agent shows: a moment for the recorder to
    // start on big before the publishes (and, below, for the publishes to
    // reach the agent before the announcement). Should one fall short, the
    // announcement has nothing to wait behind: the test shows less, but never
    // fails wrongly.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::vector<std::thread> publishes;
    for (int i = 0; i < 4; ++i)
      publishes.emplace_back([&, i] {
        v1::ShimRequest req;
        req.set_id(2);
        req.mutable_publish()->set_path("cluster/small" + std::to_string(i));
        v1::ShimResponse r;
        std::string pe;
        EXPECT_TRUE(ShimCall(socket, req, &r, &pe, 60)) << pe;
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // not a wait either: see above
    v1::ShimRequest req;
    req.set_id(3);
    req.mutable_announce_symlink();
    auto t0 = std::chrono::steady_clock::now();
    answered = ShimCall(socket, req, &resp, &err, 30);
    took = std::chrono::steady_clock::now() - t0;
    for (std::thread& t : publishes) t.join();
  });
  EXPECT_TRUE(agent->Start());
  early.join();
  agent_ = std::move(agent);
  ASSERT_TRUE(answered) << err;
  EXPECT_NE(resp.announce_symlink().token(), 0u) << resp.message();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
  if (ms < 5) GTEST_SKIP() << "announced after the start delay already: nothing to tell";
  EXPECT_LT(ms, 1000) << "the announcement waited behind Publish";
}

// A child forked while another thread is in symlink() does not keep that
// call's lock (the lock is the open file's, which the child shares): the
// agent proves the view free of symlinks again while the children live.
TEST_F(ShimTest, AChildForkedDuringSymlinkHoldsNoLock) {
  std::string script = R"PY(
import os, sys, threading, time
b = "/cluster/forks"
os.makedirs(b, exist_ok=True)
stop = False
def maker():
    i = 0
    while not stop:
        p = f"{b}/l{i % 4}"
        os.symlink("x", p)
        os.unlink(p)
        i += 1
t = threading.Thread(target=maker)
t.start()
kids = []
for _ in range(100):
    pid = os.fork()
    if pid == 0:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        time.sleep(15)
        os._exit(0)
    kids.append(pid)
    time.sleep(0.003)
stop = True
t.join()
print(" ".join(map(str, kids)))
)PY";
  RunResult r = RunCommand({"python3", "-W", "ignore", "-c", script}, Env());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<pid_t> kids;
  std::istringstream pids(r.out);
  for (pid_t pid; pids >> pid;) kids.push_back(pid);
  EXPECT_EQ(kids.size(), 100u) << r.out;
  MappedStatePage page(agent_->socket());  // held open, as a shim holds its connection
  ASSERT_TRUE(page);
  EXPECT_TRUE(WaitUntil([&] { return page->symlinks.load() == 0; }, std::chrono::seconds(8),
                        "no child holds the view's symlink lock", std::chrono::milliseconds(2)));
  for (pid_t pid : kids) kill(pid, SIGKILL);
}

TEST_F(ShimTest, WithoutAgentClusterCallsFailFastAndRecover) {
  std::string sock = dir_ / "later.sock";
  // One process: fails while no agent listens, then works once one does.
  std::string script = R"PY(
import errno, os, signal, subprocess, sys, time
sock, onebox, data = sys.argv[1:4]
t0 = time.monotonic()
for _ in range(3):
    try:
        open("/cluster/r/f")
        print("opened without an agent")
    except OSError as e:
        print("first", errno.errorcode[e.errno])
print("fast", time.monotonic() - t0 < 0.1)
print("native", len(open("/etc/hostname").read()) > 0)
env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
agent = subprocess.Popen([onebox, "agent", "--name", "late", "--data-dir", data, "--listen", "127.0.0.1:0",
                          "--socket", sock], env=env, stderr=subprocess.DEVNULL)
try:
    for _ in range(500):
        try:
            os.makedirs("/cluster/r", exist_ok=True)
            break
        except OSError:
            time.sleep(0.01)
    with open("/cluster/r/f", "w") as f:
        f.write("back")
    print("second", open("/cluster/r/f").read())
finally:
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=15)
)PY";
  agent_->Stop(SIGTERM);
  RunResult r = RunCommand({"python3", "-c", script, sock, OneboxBin(), dir_ / "late-data"},
                           {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", sock}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "first ENOTCONN\nfirst ENOTCONN\nfirst ENOTCONN\nfast True\nnative True\nsecond back\n") << r.err;
  // One line on stderr, however many calls failed.
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("onebox: no agent at " + sock), std::string::npos) << r.err;
}

// tests/tools/calls_probe.c calls every interposed function: same results and
// errno on a cluster directory as on a native one.
TEST_F(ShimTest, EveryInterposedFunctionBehavesAsNatively) {
  std::string native_dir = dir_ / "probe";
  std::filesystem::create_directories(native_dir);
  RunResult native = RunCommand({ONEBOX_CALLS_PROBE, native_dir});
  ASSERT_EQ(native.exit_code, 0) << native.err;
  ASSERT_EQ(Sh("mkdir /cluster/probe").exit_code, 0);
  RunResult shimmed = RunCommand({ONEBOX_CALLS_PROBE, "/cluster/probe"}, Env());
  EXPECT_EQ(shimmed.exit_code, 0) << shimmed.err;
  EXPECT_EQ(shimmed.out, native.out);
  EXPECT_EQ(shimmed.err, native.err);
  for (const auto& e : shim::kInterposed)
    EXPECT_NE(native.out.find("\n" + std::string(e.function) + " "), std::string::npos) << e.function << " is not probed";
  // Crossing between the cluster and a native directory is EXDEV, as between file systems.
  RunResult cross = Sh("touch /cluster/probe/x && python3 -c 'import os\ntry: os.rename(\"/cluster/probe/x\", \"" +
                       (dir_ / "x") + "\")\nexcept OSError as e: print(e.errno == 18)'");
  EXPECT_EQ(cross.out, "True\n") << cross.err;
  // Tools that set a mode after making the entry (mkfifo -m calls lchmod) as natively.
  RunResult modes = Sh("mkfifo -m 666 /cluster/probe/fifo && mknod -m 600 /cluster/probe/fifo2 p && "
                       "stat -c %a /cluster/probe/fifo /cluster/probe/fifo2");
  EXPECT_EQ(modes.out, "666\n600\n") << modes.err;
}

TEST_F(ShimTest, OneboxExecRunsACommandUnderTheShim) {
  RunResult r = RunCommand({OneboxBin(), "--socket", agent_->socket(), "exec", "--", "bash", "-c",
                            "cd /cluster && git init -q r && cd r && echo hi > f && git add f && "
                            "git -c user.email=a@b -c user.name=n commit -qm first && git log --format=%s && pwd"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "first\n/cluster/r\n");
  RunResult missing = RunCommand({OneboxBin(), "--socket", agent_->socket(), "exec", "--", "/no/such/program"});
  EXPECT_EQ(missing.exit_code, 127);
  EXPECT_NE(missing.err.find("onebox: cannot run /no/such/program"), std::string::npos) << missing.err;
  EXPECT_EQ(RunCommand({OneboxBin(), "exec"}).exit_code, 2);
}

// A pod: a program in a mount namespace of its own whose root holds only
// the system's programs, the agent's socket and the shim (each bound alone,
// read-only, as hostPath volumes), not the agent's data dir. The agent sends
// it the view as a detached mount: files, cwd, children that start in the
// view, scripts, fds inherited from another process's copy, nftw and find
// all work, and ".." from the descriptor the program holds stays in the view
// (a plain descriptor of the view directory would lead to the data dir).
RunResult RunInPod(const TempDir& dir, const AgentProcess& agent, const std::string& workload) {
  std::string root = dir / "pod-root";
  std::filesystem::create_directories(root);
  return RunCommand({"unshare", "--mount", "--propagation", "private", "bash",
                     std::string(ONEBOX_SOURCE_DIR) + "/tests/integration/pod_namespace.sh", root, agent.socket(),
                     ShimLib(), agent.data_dir(), workload});
}

TEST_F(ShimTest, AProgramInAnotherMountNamespaceWorksWithOnlyTheSocketAndTheShim) {
  if (geteuid() != 0) GTEST_SKIP() << "makes a mount namespace and a root for it: needs root (CI runs as root)";
  ASSERT_EQ(Sh("mkdir -p /cluster/pod && echo from-host > /cluster/pod/from-host").exit_code, 0);
  RunResult pod = RunInPod(dir_, *agent_, std::string(ONEBOX_SOURCE_DIR) + "/tests/integration/pod_workload.sh");
  EXPECT_EQ(pod.exit_code, 0) << pod.err;
  EXPECT_EQ(pod.out,
            "no data dir\n"
            "from-pod\nfrom-host\n"
            "/cluster/pod\n/cluster/pod\n/cluster/pod\nfrom-pod\n"
            "/cluster/pod/sub\nfrom-pod\na\nfrom-host\nsub\n"
            "script ran in /cluster/pod/sub\n"
            "from-pod\n"
            "/cluster/pod\n/cluster/pod/a\n/cluster/pod/from-host\n/cluster/pod/s.sh\n/cluster/pod/sub\n"
            "/cluster/pod/sub/c\n"
            "fchdir: /cluster/pod/sub\n"
            "nftw: 0 /cluster/pod/a:a:1 /cluster/pod/from-host:from-host:1 /cluster/pod/s.sh:s.sh:1 "
            "/cluster/pod/sub/c:c:2 /cluster/pod/sub:sub:1 /cluster/pod:pod:0\n"
            "view fd: True up is the view\nview fds: 1\n")
      << pod.err;
  EXPECT_EQ(pod.err, "");
  // What the pod wrote is the cluster's, as any program's.
  RunResult host = Sh("cat /cluster/pod/a /cluster/pod/sub/c");
  EXPECT_EQ(host.out, "from-pod\nfrom-pod\n") << host.err;
}

// The View request as any local program could send it: the copy leads
// nowhere above the view, is nosuid and nodev, and a connection gets one
// only (each copy is a mount namespace of the node's).
TEST_F(ShimTest, TheViewAsADescriptorLeadsNowhereElseAndComesOncePerConnection) {
  if (geteuid() != 0) GTEST_SKIP() << "the agent copies its view's mount: needs root (CI runs as root)";
  int conn = ConnectShimSocket(agent_->socket(), 2);
  ASSERT_GE(conn, 0) << strerror(errno);
  // One View; the answer and the descriptor riding on it.
  auto ask = [&](int* passed) {
    v1::ShimRequest req;
    req.set_id(9);
    req.mutable_view();
    v1::ShimResponse resp;
    EXPECT_TRUE(AskWithDescriptor(conn, req, &resp, passed)) << "no whole answer";
    return resp;
  };
  int view = -1;
  v1::ShimResponse first = ask(&view);
  EXPECT_EQ(first.err(), 0) << first.message();
  ASSERT_GE(view, 0);
  struct stat top, up, real_view;
  ASSERT_EQ(fstat(view, &top), 0);
  ASSERT_EQ(stat((agent_->data_dir() + "/view").c_str(), &real_view), 0);
  EXPECT_EQ(top.st_ino, real_view.st_ino);
  EXPECT_EQ(fstatat(view, "../..", &up, 0), 0);
  EXPECT_EQ(up.st_ino, top.st_ino) << "\"..\" leads out of the view";
  char link[64];
  const ssize_t len = readlink(("/proc/self/fd/" + std::to_string(view)).c_str(), link, sizeof link);
  EXPECT_EQ(std::string(link, len > 0 ? static_cast<size_t>(len) : 0), "/") << "not a mount of its own";
  struct statvfs fs;
  ASSERT_EQ(fstatvfs(view, &fs), 0);
  EXPECT_EQ(fs.f_flag & (ST_NOSUID | ST_NODEV), ST_NOSUID | ST_NODEV);
  close(view);
  int again = -1;
  v1::ShimResponse second = ask(&again);
  EXPECT_EQ(again, -1);
  EXPECT_NE(second.err(), 0);
  EXPECT_NE(second.message().find("has its copy of the view already"), std::string::npos) << second.message();
  close(conn);
}

// An agent without CAP_SYS_ADMIN cannot make the detached view: a pod's
// cluster calls fail at once with ENOTCONN, and the program is told why.
TEST(PodTest, WithoutCapSysAdminThePodIsToldWhyAndSeesNothing) {
  if (geteuid() != 0) GTEST_SKIP() << "makes a mount namespace and a root for it: needs root (CI runs as root)";
  TempDir dir;
  auto agent = QuietLoopbackAgent(dir.path(), "nocap");
  agent->set_command_prefix({"setpriv", "--bounding-set", "-sys_admin"});
  ASSERT_TRUE(agent->Start());
  std::string workload = dir / "workload.sh";
  std::ofstream(workload) << "cat /cluster/f; echo \"cat: $?\"; mkdir /cluster/d; echo \"mkdir: $?\"\n";
  RunResult pod = RunInPod(dir, *agent, workload);
  EXPECT_EQ(pod.exit_code, 0) << pod.err;
  EXPECT_EQ(pod.out, "cat: 1\nmkdir: 1\n");
  EXPECT_NE(pod.err.find("onebox: programs in another mount namespace cannot reach the view"), std::string::npos) << pod.err;
  EXPECT_NE(pod.err.find("needs CAP_SYS_ADMIN"), std::string::npos) << pod.err;
  EXPECT_NE(pod.err.find("Transport endpoint is not connected"), std::string::npos) << pod.err;
  EXPECT_NE(agent->log().find("cannot reach the view"), std::string::npos) << agent->log();
}

// The export map is written from preload/interposed.h, and the link fails
// when a listed function has no wrapper; this checks the result, and that
// each function is defined in its family's file (nm -l reads the debug info:
// a build without it checks the names only). docs/compatibility.md is checked
// against the list by the compat_doc_follows_interposed_list test.
TEST_F(ShimTest, ExportsExactlyTheInterposedFunctionsEachFromItsFamilysFile) {
  RunResult nm = RunCommand({"nm", "-D", "-l", "--defined-only", ShimLib()});
  ASSERT_EQ(nm.exit_code, 0) << nm.err;
  std::map<std::string, std::string> file_of;  // exported name -> the file defining it ("" if unknown)
  std::istringstream lines(nm.out);
  for (std::string line; std::getline(lines, line);) {
    size_t tab = line.find('\t');  // "ADDRESS T NAME[\tPATH:LINE]"
    std::string symbol = line.substr(0, tab);
    std::string where = tab == std::string::npos ? "" : line.substr(tab + 1, line.rfind(':') - tab - 1);
    file_of[symbol.substr(symbol.rfind(' ') + 1)] = std::filesystem::path(where).filename();
  }
  std::vector<std::string> exported, listed;
  for (const auto& [name, file] : file_of) exported.push_back(name);
  for (const auto& e : shim::kInterposed) listed.emplace_back(e.function);
  std::sort(listed.begin(), listed.end());
  EXPECT_EQ(exported, listed);
  EXPECT_GE(listed.size(), 70u);
  for (const auto& e : shim::kInterposed) {
    std::string file = file_of[std::string(e.function)];
    EXPECT_TRUE(file.empty() || file == std::string(e.family) + ".cc") << e.function << " is defined in " << file;
  }
}

}  // namespace
}  // namespace onebox::testing
