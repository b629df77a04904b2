// Three agents on loopback. Membership: agents that --join one another list
// every member with its state, address and a cluster-unique index; a killed
// member turns suspect, then dead, and comes back alive (same id and index).
// Replication: writes reach every node, a down node catches up. Content:
// files written through the shim on one node are read, byte for byte,
// through the shim on the others; an open whose content no live node holds
// fails fast with EIO.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/xattr.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <set>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "onebox/v1/peer.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

TEST_F(ClusterTest, JoinedAgentsListEachOtherThenNoticeAFailureAndARecovery) {
  StartThree();
  if (HasFatalFailure()) return;

  // Indexes: chosen once gossip has settled, distinct, the same seen from anywhere.
  std::map<std::string, uint32_t> index_of;
  auto indexes_chosen = [&] {
    std::set<uint32_t> distinct;
    index_of.clear();
    for (const v1::Node& n : Nodes(*b)) {
      index_of[n.name()] = n.index();
      if (n.index() != 0) distinct.insert(n.index());
    }
    return Observed(distinct.size() == 3, index_of);
  };
  EXPECT_TRUE(WaitUntil(indexes_chosen, seconds(10), "b lists three distinct indexes"));
  ASSERT_EQ(index_of.size(), 3u);
  std::set<uint32_t> distinct;
  for (auto& [name, idx] : index_of) distinct.insert(idx);
  EXPECT_EQ(distinct, (std::set<uint32_t>{1, 2, 3}));
  std::string c_id;
  for (const v1::Node& n : Nodes(*a)) {
    if (n.name() == "c") c_id = n.node_id();
    EXPECT_EQ(n.self(), n.name() == "a");
  }
  // The CLI shows them all.
  RunResult cli = RunCommand({OneboxBin(), "--agent", a->address(), "nodes"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(std::count(cli.out.begin(), cli.out.end(), '\n'), 4) << cli.out;

  // c fails: suspect, then dead, as a and b see it.
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  EXPECT_TRUE(WaitForStates(*a, {{"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_SUSPECT}},
                            seconds(6)));
  EXPECT_TRUE(WaitForStates(*b, {{"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_DEAD}},
                            seconds(20)));

  // c comes back (on another port): alive again, same id and index, new address.
  ASSERT_TRUE(c->Start());
  EXPECT_TRUE(WaitForStates(*a, all_alive, seconds(10)));
  for (const v1::Node& n : Nodes(*a)) {
    if (n.name() != "c") continue;
    EXPECT_EQ(n.node_id(), c_id);
    EXPECT_EQ(n.index(), index_of["c"]);
    EXPECT_EQ(n.address(), c->address());
  }
}

// The size agent recorded for path (Namespace/Stat), -1 when it holds none.
int64_t RecordedSize(AgentProcess& agent, const std::string& path) {
  v1::StatRequest q;
  q.set_path(path);
  v1::StatResponse r;
  grpc::ClientContext ctx;
  EXPECT_TRUE(v1::Namespace::NewStub(agent.channel())->Stat(&ctx, q, &r).ok());
  return r.found() ? static_cast<int64_t>(r.inode().size()) : -1;
}

grpc::Status Put(AgentProcess& a, const std::string& key, const std::string& value) {
  v1::PutRequest q;
  q.set_key(key);
  q.set_value(value);
  v1::PutResponse r;
  return CallOverSocket(a, "/onebox.v1.Store/Put", q, &r);
}

TEST_F(ClusterTest, WritesReachEveryNodeAndADownNodeCatchesUp) {
  StartThree();
  if (HasFatalFailure()) return;

  ASSERT_TRUE(Put(*a, "from/a", "1").ok());
  ASSERT_TRUE(Put(*b, "from/b", "2").ok());
  // A file written through the shim on a: its metadata reaches b and c.
  RunResult shim = RunCommand({"bash", "-c", "echo replicated > /cluster/r.txt"},
                              {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
  ASSERT_EQ(shim.exit_code, 0) << shim.err;
  // a records the file when its writer closes it (the creation may be recorded
  // first, empty): only then is there something to converge on.
  auto recorded = [](AgentProcess& agent) {
    v1::StatRequest sq;
    sq.set_path("/cluster/r.txt");
    v1::StatResponse sr;
    grpc::ClientContext sctx;
    return v1::Namespace::NewStub(agent.channel())->Stat(&sctx, sq, &sr).ok() && sr.found() &&
           sr.inode().size() == 11u;
  };
  ASSERT_TRUE(WaitUntil([&] { return recorded(*a); }, seconds(10), "a has recorded /cluster/r.txt, 11 bytes"));
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(10)));
  for (AgentProcess* agent : {b.get(), c.get()}) {
    v1::GetRequest q;
    q.set_key("from/a");
    v1::GetResponse r;
    grpc::ClientContext ctx;
    ASSERT_TRUE(v1::Store::NewStub(agent->channel())->Get(&ctx, q, &r).ok());
    EXPECT_EQ(r.value(), "1");
    v1::StatRequest sq;
    sq.set_path("/cluster/r.txt");
    v1::StatResponse sr;
    grpc::ClientContext sctx;
    ASSERT_TRUE(v1::Namespace::NewStub(agent->channel())->Stat(&sctx, sq, &sr).ok());
    EXPECT_TRUE(sr.found());
    EXPECT_EQ(sr.inode().size(), 11u);
  }

  // c is down while a and b write, delete, and race on one key.
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Put(*a, "while-down/" + std::to_string(i), "v").ok());
  {
    v1::DeleteRequest q;
    q.set_key("from/b");
    v1::DeleteResponse r;
    ASSERT_TRUE(CallOverSocket(*b, "/onebox.v1.Store/Delete", q, &r).ok());
  }
  std::thread racer([&] {
    for (int i = 0; i < 20; ++i) (void)Put(*a, "race", "a" + std::to_string(i));
  });
  for (int i = 0; i < 20; ++i) (void)Put(*b, "race", "b" + std::to_string(i));
  racer.join();
  ASSERT_TRUE(c->Start());  // on another port: it gossips, is found alive, and is sent what it missed
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
  v1::ScanRequest q;
  q.set_prefix("while-down/");
  q.set_limit(1000);
  v1::ScanResponse r;
  grpc::ClientContext ctx;
  ASSERT_TRUE(v1::Store::NewStub(c->channel())->Scan(&ctx, q, &r).ok());
  EXPECT_EQ(r.entries_size(), 50);
  std::set<std::string> race_values;
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    v1::GetRequest g;
    g.set_key("race");
    v1::GetResponse gr;
    grpc::ClientContext gctx;
    ASSERT_TRUE(v1::Store::NewStub(agent->channel())->Get(&gctx, g, &gr).ok());
    race_values.insert(gr.value());
    v1::GetRequest d;
    d.set_key("from/b");
    v1::GetResponse dr;
    grpc::ClientContext dctx;
    ASSERT_TRUE(v1::Store::NewStub(agent->channel())->Get(&dctx, d, &dr).ok());
    EXPECT_FALSE(dr.found()) << "the delete did not reach every node";
  }
  EXPECT_EQ(race_values.size(), 1u) << "concurrent writes did not resolve alike everywhere";
}

bool IsStub(const std::string& view_file) { return getxattr(view_file.c_str(), "user.onebox.stub", nullptr, 0) >= 0; }

v1::Version VersionOf(AgentProcess& agent, const std::string& path) {
  v1::StatRequest q;
  q.set_path(path);
  v1::StatResponse r;
  grpc::ClientContext ctx;
  grpc::Status s = v1::Namespace::NewStub(agent.channel())->Stat(&ctx, q, &r);
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {  // the connection went (a loaded machine): once more
    grpc::ClientContext again;
    s = v1::Namespace::NewStub(agent.channel())->Stat(&again, q, &r);
  }
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(r.found()) << path;
  return r.version();
}

// The agent's marks on view files (a stub's, a placement's) are its own:
// programs under the shim neither see them in lists nor read, set or copy
// them (cp -a would copy a placement's mark onto a program's file).
TEST_F(ClusterTest, TheAgentsMarksAreHiddenFromProgramsAndNotCopied) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(Shell(*a, "mkdir -p /cluster/m && head -c 100000 /dev/urandom > /cluster/m/f").exit_code, 0);
  std::string b_f = dir_ / "b-data/view/cluster/m/f", c_f = dir_ / "c-data/view/cluster/m/f";
  // Both there: a stub on one, and on the other the content, marked as placed.
  auto placed = [](const std::string& f) { return getxattr(f.c_str(), "user.onebox.placed", nullptr, 0) >= 0; };
  ASSERT_TRUE(WaitUntil([&] { return (IsStub(b_f) && placed(c_f)) || (IsStub(c_f) && placed(b_f)); }, seconds(15),
                        "a stub on one of b and c, a placed copy on the other"));
  AgentProcess& holder = IsStub(b_f) ? *c : *b;
  AgentProcess& stub_node = IsStub(b_f) ? *b : *c;
  const std::string held = IsStub(b_f) ? c_f : b_f;
  const std::string probe = R"(
import errno, os
p = '/cluster/m/f'
def err(call):
    try:
        call()
        return 'ok'
    except OSError as e:
        return errno.errorcode[e.errno]
def marks(names):
    return [n for n in names if n.startswith('user.onebox')]
print(marks(os.listxattr(p)), err(lambda: os.getxattr(p, 'user.onebox.placed')),
      err(lambda: os.getxattr(p, 'user.onebox.stub')), err(lambda: os.setxattr(p, 'user.onebox.stub', b'x')),
      err(lambda: os.removexattr(p, 'user.onebox.placed')))
os.setxattr(p, 'user.mine', b'1')
print(os.listxattr(p))
fd = os.open(p, os.O_RDONLY)  # (a stub is made whole, and marked as placed)
print(marks(os.listxattr(fd)), err(lambda: os.getxattr(fd, 'user.onebox.placed')))
)";
  for (AgentProcess* agent : {&stub_node, &holder}) {
    SCOPED_TRACE(agent->address());
    RunResult r = RunCommand({"/usr/bin/python3", "-c", probe}, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent->socket()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "[] ENODATA ENODATA EPERM EPERM\n['user.mine']\n[] ENODATA\n");
  }
  // cp -a keeps the program's attribute and not the agent's mark.
  ASSERT_EQ(Shell(holder, "cp -a /cluster/m/f /cluster/m/g").exit_code, 0);
  const std::string g = (held.substr(0, held.size() - 1)) + "g";
  EXPECT_LT(getxattr(g.c_str(), "user.onebox.placed", nullptr, 0), 0) << "cp -a copied the placement mark";
  EXPECT_EQ(getxattr(g.c_str(), "user.mine", nullptr, 0), 1);
}

// A thread with a descriptor table of its own (unshare(CLONE_FILES)) uses
// cluster files as any other: the shim finds its descriptors in its own
// table (/proc/thread-self), not in the process's, where the same numbers
// are free or other files. On the node holding a stub of a file: it reads
// the whole content (brought on open), sets an attribute by path and lists
// it without the agent's marks, and the process's other file under the
// same number is left alone.
TEST_F(ClusterTest, AThreadWithADescriptorTableOfItsOwnUsesClusterFilesAsAnyOther) {
  StartThree();
  if (HasFatalFailure()) return;
  RunResult made = Shell(*a,
                        "mkdir -p /cluster/own && head -c 300000 /dev/urandom > /cluster/own/f && echo other > "
                        "/cluster/own/other && sha256sum < /cluster/own/f | cut -d' ' -f1");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string& sum = made.out;
  const std::string b_f = dir_ / "b-data/view/cluster/own/f", c_f = dir_ / "c-data/view/cluster/own/f";
  ASSERT_TRUE(WaitUntil([&] { return IsStub(b_f) || IsStub(c_f); }, seconds(15), "a stub of f on b or c"));
  AgentProcess& stub_node = IsStub(b_f) ? *b : *c;
  const std::string program = R"(
import ctypes, hashlib, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
unshared, other_open, said = threading.Event(), threading.Event(), []
def own():
    if libc.unshare(0x400) != 0:  # CLONE_FILES
        said.append('unshare ' + os.strerror(ctypes.get_errno()))
        unshared.set()
        return
    unshared.set()
    other_open.wait()
    def step(call):
        try:
            said.append(call())
        except OSError as e:
            said.append('error ' + str(e))
    def attribute():  # (the shim's descriptor for it gets the number 'other' has in the process's table)
        os.setxattr('/cluster/own/f', 'user.t', b'1')
        return str(os.listxattr('/cluster/own/f'))
    def read_all():
        fd = os.open('/cluster/own/f', os.O_RDONLY)  # (a stub: the content comes on open)
        said.append('same number' if fd == other else 'numbers differ')
        data = b''
        while chunk := os.read(fd, 65536):
            data += chunk
        os.close(fd)
        return hashlib.sha256(data).hexdigest()
    step(attribute)
    step(read_all)
t = threading.Thread(target=own)
t.start()
unshared.wait()
other = os.open('/cluster/own/other', os.O_RDONLY)  # the process's table: this number is another file
other_open.set()
t.join()
print('\n'.join(said))
print(os.listxattr('/cluster/own/other'), os.read(other, 100))
)";
  RunResult r = RunCommand({"/usr/bin/python3", "-c", program},
                           {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", stub_node.socket()}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "['user.t']\nsame number\n" + sum + "[] b'other\\n'\n") << r.err;
  // The attribute is the file's, on every node.
  EXPECT_TRUE(Eventually(*a, "python3 -c \"import os; print(os.getxattr('/cluster/own/f', 'user.t'))\"", "b'1'\n"));
}

// Records of up to 1 MiB each (a store value, or a file with its extended
// attributes) that pile up while a peer does not answer go to it in batches
// within gRPC's message size: it catches up, with no stream stuck resending
// a batch the peer refuses as too large.
TEST_F(ClusterTest, ABacklogOfLargeRecordsReachesAPeerThatWasAway) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(kill(b->pid(), SIGSTOP), 0);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(Put(*a, fmt::format("big/{}", i), std::string(1'000'000, 'a' + i)).ok());
  ASSERT_EQ(kill(b->pid(), SIGCONT), 0);
  EXPECT_TRUE(WaitUntil(
      [&] {
        v1::StatusResponse st;
        grpc::ClientContext ctx;
        if (!v1::Cluster::NewStub(a->channel())->Status(&ctx, {}, &st).ok()) return Observed(false, "no status");
        for (const v1::ReplicationLag& lag : st.replication())
          if (lag.name() == "b") return Observed(lag.entries_behind() == 0, lag.ShortDebugString());
        return Observed(false, st.ShortDebugString());
      },
      seconds(20), "a's pusher has brought b up to date"));
}

// An extended attribute set and removed at once, on 150 files and 50
// directories, on the node that made them and then on one where they were
// placed: the removal reaches the other nodes, also when the recorder
// looked at the entry in between and the removal came while it looked (it
// kept what it knew of the entry from before, and took the directory, as
// its older record showed it, for unchanged: 2 to 21 directories kept the
// attribute on the other nodes, for good).
TEST_F(ClusterTest, AnAttributeSetAndRemovedAtOnceIsGoneOnEveryNode) {
  StartThree();
  if (HasFatalFailure()) return;
  // With "make": makes the entries first (and lets them be recorded).
  const std::string script = R"(
import os, sys, time
names = ['/cluster/xa/f%d' % i for i in range(150)] + ['/cluster/xa/d%d' % i for i in range(50)]
if sys.argv[1] == 'make':
    os.makedirs('/cluster/xa', exist_ok=True)
    for n in names:
        if '/f' in n:
            with open(n, 'w') as f: f.write('x')
        else:
            os.mkdir(n)
    time.sleep(1)
for n in names:
    os.setxattr(n, 'user.t', b'1')
    t = time.monotonic()
    while time.monotonic() - t < 0.0003:
        pass
    os.removexattr(n, 'user.t')
print(sum(1 for n in names if 'user.t' in os.listxattr(n)))
)";
  const std::string count =
      "python3 -c \"import os; d='/cluster/xa'; n=os.listdir(d); "
      "print(len(n), sum(1 for x in n if 'user.t' in os.listxattr(d + '/' + x)))\"";
  // On a, which makes them; then on b, where they are a's, placed there.
  for (auto [node, others, step] : {std::tuple{a.get(), std::vector{b.get(), c.get()}, "make"},
                                    std::tuple{b.get(), std::vector{a.get(), c.get()}, "again"}}) {
    RunResult made = RunCommand({"/usr/bin/python3", "-c", script, step},
                                {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", node->socket()}});
    ASSERT_EQ(made.exit_code, 0) << made.err;
    ASSERT_EQ(made.out, "0\n");
    for (AgentProcess* agent : others)
      EXPECT_TRUE(Eventually(*agent, count, "200 0\n", seconds(15))) << step << " on " << node->address() << ", "
                                                                         << agent->address();
  }
}

// Two names of one file (link(2)) are one file on every node: the same
// inode under both names, its link count, and a write, chmod or removal
// through either name on any node seen through the other everywhere.
TEST_F(ClusterTest, HardLinksAreOneFileOnEveryNode) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string show = R"(
import os
try:
    f, g = os.stat('/cluster/h/f'), os.stat('/cluster/h/d/g')
    print(f.st_ino == g.st_ino, f.st_nlink, oct(f.st_mode), open('/cluster/h/d/g').read().replace('\n', '|'))
except OSError as e:
    print(e.strerror)
)";
  auto shows = [&](AgentProcess& node, const std::string& want) { return PrintsUnderShim(node, show, want); };
  auto sh = [&](AgentProcess& node, const std::string& script) {
    return RunCommand({"bash", "-c", script}, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", node.socket()}});
  };
  ASSERT_EQ(sh(*a, "mkdir -p /cluster/h/d && echo one > /cluster/h/f && ln /cluster/h/f /cluster/h/d/g").exit_code, 0);
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(shows(*node, "True 2 0o100644 one|\n"));
  // Written through the second name on b, changed in mode through the first on c.
  ASSERT_EQ(sh(*b, "echo two >> /cluster/h/d/g").exit_code, 0);
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(shows(*node, "True 2 0o100644 one|two|\n"));
  ASSERT_EQ(sh(*c, "chmod 600 /cluster/h/f").exit_code, 0);
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(shows(*node, "True 2 0o100600 one|two|\n"));
  // A third name, made on c; then the first removed on a: two names left everywhere.
  ASSERT_EQ(sh(*c, "ln /cluster/h/d/g /cluster/h/third").exit_code, 0);
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(shows(*node, "True 3 0o100600 one|two|\n"));
  ASSERT_EQ(sh(*a, "rm /cluster/h/f && echo three >> /cluster/h/third").exit_code, 0);
  const std::string left = R"(
import os
try:
    g, t = os.stat('/cluster/h/d/g'), os.stat('/cluster/h/third')
    print(os.path.exists('/cluster/h/f'), g.st_ino == t.st_ino, g.st_nlink, open('/cluster/h/d/g').read().replace('\n', '|'))
except OSError as e:
    print(e.strerror)
)";
  for (AgentProcess* node : {a.get(), b.get(), c.get()})
    EXPECT_TRUE(PrintsUnderShim(*node, left, "False True 2 one|two|three|\n"));
  EXPECT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
}

// A file of two names, changed in mode, attributes and times through one
// name that is removed at once (before the writer's agent has looked at the
// change): the other name holds the change, on every node.
TEST_F(ClusterTest, AChangeThroughANameRemovedAtOnceStaysWithTheFilesOtherName) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string make = R"(
import os
os.makedirs('/cluster/g/d')
for i in range(20):
    with open(f'/cluster/g/f{i}', 'w') as f:
        f.write('x' * i)
    os.link(f'/cluster/g/f{i}', f'/cluster/g/d/f{i}')
)";
  const std::string change = R"(
import os
for i in range(20):
    p = f'/cluster/g/d/f{i}'
    os.chmod(p, 0o640)
    os.setxattr(p, 'user.k', b'v%d' % i)
    os.utime(p, ns=(1600000000123456789, 1600000000123456789))
    os.unlink(p)
)";
  // Per name left: link count, mode, the attribute, mtime.
  const std::string show = R"(
import os
out = []
for i in range(20):
    p = f'/cluster/g/f{i}'
    try:
        st = os.stat(p)
        k = os.getxattr(p, 'user.k').decode() if 'user.k' in os.listxattr(p) else '-'
        out.append(f'{st.st_nlink} {oct(st.st_mode & 0o7777)} {k} {st.st_mtime_ns}')
    except OSError as e:
        out.append(e.strerror)
wrong = [f'f{i}: {o}' for i, o in enumerate(out) if o != f'1 0o640 v{i} 1600000000123456789']
print(20 - len(wrong), *wrong[:2])
)";
  auto on = [&](AgentProcess& node) {
    return std::map<std::string, std::string>{{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", node.socket()}};
  };
  RunResult made = RunCommand({"/usr/bin/python3", "-c", make}, on(*a));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string linked = "import os; print(sum(os.stat(f'/cluster/g/f{i}').st_nlink for i in range(20)))";
  for (AgentProcess* node : {b.get(), c.get()}) ASSERT_TRUE(PrintsUnderShim(*node, linked, "40\n"));
  RunResult changed = RunCommand({"/usr/bin/python3", "-c", change}, on(*a));
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(PrintsUnderShim(*node, show, "20\n"));
}

// Extended attributes replicate (issue 15): what a program sets on a file or
// a directory on one node, with setxattr, is what getxattr answers on every
// other, the holder of the content and the stub alike; a change or removal
// on another node comes back the same way.
TEST_F(ClusterTest, ExtendedAttributesSetOnOneNodeAreReadOnEveryOther) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string set = R"(
import os
os.makedirs('/cluster/x', exist_ok=True)
with open('/cluster/x/f', 'wb') as f:
    f.write(os.urandom(100000))
os.setxattr('/cluster/x/f', 'user.color', b'blue')
os.setxattr('/cluster/x/f', 'user.bin', bytes([0, 1, 255]))
os.setxattr('/cluster/x/f', 'trusted.t', b'root')  # (the agents run as root)
os.setxattr('/cluster/x', 'user.kind', b'dir')
# An access ACL (user 1000 may read), as setfacl -m u:1000:r writes it.
import struct
entries = [(1, 6, 0xffffffff), (2, 4, 1000), (4, 4, 0xffffffff), (0x10, 4, 0xffffffff), (0x20, 0, 0xffffffff)]
acl = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', *e) for e in entries)
os.setxattr('/cluster/x/f', 'system.posix_acl_access', acl)
)";
  const std::string show = R"(
import os
try:
    f = '/cluster/x/f'
    print({n: os.getxattr(f, n).hex() for n in sorted(os.listxattr(f))},
          os.getxattr('/cluster/x', 'user.kind'), oct(os.stat(f).st_mode), len(open(f, 'rb').read()))
except OSError as e:
    print(e)
)";
  auto shows = [&](AgentProcess& node, const std::string& want) { return PrintsUnderShim(node, show, want); };
  RunResult made = RunCommand({"/usr/bin/python3", "-c", set}, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string first =
      "{'system.posix_acl_access': "
      "'0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000000ffffffff', "
      "'trusted.t': '726f6f74', 'user.bin': '0001ff', 'user.color': '626c7565'} b'dir' 0o100640 100000\n";
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(shows(*node, first));
  // Changed and removed on b: so on a and c.
  RunResult changed = RunCommand(
      {"/usr/bin/python3", "-c",
       "import os; os.setxattr('/cluster/x/f', 'user.color', b'red'); os.removexattr('/cluster/x/f', 'user.bin'); "
       "os.removexattr('/cluster/x/f', 'trusted.t'); os.removexattr('/cluster/x/f', 'system.posix_acl_access'); "
       "os.setxattr('/cluster/x', 'user.kind', b'folder')"},
      {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", b->socket()}});
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  const std::string second = "{'user.color': '726564'} b'folder' 0o100640 100000\n";
  for (AgentProcess* node : {a.get(), b.get(), c.get()}) EXPECT_TRUE(shows(*node, second));
  // The views' digests (which take in the attributes) agree, as the stores' do.
  EXPECT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
  // File capabilities grant root's rights: a peer's record that carries them
  // is refused, as a set-user-ID root file's is (--accept-root-setid-from-peers).
  RunResult capable = RunCommand(
      {"/usr/bin/python3", "-c",
       "import os, struct\n"
       "open('/cluster/x/cap', 'w').write('x')\n"
       "os.setxattr('/cluster/x/cap', 'security.capability', struct.pack('<5I', 0x02000001, 1 << 10, 0, 0, 0))\n"
       "open('/cluster/x/after', 'w').write('y')\n"},
      {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
  ASSERT_EQ(capable.exit_code, 0) << capable.err;
  ASSERT_TRUE(Eventually(*b, "cat /cluster/x/after", "y"));
  // (b may hold the file's earlier version, recorded before the capability was set.)
  RunResult on_b = RunCommand({"/usr/bin/python3", "-c",
                               "import os\n"
                               "try:\n"
                               "    print(os.getxattr('/cluster/x/cap', 'security.capability').hex())\n"
                               "except OSError as e:\n"
                               "    print('none')\n"},
                              {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", b->socket()}});
  EXPECT_EQ(on_b.out, "none\n") << "b took a record with file capabilities from a: " << on_b.err;
}

// A write opens a replication stream to each peer, held for a while in case
// more follow; while it is held and nothing comes, the pusher sleeps. (It
// once woke without waiting, a wait of kQuiet / 4 rounded down to 0 s, and
// spent 15% of a core on it for two seconds after every write; 1% now.)
TEST_F(ClusterTest, AnAgentThatJustReplicatedAWriteGoesQuiet) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(Put(*a, "quiet/after", "1").ok());
  auto held = [](AgentProcess& agent) {
    v1::GetRequest q;
    q.set_key("quiet/after");
    v1::GetResponse r;
    grpc::ClientContext ctx;
    return v1::Store::NewStub(agent.channel())->Get(&ctx, q, &r).ok() && r.value() == "1";
  };
  ASSERT_TRUE(WaitUntil([&] { return held(*b) && held(*c); }, seconds(10), "b and c hold quiet/after"));
  // Within the streams' quiet time (2 s): they are still open.
  const double before = CpuSeconds(a->pid());
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const double used = CpuSeconds(a->pid()) - before;
  EXPECT_LT(used, 0.08) << "a used " << used << " CPU-seconds in the second after its write was replicated";
}

TEST_F(ClusterTest, FilesWrittenOnOneNodeAreReadOnTheOthers) {
  StartThree();
  if (HasFatalFailure()) return;

  // A tree made on a, and more of it on b and c at the same time.
  RunResult made = Shell(*a,
                         "mkdir -p /cluster/t/a/deep && echo small > /cluster/t/a/deep/s.txt && "
                         "head -c 3500000 /dev/urandom > /cluster/t/big && ln -s a/deep/s.txt /cluster/t/link && "
                         "chmod 640 /cluster/t/a/deep/s.txt && sha256sum < /cluster/t/big");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string big_sum = made.out;
  ASSERT_EQ(Shell(*b, "mkdir -p /cluster/t/b && echo from-b > /cluster/t/b/f").exit_code, 0);
  ASSERT_EQ(Shell(*c, "mkdir -p /cluster/t/c/x && echo from-c > /cluster/t/c/x/f").exit_code, 0);

  const std::string listing =
      "/cluster/t\n/cluster/t/a\n/cluster/t/a/deep\n/cluster/t/a/deep/s.txt\n/cluster/t/b\n/cluster/t/b/f\n"
      "/cluster/t/big\n/cluster/t/c\n/cluster/t/c/x\n/cluster/t/c/x/f\n/cluster/t/link\n";
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    SCOPED_TRACE(agent->address());
    ASSERT_TRUE(Eventually(*agent, "find /cluster/t | sort", listing));
    EXPECT_TRUE(Eventually(*agent, "stat -c '%a %s' /cluster/t/a/deep/s.txt /cluster/t/big",
                           "640 6\n644 3500000\n"));
  }
  // Content on the writer and one more node (replication factor 2); the
  // third has a stub until a program opens the file there.
  std::string b_big = dir_ / "b-data/view/cluster/t/big", c_big = dir_ / "c-data/view/cluster/t/big";
  EXPECT_TRUE(WaitUntil([&] { return Observed(IsStub(b_big) != IsStub(c_big), fmt::format("stub on b: {}, on c: {}", IsStub(b_big), IsStub(c_big))); }, seconds(15),
                        "exactly one of b and c holds a stub of the big file"));
  v1::Version before = VersionOf(*a, "/cluster/t/big");

  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    SCOPED_TRACE(agent->address());
    EXPECT_TRUE(Eventually(*agent, "sha256sum < /cluster/t/big", big_sum));
    EXPECT_TRUE(Eventually(*agent, "cat /cluster/t/link /cluster/t/b/f /cluster/t/c/x/f", "small\nfrom-b\nfrom-c\n"));
  }
  EXPECT_FALSE(IsStub(b_big));
  EXPECT_FALSE(IsStub(c_big));
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(10)));
  // Putting the peers' versions in place made no versions of its own.
  v1::Version after = VersionOf(*a, "/cluster/t/big");
  EXPECT_EQ(after.hlc(), before.hlc());
  EXPECT_EQ(after.node_id(), before.node_id());

  // Changes on another node replace what is here; removals remove.
  ASSERT_EQ(Shell(*b, "echo changed-on-b > /cluster/t/a/deep/s.txt && rm -r /cluster/t/c && mv /cluster/t/b /cluster/t/b2")
                .exit_code,
            0);
  for (AgentProcess* agent : {a.get(), c.get()}) {
    SCOPED_TRACE(agent->address());
    EXPECT_TRUE(Eventually(*agent, "cat /cluster/t/link; ls /cluster/t", "changed-on-b\na\nb2\nbig\nlink\n"));
  }
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(10)));
}

TEST_F(ClusterTest, AnOpenWhoseContentNoLiveNodeHoldsFailsFastWithEio) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(Shell(*a, "echo only-on-a-and-one-more > /cluster/lonely").exit_code, 0);
  std::string b_file = dir_ / "b-data/view/cluster/lonely", c_file = dir_ / "c-data/view/cluster/lonely";
  auto placed = [&] {
    return access(b_file.c_str(), F_OK) == 0 && access(c_file.c_str(), F_OK) == 0 && IsStub(b_file) != IsStub(c_file);
  };
  (void)WaitUntil(placed, seconds(10), "b and c both hold the file, one as a stub");  // the assertion below counts
  ASSERT_NE(IsStub(b_file), IsStub(c_file));
  // The writer and the other holder go down; the node with the stub is left.
  AgentProcess& holder = IsStub(b_file) ? *c : *b;
  AgentProcess& left = IsStub(b_file) ? *b : *c;
  EXPECT_EQ(a->Stop(SIGKILL), -SIGKILL);
  EXPECT_EQ(holder.Stop(SIGKILL), -SIGKILL);
  RunResult r = Shell(left, "cat /cluster/lonely");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 3.0);
  // What is here still works: metadata, and files whose content is here.
  EXPECT_EQ(Shell(left, "stat -c %s /cluster/lonely").out, "23\n");
  EXPECT_EQ(Shell(left, "echo mine > /cluster/mine && cat /cluster/mine").out, "mine\n");
  std::ifstream log(dir_ / ((&left == b.get() ? std::string("b") : std::string("c")) + ".log"));
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("cannot hydrate /cluster/lonely: no live node holds"), std::string::npos) << text;
  // When a holder is back (on a new port, its seed a still down: it finds
  // the cluster through the members it knew), the same open works.
  ASSERT_TRUE(holder.Start());
  EXPECT_TRUE(Eventually(left, "cat /cluster/lonely", "only-on-a-and-one-more\n", seconds(15)))
      << RunCommand({"bash", "-c", "tail -n 30 " + std::string(dir_ / "*.log")}).out;
}

// A program that opens a stub to overwrite it (O_TRUNC; the shim takes the
// stub's mark off) has begun a write, recorded at its close: until then
// the cluster keeps the version before, and no node reads the file empty.
TEST_F(ClusterTest, AStubOpenedToBeOverwrittenIsRecordedAtItsCloseNotEmptyMidWrite) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(Shell(*a, "echo first-version > /cluster/over").exit_code, 0);
  std::string b_file = dir_ / "b-data/view/cluster/over", c_file = dir_ / "c-data/view/cluster/over";
  ASSERT_TRUE(WaitUntil(
      [&] { return access(b_file.c_str(), F_OK) == 0 && access(c_file.c_str(), F_OK) == 0 && IsStub(b_file) != IsStub(c_file); },
      seconds(10), "b and c both hold the file, one as a stub"));
  AgentProcess& stub_node = IsStub(b_file) ? *b : *c;
  // Opens it for writing, says so, and writes once told to (30 s at most).
  const std::string opened = dir_ / "opened", go = dir_ / "go";
  const std::string writer = fmt::format(
      "import os, time\n"
      "with open('/cluster/over', 'w') as f:\n"
      "    open('{}', 'w').close()\n"
      "    for _ in range(3000):\n"
      "        if os.path.exists('{}'): break\n"
      "        time.sleep(0.01)\n"
      "    f.write('second-version\\n')\n",
      opened, go);
  std::thread write([&] {
    RunResult r = RunCommand({"/usr/bin/python3", "-c", writer},
                             {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", stub_node.socket()}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
  });
  struct Finish {  // however the test ends: told to write, and waited for
    const std::string& go;
    std::thread& write;
    ~Finish() {
      std::ofstream(go).close();
      write.join();
    }
  } finish{go, write};
  ASSERT_TRUE(WaitUntil([&] { return access(opened.c_str(), F_OK) == 0; }, seconds(10), "the writer has opened the file"));
  // Mid-write, for 1.5 s: the stub node's record is still the first version.
  for (int i = 0; i < 15; ++i) {
    EXPECT_EQ(RecordedInode(stub_node, "/cluster/over").size(), 14u) << "after " << i * 100 << " ms";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(Shell(*a, "cat /cluster/over").out, "first-version\n");
  std::ofstream(go).close();
  for (AgentProcess* agent : {a.get(), b.get(), c.get()})
    EXPECT_TRUE(Eventually(*agent, "cat /cluster/over", "second-version\n")) << agent->address();
}

TEST_F(ClusterTest, FsyncReturnsOnceTheWriteQuorumHoldsTheVersion) {
  StartThree();
  if (HasFatalFailure()) return;
  // Replication factor 2, so a write quorum of 2: a and one more node.
  const std::string fsync_py =
      "import os, sys\n"
      "fd = os.open('/cluster/durable', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
      "os.write(fd, sys.argv[1].encode())\n"
      "try:\n"
      "    os.fsync(fd)\n"
      "    print('synced')\n"
      "except OSError as e:\n"
      "    print(e.strerror)\n";
  auto fsync_on_a = [&](const std::string& text) {
    return RunCommand({"/usr/bin/python3", "-c", fsync_py, text},
                      {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}})
        .out;
  };
  auto size_on = [](AgentProcess& agent) {
    v1::StatRequest q;
    q.set_path("/cluster/durable");
    v1::StatResponse r;
    grpc::ClientContext ctx;
    EXPECT_TRUE(v1::Namespace::NewStub(agent.channel())->Stat(&ctx, q, &r).ok());
    return r.found() ? static_cast<int64_t>(r.inode().size()) : -1;
  };
  // O_SYNC: every write is such a durability point. The file stays open (no
  // close tells the agent anything) until the test has looked at c.
  const std::string osync_py =
      "import os, sys, time\n"
      "fd = os.open('/cluster/osync', os.O_WRONLY | os.O_CREAT | os.O_SYNC, 0o644)\n"
      "try:\n"
      "    os.write(fd, sys.argv[1].encode())\n"
      "    print('written', flush=True)\n"
      "except OSError as e:\n"
      "    print(e.strerror, flush=True)\n"
      "open(sys.argv[2], 'w').close()\n"
      "while os.path.exists(sys.argv[2]): time.sleep(0.01)\n";
  auto osync_on_a = [&](const std::string& text, const std::function<void()>& while_open) {
    return RunWhileOpen(*a, osync_py, text, seconds(20), while_open).out;
  };
  EXPECT_EQ(fsync_on_a("one"), "synced\n");
  // b is down: c makes the quorum, and holds the version the moment fsync returns.
  EXPECT_EQ(b->Stop(SIGKILL), -SIGKILL);
  EXPECT_EQ(fsync_on_a("second"), "synced\n");
  EXPECT_EQ(size_on(*c), 6) << "fsync returned before a second node held the version";
  EXPECT_EQ(osync_on_a("o_sync write", [&] {
              EXPECT_EQ(RecordedSize(*c, "/cluster/osync"), 12) << "an O_SYNC write returned before c held the version";
            }),
            "written\n");
  // c is down too: no quorum, and fsync (or an O_SYNC write) says so.
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  EXPECT_EQ(fsync_on_a("third!!"), "Input/output error\n");
  EXPECT_EQ(size_on(*a), 7) << "the version stays recorded where it was written";
  EXPECT_EQ(osync_on_a("x", [] {}), "Input/output error\n");
}

// O_SYNC belongs to the open file, not to the descriptor the shim saw opened:
// a copy made with dup, dup2, dup3, fcntl(F_DUPFD), fcntl64 or
// fcntl(F_DUPFD_CLOEXEC) (Python's os.dup), and a descriptor inherited across
// exec, write durably too; so does pwritev2 with RWF_DSYNC or RWF_SYNC on an
// ordinary cluster descriptor. Each such write returns once the write quorum
// holds its version (files kept open: no close tells the agent anything), or
// fails with EIO when there is no quorum. Each copy lands on a number that
// was in use before, for a native file written through it.
TEST_F(ClusterTest, CopiesAndHeirsOfOSyncDescriptorsAndRwfSyncWritesAreDurabilityPointsToo) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string writes_py = R"PY(
import ctypes, fcntl, os, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
tag, marker = sys.argv[1], sys.argv[2]
keep = []
def opened(name, flags):
    fd = os.open("/cluster/%s-%s" % (tag, name), os.O_WRONLY | os.O_CREAT | flags, 0o644)
    keep.append(fd)
    return fd
def copy(name, fd):
    if fd < 0:
        sys.exit("%s: %s" % (name, os.strerror(ctypes.get_errno())))
    keep.append(fd)
    return fd
def write(name, fn):
    try:
        fn()
        print(name, "written", flush=True)
    except OSError as e:
        print(name, e.strerror, flush=True)
def used(*numbers):
    # Writes to a native file through each number (the two lowest free ones
    # if none are given), then closes them.
    fds = []
    for n in numbers or (None, None):
        fd = os.open("/dev/null", os.O_WRONLY)
        if n is not None:
            os.dup2(fd, n)
            os.close(fd)
            fd = n
        fds.append(fd)
    for fd in fds:
        os.write(fd, b"x")
        os.close(fd)
used()  # the two lowest free numbers: the O_SYNC file takes the first, its copy the second
fd = copy("dup", libc.dup(opened("dup", os.O_SYNC)))
write("dup", lambda: os.write(fd, b"x" * 1))
used(50)
fd2 = copy("dup2", libc.dup2(opened("dup2", os.O_SYNC), 50))
write("dup2", lambda: os.write(fd2, b"x" * 2))
used(51)
fd3 = copy("dup3", libc.dup3(opened("dup3", os.O_DSYNC), 51, os.O_CLOEXEC))
write("dup3", lambda: os.write(fd3, b"x" * 3))
used(60)
fd4 = copy("fcntl", libc.fcntl(opened("fcntl", os.O_SYNC), fcntl.F_DUPFD, 60))
write("fcntl", lambda: os.write(fd4, b"x" * 4))
used(70)
fd5 = copy("fcntl64", libc.fcntl64(opened("fcntl64", os.O_SYNC), fcntl.F_DUPFD, 70))
write("fcntl64", lambda: os.write(fd5, b"x" * 5))
used()
fd6 = copy("os.dup", os.dup(opened("os.dup", os.O_SYNC)))
write("os.dup", lambda: os.write(fd6, b"x" * 6))
heir = opened("exec", os.O_SYNC)
child = "import os, sys\ntry:\n    os.write(int(sys.argv[1]), b'x' * 7)\n    print('exec written')\nexcept OSError as e:\n    print('exec', e.strerror)\n"
print(subprocess.run([sys.executable, "-c", child, str(heir)], pass_fds=(heir,), stdout=subprocess.PIPE,
                     text=True).stdout, end="", flush=True)
fd8 = opened("rwf_dsync", 0)
write("rwf_dsync", lambda: os.pwritev(fd8, [b"x" * 8], 0, os.RWF_DSYNC))
fd9 = opened("rwf_sync", 0)
write("rwf_sync", lambda: os.pwritev(fd9, [b"x" * 9], 0, os.RWF_SYNC))
open(marker, "w").close()
while os.path.exists(marker):
    time.sleep(0.01)
)PY";
  const std::vector<std::string> names = {"dup",    "dup2", "dup3",      "fcntl",   "fcntl64",
                                          "os.dup", "exec", "rwf_dsync", "rwf_sync"};
  // Runs writes_py on a; while its files are still open, calls while_open.
  auto writes_on_a = [&](const std::string& tag, const std::function<void()>& while_open) {
    RunResult r = RunWhileOpen(*a, writes_py, tag, seconds(60), while_open);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  // The files exist, empty, on c first: a write that is not published leaves
  // them so (the agent records a file at its creation and at its last close).
  std::string touch = "touch", empty;
  for (const std::string& name : names) {
    touch += " /cluster/q-" + name;
    empty += "0\n";
  }
  ASSERT_EQ(Shell(*a, touch).exit_code, 0);
  ASSERT_TRUE(Eventually(*c, "stat -c %s" + touch.substr(5), empty));
  // b is down: a and c make the write quorum; c holds each version the moment its write returns.
  EXPECT_EQ(b->Stop(SIGKILL), -SIGKILL);
  std::string all_written;
  for (const std::string& name : names) all_written += name + " written\n";
  EXPECT_EQ(writes_on_a("q", [&] {
              for (size_t i = 0; i < names.size(); ++i)
                EXPECT_EQ(RecordedSize(*c, "/cluster/q-" + names[i]), static_cast<int64_t>(i + 1))
                    << names[i] << ": the write returned before c held the version";
            }),
            all_written);
  // c is down too: no quorum, and every one of these writes says so.
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  std::string all_failed;
  for (const std::string& name : names) all_failed += name + " Input/output error\n";
  EXPECT_EQ(writes_on_a("n", [] {}), all_failed);
}

TEST_F(ClusterTest, StubsMovedTouchedChmodedOrOverwrittenKeepTheRightContentEverywhere) {
  extra_args_ = {"--replication-factor", "1"};  // content on the writer only: b and c hold stubs
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(Shell(*a, "mkdir /cluster/s && for i in 1 2 3 4; do echo content$i > /cluster/s/f$i; done").exit_code, 0);
  std::string stub4 = dir_ / "b-data/view/cluster/s/f4";
  ASSERT_TRUE(WaitUntil([&] { return IsStub(stub4); }, seconds(10), "b holds /cluster/s/f4 as a stub"));
  // On b, where they are stubs: none of this opens them for reading.
  RunResult changed = Shell(*b,
                            "mv /cluster/s/f1 /cluster/s/g1 && touch -d 2020-01-02 /cluster/s/f2 && "
                            "chmod 600 /cluster/s/f3 && echo overwritten > /cluster/s/f4");
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  const std::string want =
      "content1\ncontent2\ncontent3\noverwritten\n2020-01-02 600\n";
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    SCOPED_TRACE(agent->address());
    EXPECT_TRUE(Eventually(*agent,
                           "cd /cluster/s && cat g1 f2 f3 f4 && echo $(date -r f2 +%F) $(stat -c %a f3) && "
                           "test ! -e f1",
                           want));
  }
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(10)));
}

// A program under the shim outlives its agent: the state page it mapped
// stays, frozen at the dead agent's count of stubs (none), while the agent
// that follows places a stub. The program reads the stub's content: its
// shim finds the agent gone at its next call (the link's liveness check)
// and maps the next agent's page.
TEST_F(ClusterTest, AProgramThatOutlivesItsAgentReadsTheStubsTheNextAgentPlaces) {
  extra_args_ = {"--replication-factor", "1"};  // content on the writer only: b holds stubs
  a = Agent("a");
  ASSERT_TRUE(a->Start());
  b = Agent("b", a->address());
  ASSERT_TRUE(b->Start());
  const std::map<std::string, v1::NodeState> two{{"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}};
  ASSERT_TRUE(WaitForStates(*a, two, seconds(10)));
  ASSERT_EQ(Shell(*a, "mkdir /cluster/late").exit_code, 0);
  ASSERT_TRUE(Eventually(*b, "test -d /cluster/late && echo y", "y\n"));
  const std::string ready = dir_ / "ready", go = dir_ / "go";
  const std::string reader_py =
      "import os, sys, time\n"
      "os.listdir('/cluster/late')\n"  // b's page mapped: no stub in b's view
      "open(sys.argv[1], 'w').close()\n"
      "while not os.path.exists(sys.argv[2]): time.sleep(0.05)\n"
      "print(repr(open('/cluster/late/f').read()))\n";
  RunResult reader;
  std::thread t([&] {
    reader = RunCommand({"/usr/bin/python3", "-c", reader_py, ready, go},
                        {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", b->socket()}});
  });
  struct Go {
    std::string path;
    std::thread& t;
    ~Go() {  // (the reader ends however the test does)
      std::ofstream(path).close();
      if (t.joinable()) t.join();
    }
  } go_on_exit{go, t};
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(ready); }, seconds(10), "the reader has started"));
  EXPECT_EQ(b->Stop(SIGKILL), -SIGKILL);
  ASSERT_TRUE(b->Start());
  ASSERT_EQ(Shell(*a, "echo content > /cluster/late/f").exit_code, 0);
  ASSERT_TRUE(WaitUntil([&] { return IsStub(dir_ / "b-data/view/cluster/late/f"); }, seconds(10),
                        "b holds the file as a stub"));
  std::ofstream(go).close();
  t.join();
  EXPECT_EQ(reader.exit_code, 0) << reader.err;
  EXPECT_EQ(reader.out, "'content\\n'\n");
}

TEST_F(ClusterTest, KillDuringAWriteStormLosesNoFsyncedWrite) {
  StartThree();
  if (HasFatalFailure()) return;
  // A writer on a: each file written, fsync'd, then reported (acknowledged).
  const std::string writer_py =
      "import os, sys\n"
      "os.makedirs('/cluster/storm', exist_ok=True)\n"
      "for i in range(100000):\n"
      "    try:\n"
      "        fd = os.open('/cluster/storm/f%d' % i, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
      "        os.write(fd, ('write %d\\n' % i).encode())\n"
      "        os.fsync(fd)\n"
      "        os.close(fd)\n"
      "    except OSError:\n"
      "        break\n"
      "    print(i, flush=True)\n";
  RunResult writer;
  std::atomic<bool> ended = false;
  std::thread t([&] {
    writer = RunCommand({"/usr/bin/python3", "-c", writer_py}, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
    ended = true;
  });
  // The kill comes in the middle of the storm, once the writer is making its
  // 31st file (so 30 writes were acknowledged) in a's view.
  std::string f30 = dir_ / "a-data/view/cluster/storm/f30";
  EXPECT_TRUE(WaitUntil([&] { return std::filesystem::exists(f30) || ended; }, seconds(30),
                        "the writer is at its 31st file"));
  EXPECT_EQ(a->Stop(SIGKILL), -SIGKILL);
  t.join();
  std::vector<int> acked;
  std::istringstream lines(writer.out);
  for (int i; lines >> i;) acked.push_back(i);
  ASSERT_GT(acked.size(), 10u) << "the writer hardly wrote before the kill: " << writer.err;
  ASSERT_TRUE(a->Start());  // a comes back and catches up
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(30)));
  // Every acknowledged write, byte for byte, on every node.
  const std::string check_py =
      "import sys\n"
      "bad = 0\n"
      "for i in map(int, sys.argv[1:]):\n"
      "    try:\n"
      "        ok = open('/cluster/storm/f%d' % i).read() == 'write %d\\n' % i\n"
      "    except OSError:\n"
      "        ok = False\n"
      "    bad += not ok\n"
      "print(bad)\n";
  std::vector<std::string> argv{"/usr/bin/python3", "-c", check_py};
  for (int i : acked) argv.push_back(std::to_string(i));
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    RunResult r = RunCommand(argv, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent->socket()}});
    EXPECT_EQ(r.out, "0\n") << "acknowledged writes missing or wrong on " << agent->address() << " (of "
                              << acked.size() << "): " << r.err;
  }
}

// Big files: their chunks are hashed and stored while they are written (and
// stored without the WAL). What a node reads must still be the file as its
// writer closed it: with a chunk rewritten before the close, with a name it
// got by a link whose first name is gone, and after the writer's agent
// crashed before storing the chunks for good. The replication factor is 1:
// the writer holds the only copy.
TEST_F(ClusterTest, BigFilesReadElsewhereAreAsClosedThroughRewritesLinksAndACrash) {
  extra_args_ = {"--replication-factor", "1"};
  a = Agent("a");
  ASSERT_TRUE(a->Start());
  b = Agent("b", a->address());
  ASSERT_TRUE(b->Start());
  const std::map<std::string, v1::NodeState> two{{"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}};
  ASSERT_TRUE(WaitForStates(*a, two, seconds(10)));
  ASSERT_TRUE(WaitForStates(*b, two, seconds(10)));
  // A file that gets its name by a link whose first name goes at once; then
  // 8 MiB written in 1 MiB steps: once the writer has seen its chunks hashed
  // ahead (a pause), it rewrites part of chunk 5 and closes.
  const std::string writer_py =
      "import os, hashlib, time\n"
      "data = bytearray(os.urandom(8 << 20))\n"
      "os.makedirs('/cluster/d')\n"
      "with open('/cluster/d/first', 'wb') as f: f.write(data[:2 << 20])\n"
      "time.sleep(0.5)\n"
      "os.link('/cluster/d/first', '/cluster/d/second')\n"
      "os.unlink('/cluster/d/first')\n"
      "second = hashlib.sha256(data[:2 << 20]).hexdigest()\n"
      "fd = os.open('/cluster/big', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
      "for i in range(8):\n"
      "    os.write(fd, data[i << 20:(i + 1) << 20])\n"
      "time.sleep(0.5)\n"
      "patch = os.urandom(1000)\n"
      "os.pwrite(fd, patch, (5 << 20) + 4096)\n"
      "data[(5 << 20) + 4096:(5 << 20) + 5096] = patch\n"
      "os.close(fd)\n"
      "print(hashlib.sha256(data).hexdigest(), second)\n";
  RunResult w = RunCommand({"/usr/bin/python3", "-c", writer_py}, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
  ASSERT_EQ(w.exit_code, 0) << w.err;
  std::istringstream sums(w.out);
  std::string big_sum, second_sum;
  sums >> big_sum >> second_sum;
  ASSERT_EQ(big_sum.size(), 64u) << w.out;
  // The big file's chunks were hashed while it was written (the pause), and
  // its close took them (once a has recorded it).
  auto hashed_ahead = [&] { return AgentStatus(*a).chunks_hashed_ahead(); };
  auto four_ahead = [&] {
    uint64_t n = hashed_ahead();
    return Observed(n >= 4, n);
  };
  EXPECT_TRUE(WaitUntil(four_ahead, seconds(10), "a has taken at least 4 chunks hashed ahead"));
  // b learns both (b holds stubs: a has the only copy).
  EXPECT_TRUE(Eventually(*b, "stat -c %s /cluster/big /cluster/d/second; ls /cluster/d", "8388608\n2097152\nsecond\n",
                         seconds(10)));
  // a crashes before its chunks are flushed (11 MiB: less than a memtable
  // holds), and comes back: b's reads hydrate from a.
  EXPECT_EQ(a->Stop(SIGKILL), -SIGKILL);
  ASSERT_TRUE(a->Start());
  ASSERT_TRUE(WaitForStates(*b, two, seconds(10)));
  EXPECT_TRUE(Eventually(*b, "sha256sum < /cluster/big | cut -d' ' -f1", big_sum + "\n", seconds(10)));
  EXPECT_TRUE(Eventually(*b, "sha256sum < /cluster/d/second | cut -d' ' -f1", second_sum + "\n", seconds(10)));
}

TEST_F(ClusterTest, ConcurrentWritesOfOneFileResolveAlikeAndTheLoserStaysReachable) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(Shell(*a, "echo first > /cluster/x").exit_code, 0);
  ASSERT_TRUE(Eventually(*b, "cat /cluster/x", "first\n"));
  // a and b write the same file at once.
  std::thread on_a([&] { Shell(*a, "echo from-a > /cluster/x"); });
  Shell(*b, "echo from-node-b > /cluster/x");
  on_a.join();
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(10)));
  std::string winner = Shell(*a, "cat /cluster/x").out;
  ASSERT_TRUE(winner == "from-a\n" || winner == "from-node-b\n") << winner;
  std::string loser = winner == "from-a\n" ? "from-node-b\n" : "from-a\n";
  for (AgentProcess* agent : {b.get(), c.get()}) EXPECT_TRUE(Eventually(*agent, "cat /cluster/x", winner));
  // Every node lists the losing version (by its size), and can make it current again.
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    RunResult v = RunCommand({OneboxBin(), "--agent", agent->address(), "-o", "json", "versions", "/cluster/x"});
    EXPECT_EQ(v.exit_code, 0) << v.err;
    EXPECT_NE(v.out.find("\"size\": \"" + std::to_string(loser.size()) + "\""), std::string::npos)
        << "the losing version is not listed on " << agent->address() << ":\n" << v.out;
  }
  RunResult listing = RunCommand({OneboxBin(), "--agent", c->address(), "versions", "/cluster/x"});
  ASSERT_EQ(listing.exit_code, 0) << listing.err;
  std::string loser_id;
  std::istringstream rows(listing.out);
  for (std::string line; std::getline(rows, line);) {
    std::istringstream cols(line);
    std::string id, written, size;
    cols >> id >> written >> size;
    if (size == std::to_string(loser.size())) loser_id = id;
  }
  ASSERT_FALSE(loser_id.empty()) << listing.out;
  RunResult restore = RunCommand({OneboxBin(), "--socket", c->socket(), "restore", "/cluster/x", loser_id});
  ASSERT_EQ(restore.exit_code, 0) << restore.err << restore.out;
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) EXPECT_TRUE(Eventually(*agent, "cat /cluster/x", loser));
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(10)));
  EXPECT_NE(RunCommand({OneboxBin(), "--socket", c->socket(), "restore", "/cluster/x", "1@0000000000000001"}).exit_code,
            0);
}

// Runs the same exclusive creations (mkdir, O_EXCL open) of /cluster/<tag>* on a
// and b at once; returns how often each name was won.
// Runs script_a on a and script_b on b at once; the words both printed (each
// names a create it won). Anything on stderr fails the test: only EEXIST is expected.
std::multiset<std::string> RaceOnTwoNodes(AgentProcess& a, const std::string& script_a, AgentProcess& b,
                                          const std::string& script_b) {
  RunResult on_a;
  std::thread t([&] { on_a = Shell(a, script_a); });
  RunResult on_b = Shell(b, script_b);
  t.join();
  EXPECT_EQ(on_a.err + on_b.err, "") << "only EEXIST is expected";
  std::multiset<std::string> won;
  for (const RunResult* r : {&on_a, &on_b}) {
    std::istringstream lines(r->out);
    for (std::string w; lines >> w;) won.insert(w);
  }
  return won;
}

std::multiset<std::string> RaceExclusiveCreates(AgentProcess& a, AgentProcess& b, const std::string& tag) {
  const std::string race = fmt::format(
      "for i in $(seq 30); do mkdir /cluster/{0}m$i 2>/dev/null && echo d$i; done; "
      "/usr/bin/python3 -c \"\n"
      "import errno, os, sys\n"
      "for i in range(30):\n"
      "    try:\n"
      "        os.close(os.open('/cluster/{0}e%d' % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)); print('f%d' % i)\n"
      "    except OSError as e:\n"
      "        if e.errno != errno.EEXIST: print('error', i, e.strerror, file=sys.stderr)\n"
      "\"",
      tag);
  return RaceOnTwoNodes(a, race, b, race);
}

// git on one node while the others follow: every `git add` and `git commit`
// makes .git/index.lock (O_EXCL), writes it and renames it over the index,
// at once again and again. The others' materializers remove each version as
// its rename arrives; a removal whose event a node handled after the next
// version's record had arrived tombstoned that version under the node's own
// name, and the writer lost its index.lock in the middle of the commit
// ("unable to write new_index file"). Timing decides whether one round
// meets the race, so it runs many.
// After a restart the agent's ledger knows nothing of what its materializer
// placed before; a program's removal or rename of a peer's file must still
// be recorded and reach the others (a removal is kept from tombstoning only
// a peer's version newer than one the view is known to have shown).
TEST_F(ClusterTest, RemovalsOfPeersFilesAfterARestartReachTheOthers) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(Shell(*a, "mkdir -p /cluster/r/d && echo 1 > /cluster/r/gone && echo 2 > /cluster/r/moved && "
                      "echo 3 > /cluster/r/d/f")
                .exit_code,
            0);
  ASSERT_TRUE(Eventually(*b, "cat /cluster/r/gone /cluster/r/moved /cluster/r/d/f", "1\n2\n3\n"));
  EXPECT_EQ(b->Stop(SIGTERM), 0);
  ASSERT_TRUE(b->Start());
  RunResult r = Shell(*b, "rm /cluster/r/gone && mv /cluster/r/moved /cluster/r/renamed && rm -r /cluster/r/d");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    SCOPED_TRACE(agent->address());
    EXPECT_TRUE(Eventually(*agent, "ls /cluster/r", "renamed\n", seconds(15)));
  }
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(15)));
  // Still so a while later: nothing comes back (tree repair, the audit).
  std::this_thread::sleep_for(std::chrono::seconds(4));
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) EXPECT_EQ(Shell(*agent, "ls /cluster/r").out, "renamed\n");
}

TEST_F(ClusterTest, GitCommitsOnOneNodeWhileTheOthersFollow) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  RunResult init = Shell(*a,
                         "mkdir -p /cluster/repo && cd /cluster/repo && git init -q && "
                         "for i in $(seq 200); do echo $i > f$i; done && git add -A && "
                         "git -c user.email=t@onebox -c user.name=t commit -qm first");
  ASSERT_EQ(init.exit_code, 0) << init.err;
  for (int round = 0; round < 30; ++round) {
    RunResult r = Shell(*a, fmt::format("cd /cluster/repo && echo {0} >> f{0} && git add -A && "
                                        "git -c user.email=t@onebox -c user.name=t commit -qm r{0}",
                                        round + 1));
    ASSERT_EQ(r.exit_code, 0) << "round " << round << ": " << r.err;
  }
  EXPECT_TRUE(Eventually(*b, "cd /cluster/repo && git log --oneline | wc -l", "31\n", seconds(20)));
}

TEST_F(ClusterTest, ExclusiveCreationOfOneNameOnTwoNodesAtOnceSucceedsOnce) {
  StartThree();
  if (HasFatalFailure()) return;
  // Every shim asks its agent's peers for an exclusive create only once its
  // state page counts them alive (after a gossip round).
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  std::multiset<std::string> won = RaceExclusiveCreates(*a, *b, "three");
  for (int i = 1; i <= 30; ++i) EXPECT_EQ(won.count("d" + std::to_string(i)), 1u) << "mkdir /cluster/threem" << i;
  for (int i = 0; i < 30; ++i) EXPECT_EQ(won.count("f" + std::to_string(i)), 1u) << "O_EXCL /cluster/threee" << i;
  // A name made and removed can be made again at once on the same node (git's
  // index.lock), and on another node as soon as the removal reached it.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Shell(*a, "mkdir /cluster/L && rmdir /cluster/L").exit_code, 0);
  EXPECT_TRUE(Eventually(*b, "mkdir /cluster/L && rmdir /cluster/L && echo ok", "ok\n", seconds(3)));
  // With c down, two live nodes: each name still goes to exactly one of them.
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  const std::map<std::string, v1::NodeState> c_suspect{
      {"a", v1::NODE_STATE_ALIVE}, {"b", v1::NODE_STATE_ALIVE}, {"c", v1::NODE_STATE_SUSPECT}};
  EXPECT_TRUE(WaitForStates(*a, c_suspect, seconds(6)));
  // b has noticed too, and both state pages count one peer: two live nodes that know it.
  EXPECT_TRUE(WaitForStates(*b, c_suspect, seconds(6)));
  EXPECT_TRUE(WaitForPagesCounting({a.get(), b.get()}, 1));
  won = RaceExclusiveCreates(*a, *b, "two");
  for (int i = 1; i <= 30; ++i) EXPECT_EQ(won.count("d" + std::to_string(i)), 1u) << "mkdir /cluster/twom" << i;
  for (int i = 0; i < 30; ++i) EXPECT_EQ(won.count("f" + std::to_string(i)), 1u) << "O_EXCL /cluster/twoe" << i;
  ASSERT_TRUE(Converge({a.get(), b.get()}, seconds(10)));
}

// An exclusive create or mkdir in a directory that is not there fails as
// the kernel fails it (ENOENT, ENOTDIR), with no vote for a lease on that
// directory: git tries each object's file in objects/xx before it makes the
// directory, and each of the 256 was a vote of its own.
TEST_F(ClusterTest, ExclusiveCreatesWhereNoDirectoryIsWinNoLease) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  ASSERT_EQ(Shell(*a, "mkdir /cluster/nodir && echo x > /cluster/nodir/file").exit_code, 0);
  auto leases_won = [&] { return AgentStatus(*a).leases_won(); };
  const uint64_t before = leases_won();
  RunResult tried = RunCommand({"/usr/bin/python3", "-c",
                                "import errno, os\n"
                                "for i in range(20):\n"
                                "    for path, mkdir in (('/cluster/nodir/m%d/x' % i, False),\n"
                                "                        ('/cluster/nodir/m%d/x' % i, True),\n"
                                "                        ('/cluster/nodir/file/x%d' % i, False)):\n"
                                "        try:\n"
                                "            os.mkdir(path) if mkdir else os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
                                "            print('made', path)\n"
                                "        except OSError as e:\n"
                                "            print(errno.errorcode[e.errno])\n"},
                               {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", a->socket()}});
  ASSERT_EQ(tried.exit_code, 0) << tried.err;
  std::string want;
  for (int i = 0; i < 20; ++i) want += "ENOENT\nENOENT\nENOTDIR\n";
  EXPECT_EQ(tried.out, want);
  EXPECT_EQ(leases_won(), before);
  // Where the directory is, the name is still won across nodes. (The node
  // that did not make m0 may not have it in its store yet: ENOENT there.)
  const std::string race =
      "/usr/bin/python3 -c \"\n"
      "import errno, os, sys\n"
      "for word, make in (('d', lambda: os.mkdir('/cluster/nodir/m0')),\n"
      "                   ('f', lambda: os.close(os.open('/cluster/nodir/m0/x', os.O_CREAT | os.O_EXCL | os.O_WRONLY)))):\n"
      "    try:\n"
      "        make(); print(word)\n"
      "    except OSError as e:\n"
      "        if e.errno not in (errno.EEXIST, errno.ENOENT): print('error', word, e.strerror, file=sys.stderr)\n"
      "\"";
  std::multiset<std::string> won = RaceOnTwoNodes(*a, race, *b, race);
  EXPECT_EQ(won.count("d"), 1u);
  EXPECT_EQ(won.count("f"), 1u);
}

// A tree one node has just made (its directories covered by that node's
// lease on the top one: no vote each), then two nodes creating the same
// names and subdirectories in it at once: each name still goes to exactly
// one of them, the other's create moving a directory out of the cover.
TEST_F(ClusterTest, ExclusiveCreatesInATreeOneNodeJustMadeSucceedOnceAcrossNodes) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  RunResult made = Shell(*a, "mkdir /cluster/cov && for d in $(seq 20); do mkdir /cluster/cov/d$d; done");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  // a goes through the directories up, b down: they meet in the middle.
  auto race = [](const char* order) {
    return fmt::format(
      "/usr/bin/python3 -c \"\n"
      "import errno, os, sys\n"
      "for d in {}:\n"
      "    for i in range(5):\n"
      "        try:\n"
      "            os.close(os.open('/cluster/cov/d%d/e%d' % (d, i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)); print('e%d.%d' % (d, i))\n"
      "        except OSError as e:\n"
      "            if e.errno != errno.EEXIST: print('error', d, i, e.strerror, file=sys.stderr)\n"
      "        try:\n"
      "            os.mkdir('/cluster/cov/d%d/s%d' % (d, i)); print('s%d.%d' % (d, i))\n"
      "        except OSError as e:\n"
      "            if e.errno != errno.EEXIST: print('error', d, i, e.strerror, file=sys.stderr)\n"
      "\"", order);
  };
  std::multiset<std::string> won = RaceOnTwoNodes(*a, race("range(1, 21)"), *b, race("range(20, 0, -1)"));
  for (int d = 1; d <= 20; ++d)
    for (int i = 0; i < 5; ++i) {
      EXPECT_EQ(won.count(fmt::format("e{}.{}", d, i)), 1u) << "O_EXCL /cluster/cov/d" << d << "/e" << i;
      EXPECT_EQ(won.count(fmt::format("s{}.{}", d, i)), 1u) << "mkdir /cluster/cov/d" << d << "/s" << i;
    }
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(15)));
}

// A directory another node made a moment ago may not be in this node's view
// yet (its placing thread runs below the programs while it is behind: here
// below busy cores, with 300 directories queued before it): an exclusive create or mkdir in it
// waits until it is in place, and succeeds. In a directory the cluster has
// not got, the create fails with ENOENT at once, with no vote.
TEST_F(ClusterTest, ExclusiveCreatesInADirectoryAnotherNodeJustMadeWaitForItsPlacing) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  BusyCores busy;
  RunResult made = Shell(*a, "mkdir /cluster/w && mkdir $(seq -f /cluster/w/fill%g 300) && mkdir /cluster/w/last");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  // In b's store first (a directory whose record has not come is not there
  // for b: ENOENT), and, where its placing thread is lowered, not yet in its view.
  ASSERT_TRUE(WaitForRecord(*b, "/cluster/w/last", seconds(20)));
  // (Mostly not in b's view yet here; the lowered placing thread may have
  // caught up in this moment all the same, so only told.)
  if (std::filesystem::exists(b->data_dir() + "/view/cluster/w/last"))
    std::printf("b's view had /cluster/w/last already: no wait shown in this run\n");
  RunResult on_b = Shell(*b,
                         "/usr/bin/python3 -c \"\n"
                         "import os\n"
                         "os.close(os.open('/cluster/w/last/f', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))\n"
                         "os.mkdir('/cluster/w/last/s')\n"
                         "try:\n"
                         "    os.mkdir('/cluster/w/none/s')\n"
                         "except FileNotFoundError:\n"
                         "    print('none: ENOENT')\n"
                         "print('made')\n"
                         "\"");
  busy.End();
  EXPECT_EQ(on_b.exit_code, 0) << on_b.err;
  EXPECT_EQ(on_b.out, "none: ENOENT\nmade\n") << on_b.err;
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(15)));
  EXPECT_TRUE(Eventually(*a, "ls /cluster/w/last", "f\ns\n"));
  // Through an absolute symlink, which leads to the directory in the view
  // (the agent looks the directory up there, as the shim does).
  ASSERT_EQ(Shell(*a, "ln -s /cluster/w /cluster/wl").exit_code, 0);
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(15)));
  RunResult linked = Shell(*b, "/usr/bin/python3 -c \"import os; "
                               "os.close(os.open('/cluster/wl/last/g', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)); "
                               "os.mkdir('/cluster/wl/last/t')\"");
  EXPECT_EQ(linked.exit_code, 0) << linked.err;
  EXPECT_TRUE(Eventually(*a, "ls /cluster/w/last", "f\ng\ns\nt\n"));
}

// A node that holds a directory's lease lets its programs' shims decide the
// exclusive creates there (a create slot in its state page): a program
// making file after file asks its agent about the first one only. What they
// made there is still this node's alone: another node's create of such a
// name fails, and two nodes creating the same names at once each win every
// name exactly once (a recall ends the slot before the holder hands over
// what its programs made; a create that met the recall is decided by the
// agent after all, and undone when the name went to the other node).
TEST_F(ClusterTest, ExclusiveCreatesUnderALeaseHeldHereAreDecidedInTheShimAndStillWinOnce) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  ASSERT_EQ(Shell(*a, "mkdir /cluster/slot /cluster/slotrace").exit_code, 0);
  const uint64_t before = AgentStatus(*a).creates_decided();
  RunResult made = Shell(*a,
                         "/usr/bin/python3 -c \"\n"
                         "import os\n"
                         "for i in range(300):\n"
                         "    os.close(os.open('/cluster/slot/f%d' % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))\n"
                         "\"");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const uint64_t asked = AgentStatus(*a).creates_decided() - before;
  EXPECT_LE(asked, 10u) << "of 300 exclusive creates in one directory, the agent decided " << asked;
  RunResult on_b = Shell(*b,
                         "/usr/bin/python3 -c \"\n"
                         "import errno, os\n"
                         "for name in ('f7', 'f299', 'b1'):\n"
                         "    try:\n"
                         "        os.close(os.open('/cluster/slot/' + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)); print('made', name)\n"
                         "    except OSError as e:\n"
                         "        print(errno.errorcode[e.errno], name)\n"
                         "\"");
  EXPECT_EQ(on_b.out, "EEXIST f7\nEEXIST f299\nmade b1\n") << on_b.err;
  // Both at once, on the same names in one directory: a up, b down.
  auto race = [](const char* order) {
    return fmt::format(
        "/usr/bin/python3 -c \"\n"
        "import errno, os, sys\n"
        "for i in {}:\n"
        "    try:\n"
        "        os.close(os.open('/cluster/slotrace/e%d' % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)); print('e%d' % i)\n"
        "    except OSError as e:\n"
        "        if e.errno != errno.EEXIST: print('error', i, e.strerror, file=sys.stderr)\n"
        "\"",
        order);
  };
  std::multiset<std::string> won = RaceOnTwoNodes(*a, race("range(200)"), *b, race("range(199, -1, -1)"));
  for (int i = 0; i < 200; ++i) EXPECT_EQ(won.count(fmt::format("e{}", i)), 1u) << "O_EXCL /cluster/slotrace/e" << i;
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(15)));
  EXPECT_EQ(Shell(*c, "ls /cluster/slotrace | wc -l").out, "200\n");
}

// On a, a program makes /cluster/slow/w and then /cluster/slow/x
// exclusively (writing "a" into x), that create held up by strace for held_ms
// at the kernel call's entry: after the shim's look at its slot. While it is
// held up, b's program creates x exclusively (writing "b"). Returns what each
// printed: "made" or the errno's name.
std::pair<std::string, std::string> CreateHeldUpOnAWhileBCreates(AgentProcess& a, AgentProcess& b,
                                                                 const std::string& marker, int held_ms) {
  const std::string create_x =
      "try:\n"
      "    fd = os.open('/cluster/slow/x', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)\n"
      "    os.write(fd, b'{0}'); os.close(fd); print('made')\n"
      "except OSError as e:\n"
      "    print(errno.errorcode[e.errno])\n";
  const std::string on_a = fmt::format(
      "strace -f -qq -o /dev/null -P cluster/slow/x -e trace=openat2 -e inject=openat2:delay_enter={}000 "
      "/usr/bin/python3 -c \"\n"
      "import errno, os\n"
      "os.close(os.open('/cluster/slow/w', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))\n"
      "open('{}', 'w').close()\n"
      "{}\"",
      held_ms, marker, fmt::format(fmt::runtime(create_x), "a"));
  RunResult ran_a;
  std::thread t([&] { ran_a = Shell(a, on_a); });
  const bool looked = WaitUntil([&] { return access(marker.c_str(), F_OK) == 0; }, seconds(10), "a's program began");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a's create is held up now
  RunResult ran_b = Shell(b, "/usr/bin/python3 -c \"\nimport errno, os\n" + fmt::format(fmt::runtime(create_x), "b") + "\"");
  t.join();
  EXPECT_TRUE(looked);
  EXPECT_EQ(ran_a.exit_code, 0) << ran_a.err;
  EXPECT_EQ(ran_b.exit_code, 0) << ran_b.err;
  auto line = [](const std::string& out) { return out.substr(0, out.find('\n')); };
  return {line(ran_a.out), line(ran_b.out)};
}

// A create a shim began under its slot (it looked at the slot, then the
// kernel call was held up) when another node recalls the lease: the recall
// waits for it before it records the directory, so the name is a's, and b's
// create of it fails. (Without the wait, b wins it: a's create then finds
// b's file in the view.)
TEST_F(ClusterTest, ARecallWaitsForAnExclusiveCreateBegunUnderTheSlotItEnds) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  ASSERT_EQ(Shell(*a, "mkdir /cluster/slow").exit_code, 0);
  const uint64_t decided_before = AgentStatus(*a).creates_decided();
  auto [on_a, on_b] = CreateHeldUpOnAWhileBCreates(*a, *b, dir_ / "a-looked", 700);
  // w in the slot; x asked of the agent after all, its slot having ended meanwhile.
  EXPECT_EQ(AgentStatus(*a).creates_decided() - decided_before, 1u);
  EXPECT_EQ(on_a, "made");
  EXPECT_EQ(on_b, "EEXIST");
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(15)));
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) EXPECT_EQ(Shell(*agent, "cat /cluster/slow/x").out, "a");
}

// The same create held up longer than a recall waits (a program stopped in
// its open): the recall hands nothing over while it is under way, so b's
// create waits, and fails once a's is done and handed over; a's own create,
// which met its slot's end, is decided by its agent and stands.
TEST_F(ClusterTest, AnExclusiveCreateHeldUpLongerThanARecallWaitsHoldsTheOtherNodesOff) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  ASSERT_EQ(Shell(*a, "mkdir /cluster/slow").exit_code, 0);
  const uint64_t decided_before = AgentStatus(*a).creates_decided();
  auto [on_a, on_b] = CreateHeldUpOnAWhileBCreates(*a, *b, dir_ / "a-looked", 2500);
  // w in the slot; x asked of the agent after all, its slot having ended meanwhile.
  EXPECT_EQ(AgentStatus(*a).creates_decided() - decided_before, 1u);
  EXPECT_EQ(on_a, "made");
  EXPECT_EQ(on_b, "EEXIST");
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(15)));
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) EXPECT_EQ(Shell(*agent, "cat /cluster/slow/x").out, "a");
}

// a's agent is killed and started again while a program it served goes on
// making names in a slot of the dead agent's page, and b makes the same
// names, in the same order, at the same time: the new agent gives the
// directory up to b only once the old page's slots have run out, so no name
// is won by both. (Errors other than EEXIST, while a has no agent, are
// allowed: no name is then won.)
TEST_F(ClusterTest, ARestartedAgentGivesNoDirectoryUpWhileItsPredecessorsSlotsMayStillBeTrusted) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));
  ASSERT_EQ(Shell(*a, "mkdir /cluster/rs").exit_code, 0);
  const std::string make =
      "/usr/bin/python3 -c \"\n"
      "import errno, os, time\n"
      "for i in range(1500):\n"
      "    try:\n"
      "        os.close(os.open('/cluster/rs/n%d' % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)); print('n%d' % i)\n"
      "    except OSError as e:\n"
      "        pass\n"
      "    time.sleep(0.002)\n"
      "\"";
  RunResult on_a, on_b;
  std::thread ta([&] { on_a = Shell(*a, make); });
  std::thread tb([&] { on_b = Shell(*b, make); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(a->Stop(SIGKILL), -SIGKILL);
  EXPECT_TRUE(a->Start());
  ta.join();
  tb.join();
  std::multiset<std::string> won;
  size_t won_by_a = 0, won_by_b = 0;
  for (auto [r, n] : {std::pair{&on_a, &won_by_a}, {&on_b, &won_by_b}}) {
    std::istringstream lines(r->out);
    for (std::string w; lines >> w; ++*n) won.insert(w);
  }
  EXPECT_GT(won_by_a, 0u);
  EXPECT_GT(won_by_b, 0u);
  for (const std::string& name : std::set<std::string>(won.begin(), won.end()))
    EXPECT_EQ(won.count(name), 1u) << "/cluster/rs/" << name << " made on both a and b";
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
}

// A peer that stops answering (SIGSTOP: its sockets stay open, nothing is
// read) holds up neither the replication to the others nor a shutdown: the
// stream to it is cancelled when it makes no progress, and it catches up
// when it resumes.
TEST_F(ClusterTest, AHungPeerHoldsUpNeitherTheOthersNorAShutdown) {
  StartThree();
  if (HasFatalFailure()) return;
  auto keys_on = [](AgentProcess& agent, const std::string& prefix) {
    v1::ScanRequest q;
    q.set_prefix(prefix);
    q.set_limit(10000);
    q.set_keys_only(true);
    v1::ScanResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
    return v1::Store::NewStub(agent.channel())->Scan(&ctx, q, &r).ok() ? r.entries_size() : -1;
  };
  ASSERT_EQ(kill(b->pid(), SIGSTOP), 0);
  for (int i = 0; i < 3000; ++i) ASSERT_TRUE(Put(*a, fmt::format("hung/{}", i), std::string(200, 'v')).ok());
  auto c_has_all = [&] {
    int n = keys_on(*c, "hung/");
    return Observed(n == 3000, n);
  };
  EXPECT_TRUE(WaitUntil(c_has_all, seconds(10), "c holds the 3000 keys: c must not wait for b"));
  // a's status says how far behind each peer is (what `onebox status` prints as lag).
  auto lag_on_a = [&](const std::string& name) {
    v1::StatusResponse st = AgentStatus(*a);
    for (const v1::ReplicationLag& lag : st.replication())
      if (lag.name() == name) return lag;
    ADD_FAILURE() << "no replication lag for " << name << " in " << st.ShortDebugString();
    return v1::ReplicationLag();
  };
  auto c_caught_up = [&] {
    v1::ReplicationLag lag = lag_on_a("c");
    return Observed(lag.entries_behind() == 0 && lag.lag_ms() == 0, lag.ShortDebugString());
  };
  EXPECT_TRUE(WaitUntil(c_caught_up, seconds(5), "a counts c caught up"));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // b's oldest missing entry ages meanwhile
  v1::ReplicationLag b_lag = lag_on_a("b");
  EXPECT_GE(b_lag.entries_behind(), 3000u) << b_lag.ShortDebugString();
  EXPECT_GE(b_lag.lag_ms(), 300u) << b_lag.ShortDebugString();
  ASSERT_EQ(kill(b->pid(), SIGCONT), 0);
  EXPECT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
  EXPECT_EQ(keys_on(*b, "hung/"), 3000);
  auto b_caught_up = [&] {
    v1::ReplicationLag lag = lag_on_a("b");
    return Observed(lag.entries_behind() == 0, lag.ShortDebugString());
  };
  EXPECT_TRUE(WaitUntil(b_caught_up, seconds(5), "a counts b caught up once it resumed"));

  // Hung again, with a stream to it under way: a still stops promptly.
  ASSERT_EQ(kill(b->pid(), SIGSTOP), 0);
  for (int i = 0; i < 3000; ++i) ASSERT_TRUE(Put(*a, fmt::format("again/{}", i), std::string(200, 'v')).ok());
  // Not a wait for a condition: a's stream to b gets under way meanwhile (a
  // pusher is woken by the writes), which the agent does not show (no
  // per-peer stream state in Cluster/Status, nothing in the log when a
  // stream opens).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto stop_at = std::chrono::steady_clock::now();
  EXPECT_EQ(a->Stop(SIGTERM), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - stop_at, seconds(8)) << "a shutdown waited for the hung peer";
  kill(b->pid(), SIGCONT);
}

// The replication log keeps what a peer has not acknowledged, even across a
// restart after which membership knows nobody yet: the peers come back to
// pushes, not to anti-entropy.
TEST_F(ClusterTest, ARestartedNodeKeepsItsLogForThePeersThatAreAway) {
  StartThree();
  if (HasFatalFailure()) return;
  EXPECT_EQ(b->Stop(SIGKILL), -SIGKILL);
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(Put(*a, fmt::format("away/{}", i), "v").ok());
  EXPECT_EQ(a->Stop(SIGTERM), 0);
  ASSERT_TRUE(a->Start());
  // Not a wait for a condition: what is tested is that nothing is cut from
  // a's log while b and c are away, and a looks at its log for truncation
  // in its first rounds after the start (then its loop rests: nothing
  // moves); this takes them in before they come back (a truncation leaves
  // no trace to wait for: not in Cluster/Status, not in the log).
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  b = Agent("b", a->address());  // the same data dirs, joining a where it listens now
  c = Agent("c", a->address());
  ASSERT_TRUE(b->Start());
  ASSERT_TRUE(c->Start());
  EXPECT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
  EXPECT_EQ(a->log().find("past the log's retention"), std::string::npos) << a->log();
}

grpc::Status PutAt(AgentProcess& a, const std::string& key, const std::string& value, v1::WriteLevel level) {
  v1::PutRequest q;
  q.set_key(key);
  q.set_value(value);
  q.set_level(level);
  v1::PutResponse r;
  return CallOverSocket(a, "/onebox.v1.Store/Put", q, &r);
}

// The value under key read at level ("<absent>" if none, "<error: ...>").
std::string GetAt(AgentProcess& a, const std::string& key, v1::ReadLevel level, v1::Version* version = nullptr) {
  v1::GetRequest q;
  q.set_key(key);
  q.set_level(level);
  v1::GetResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
  grpc::Status st = v1::Store::NewStub(a.channel())->Get(&ctx, q, &r);
  if (!st.ok()) return "<error: " + st.error_message() + ">";
  if (version) *version = r.version();
  return r.found() ? r.value() : "<absent>";
}

// Store API levels: ALL and QUORUM writes are held by that many members when
// they are acknowledged (ALL fails, keeping the write, while one is hung); a
// QUORUM read returns the newest version a majority holds, even one this
// node missed, and keeps it.
TEST_F(ClusterTest, StoreLevelsReachTheirMembersBeforeTheyAnswer) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_TRUE(PutAt(*a, "lv/k", "old", v1::WRITE_LEVEL_ALL).ok());
  v1::Version old_version;
  for (AgentProcess* agent : {b.get(), c.get()}) EXPECT_EQ(GetAt(*agent, "lv/k", v1::READ_LEVEL_LOCAL, &old_version), "old");

  // A newer version only a and b hold: from a fourth node whose pushes c missed.
  std::string record("\x01\x00", 2);
  for (uint64_t v = old_version.hlc() + 1, i = 0; i < 8; ++i) record.push_back(static_cast<char>(v >> (56 - 8 * i)));
  for (uint64_t n = 0x0fedcba987654321, i = 0; i < 8; ++i) record.push_back(static_cast<char>(n >> (56 - 8 * i)));
  record += "new";
  for (AgentProcess* agent : {a.get(), b.get()}) {
    v1::ReplicateRequest q;
    q.set_from_node_id("0fedcba987654321");
    v1::LogRecord* r = q.add_records();
    r->set_family("kv");
    r->set_key("lv/k");
    r->set_record(record);
    v1::ReplicateResponse resp;
    grpc::ClientContext ctx;
    AddTestJoinToken(&ctx);  // as a peer would
    ASSERT_TRUE(v1::Peer::NewStub(agent->channel())->Replicate(&ctx, q, &resp).ok());
  }
  EXPECT_EQ(GetAt(*c, "lv/k", v1::READ_LEVEL_QUORUM), "new");
  EXPECT_EQ(GetAt(*c, "lv/k", v1::READ_LEVEL_LOCAL), "new");  // kept

  // c hangs: a QUORUM write still succeeds (b holds it when it returns); an
  // ALL write fails within a few seconds but stays, and reaches c once it is back.
  ASSERT_EQ(kill(c->pid(), SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { kill(pid, SIGCONT); }
  } resume{c->pid()};
  ASSERT_TRUE(PutAt(*a, "lv/q", "v", v1::WRITE_LEVEL_QUORUM).ok());
  EXPECT_EQ(GetAt(*b, "lv/q", v1::READ_LEVEL_LOCAL), "v");
  auto t0 = std::chrono::steady_clock::now();
  grpc::Status all = PutAt(*a, "lv/all", "w", v1::WRITE_LEVEL_ALL);
  EXPECT_EQ(all.error_code(), grpc::StatusCode::UNAVAILABLE) << all.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, seconds(5));
  EXPECT_EQ(GetAt(*a, "lv/all", v1::READ_LEVEL_LOCAL), "w");
  EXPECT_EQ(GetAt(*a, "lv/q", v1::READ_LEVEL_QUORUM), "v");  // a majority (a, b) answers
  kill(c->pid(), SIGCONT);
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
  EXPECT_EQ(GetAt(*c, "lv/all", v1::READ_LEVEL_LOCAL), "w");
  // An ALL write needs every member alive in the writer's view: c is again
  // once a has had a gossip exchange with it (Converge may be done before,
  // through b).
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get(), c.get()}, 2));

  // A node just restarted (before gossip told it of anyone) still counts the
  // members it knew: its QUORUM read never answers with its own stale value.
  ASSERT_TRUE(PutAt(*a, "lv/r", "1", v1::WRITE_LEVEL_ALL).ok());
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  ASSERT_TRUE(PutAt(*a, "lv/r", "2", v1::WRITE_LEVEL_QUORUM).ok());
  ASSERT_TRUE(c->Start());
  EXPECT_NE(GetAt(*c, "lv/r", v1::READ_LEVEL_QUORUM), "1");
  auto read_2 = [&] {
    std::string read = GetAt(*c, "lv/r", v1::READ_LEVEL_QUORUM);
    return Observed(read == "2", read);
  };
  EXPECT_TRUE(WaitUntil(read_2, seconds(10), "a QUORUM read of lv/r on c gives \"2\""));
}

TEST_F(ClusterTest, APeerCannotNameAPathOutsideTheView) {
  StartThree();
  if (HasFatalFailure()) return;
  for (std::string key : {"../escape", "cluster/../../x", "/etc/x", ".onebox-staging/t", "cluster//x"}) {
    v1::ReplicateRequest q;
    q.set_from_node_id("0000000000000001");
    v1::LogRecord* r = q.add_records();
    r->set_family("ns");
    r->set_key(key);
    r->set_record(std::string("\x01\x00", 2) + std::string(16, '\x7f'));
    v1::ReplicateResponse resp;
    grpc::ClientContext ctx;
    AddTestJoinToken(&ctx);  // a peer that belongs, and sends what it should not
    grpc::Status st = v1::Peer::NewStub(a->channel())->Replicate(&ctx, q, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << key;
  }
}

// Placing what peers wrote runs below the node's programs while it is behind
// (a burst), at the agent's priority once it keeps up, and nothing else is
// ever lowered (daemon/catch_up.h). b is held (SIGSTOP) while a writes
// 2,000 files, and let go once a recorded them: a's stream then brings them
// in batches of hundreds, a backlog however fast the machine. While they
// are placed b's placing thread is seen kCatchUpNiceSteps (10) below the
// agent, and every other thread of b and c (the shim's socket, the peers'
// calls, the recorder and pusher, gRPC's and RocksDB's, whichever thread
// started them) always at the agent's own priority; once all is placed,
// the placing threads too. Where the agents can raise the placing thread
// back while something waits on it (CAP_SYS_NICE, as root in CI) it is
// lowered; elsewhere nothing is.
TEST_F(ClusterTest, PlacingPeersFilesRunsBelowTheNodesProgramsWhileBehindAndNothingElseDoes) {
  StartThree();
  if (HasFatalFailure()) return;
  const bool lowered = CanRaiseNiceBack();  // the agents' own test, in a process with the same rights
  // The burst, made here first: cp writes it into the cluster at once.
  const std::filesystem::path tree = dir_ / "tree";
  std::filesystem::create_directories(tree);
  for (int i = 1; i <= 2000; ++i) std::ofstream(tree / fmt::format("f{}", i)) << std::string(1000 + i, 'x');
  // (Its first lease won while b still answers; a and c are a majority for any other.)
  ASSERT_EQ(Shell(*a, "mkdir -p /cluster/n && touch /cluster/n/first").exit_code, 0);
  const PriorityLooks looks = LookAtPrioritiesWhile({b->pid(), c->pid()}, [&] {
    ASSERT_EQ(kill(b->pid(), SIGSTOP), 0);
    struct Resume {
      pid_t pid;
      ~Resume() { kill(pid, SIGCONT); }
    } resume{b->pid()};
    // Small files, and one of 3 MiB with a second name (its chunks are read by several threads as it is placed).
    const RunResult made = Shell(*a, fmt::format("cp -r {} /cluster/n/tree && head -c 3145728 /dev/urandom >"
                                                 " /cluster/n/big && ln /cluster/n/big /cluster/n/big2",
                                                 tree.string()));
    ASSERT_EQ(made.exit_code, 0) << made.err;
    ASSERT_TRUE(WaitForRecord(*a, "/cluster/n/big2", seconds(30)));  // a recorded the burst
    ASSERT_EQ(kill(b->pid(), SIGCONT), 0);
    // big2 comes last (the queue keeps the order of the records).
    for (const char* node : {"b", "c"}) {
      const std::string placed = dir_ / (std::string(node) + "-data/view/cluster/n/big2");
      EXPECT_TRUE(WaitUntil([&] { return std::filesystem::exists(placed); }, seconds(60), placed + " placed"));
    }
  });
  if (HasFatalFailure()) return;
  const int placing_lowered = looks.placing_lowered.count(b->pid()) ? looks.placing_lowered.at(b->pid()) : 0;
  if (lowered)
    EXPECT_GT(placing_lowered, 0) << "b's placing thread never seen behind";
  else
    EXPECT_EQ(placing_lowered, 0) << "lowered with no way to raise it back";
  for (AgentProcess* agent : {b.get(), c.get()})
    EXPECT_EQ(looks.others_off.count(agent->pid()) ? looks.others_off.at(agent->pid()) : "", "") << agent->address();
  for (AgentProcess* agent : {a.get(), b.get(), c.get()}) {
    // Caught up: every thread at the agent's priority. (A look may come
    // before the placing thread found its queue empty: look until one sees
    // every thread so.)
    EXPECT_TRUE(WaitUntil(
        [&] {
          std::map<pid_t, ThreadNice> threads = ThreadNices(agent->pid());
          if (!threads.count(agent->pid())) return ::testing::AssertionFailure() << "no main thread";
          const int own = threads[agent->pid()].nice;
          int placing = 0;
          std::string wrong;
          for (const auto& [tid, thread] : threads) {
            placing += thread.name == "onebox-place";
            if (thread.nice != own) wrong += fmt::format("{} ({}) at {}; ", thread.name, tid, thread.nice);
          }
          return ::testing::AssertionResult(placing == 1 && wrong.empty())
                 << placing << " placing threads; agent at " << own << "; " << wrong;
        },
        seconds(10), agent->address() + "'s threads at the agent's priority once caught up"));
  }
}

TEST_F(ClusterTest, AntiEntropyRepairsWhatANodeMissedPastTheLogsRetention) {
  extra_args_ = {"--log-retain", "10"};
  StartThree();
  if (HasFatalFailure()) return;
  EXPECT_EQ(c->Stop(SIGKILL), -SIGKILL);
  // 100 writes, and a file: a's log keeps only the last 10 once it truncates (every second).
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(Put(*a, "missed/" + std::to_string(i), "v").ok());
  ASSERT_EQ(Shell(*a, "echo missed-file > /cluster/missed.txt").exit_code, 0);
  // Stands in for "a has truncated its log", which is not observable today
  // (Cluster/Status has no log figures, and a truncation logs nothing): a
  // looks every second, so 1.5 s takes in at least one truncation.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(c->Start());
  ASSERT_TRUE(Converge({a.get(), b.get(), c.get()}, seconds(20)));
  v1::ScanRequest q;
  q.set_prefix("missed/");
  q.set_limit(1000);
  v1::ScanResponse r;
  grpc::ClientContext ctx;
  ASSERT_TRUE(v1::Store::NewStub(c->channel())->Scan(&ctx, q, &r).ok());
  EXPECT_EQ(r.entries_size(), 100);
  EXPECT_TRUE(Eventually(*c, "cat /cluster/missed.txt", "missed-file\n"));
  std::ifstream log(dir_ / "c.log");
  std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("anti-entropy:"), std::string::npos) << "c was not repaired by anti-entropy:\n" << text;
}

}  // namespace
}  // namespace onebox::testing
