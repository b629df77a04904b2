// What programs read converges, not only the stores: three agents on
// loopback, writers on several nodes rewriting the same files at the same
// moment (aligned to the same millisecond, so that versions often tie on the
// HLC timestamp, and given the same mtime, as tar -x or cp -p do, so that
// they are alike in size and mtime), with renames and removals among them.
// Once quiet, every node's programs read the same bytes in every file, and
// those are the store's current version's. And one node's long seeded
// sequence of file operations, checked against a native run and on the
// other nodes after every slice.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "consistency/digest.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

// (The scripts go to python3 -c in single quotes: they hold none.)
// Writes every file in `files` under /cluster/race with "from-TAG-ROUND",
// starting at the wall-clock instant `at_ns` (the last moments spinning:
// the writers on the nodes start within microseconds of each other), and
// gives each the mtime `at_ns`: the writers' versions are alike in size and
// mtime, and differ in their bytes.
constexpr const char* kWriter = R"PY(
import os, sys, time
at, tag, rnd, files = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4].split(",")
os.stat("/cluster/race")  # the link to the agent made before the race, not in it
time.sleep(max(0, (at - time.time_ns()) / 1e9 - 0.003))  # then spin: two cores, three writers
while time.time_ns() < at:
    pass
for f in files:
    with open("/cluster/race/" + f, "w") as out:
        out.write("from-%s-%s\n" % (tag, rnd))
    os.utime("/cluster/race/" + f, ns=(at, at))  # as tar -x or cp -p do: alike in size and mtime
)PY";

// At the same instant: moves a file away and back under another name, or removes one.
constexpr const char* kMover = R"PY(
import os, sys, time
at, rnd, op, name = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.stat("/cluster/race")
time.sleep(max(0, (at - time.time_ns()) / 1e9 - 0.003))
while time.time_ns() < at:
    pass
p = "/cluster/race/" + name
try:
    if op == "mv":
        os.rename(p, p + ".moved-" + rnd)
    else:
        os.unlink(p)
except FileNotFoundError:
    pass
)PY";

class ViewConvergenceTest : public ::testing::Test {
 protected:
  std::unique_ptr<AgentProcess> Agent(const std::string& name, const std::string& join = "") {
    std::vector<std::string> args{"--name", name, "--data-dir", dir_ / (name + "-data"), "--listen", "127.0.0.1:0",
                                  "--socket", dir_ / (name + ".sock"), "--log-level", "debug"};
    if (!join.empty()) args.insert(args.end(), {"--join", join});
    return AgentProcess::WithArgs(args, dir_ / (name + ".sock"), dir_ / (name + ".log"));
  }
  // Whether agent lists a, b and c as alive (Cluster/ListNodes), waiting for it.
  ::testing::AssertionResult AllThreeAlive(AgentProcess& agent) {
    return WaitUntil(
        [&] {
          v1::ListNodesResponse r;
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + seconds(2));
          std::set<std::string> alive;
          if (v1::Cluster::NewStub(agent.channel())->ListNodes(&ctx, {}, &r).ok())
            for (const v1::Node& n : r.nodes())
              if (n.state() == v1::NODE_STATE_ALIVE) alive.insert(n.name());
          return Observed(alive == std::set<std::string>{"a", "b", "c"}, alive);
        },
        seconds(10), "a, b and c are alive");
  }
  // a, then b and c joining it; returns once each lists the three alive.
  void StartThree() {
    a_ = Agent("a");
    ASSERT_TRUE(a_->Start());
    b_ = Agent("b", a_->address());
    c_ = Agent("c", a_->address());
    ASSERT_TRUE(b_->Start());
    ASSERT_TRUE(c_->Start());
    for (AgentProcess* agent : {a_.get(), b_.get(), c_.get()}) ASSERT_TRUE(AllThreeAlive(*agent));
  }
  void TearDown() override { KeepLogsIfFailed(dir_.path(), {a_.get(), b_.get(), c_.get()}); }

  // What `cat` prints of every file under /cluster/race on agent, by name.
  std::map<std::string, std::string> Read(AgentProcess& agent) {
    // (Each file's bytes on its own line, an empty file's too: every file
    // written holds one line.)
    RunResult r = Shell(agent, "cd /cluster/race && for f in $(ls | sort); do printf '%s=%s\\n' \"$f\" \"$(cat \"$f\")\"; done");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::map<std::string, std::string> files;
    std::istringstream lines(r.out);
    for (std::string line; std::getline(lines, line);) {
      size_t eq = line.find('=');
      if (eq != std::string::npos) files[line.substr(0, eq)] = eq + 1 == line.size() ? "" : line.substr(eq + 1) + "\n";
    }
    return files;
  }

  TempDir dir_;
  std::unique_ptr<AgentProcess> a_, b_, c_;
};

TEST_F(ViewConvergenceTest, ConcurrentWritersOfTheSameFilesLeaveEveryNodeReadingTheStoresWinner) {
  StartThree();
  if (HasFatalFailure()) return;
  ASSERT_EQ(Shell(*a_, "mkdir /cluster/race").exit_code, 0);
  for (AgentProcess* agent : {b_.get(), c_.get()}) ASSERT_TRUE(Eventually(*agent, "test -d /cluster/race && echo y", "y\n"));

  const std::vector<std::string> files{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"};
  std::string joined;
  for (const std::string& f : files) joined += (joined.empty() ? "" : ",") + f;
  constexpr int kRounds = 16;
  for (int round = 0; round < kRounds; ++round) {
    // All start at a whole 100 ms at least 400 ms from now: every python has started by then.
    int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count();
    int64_t at = (now / 100'000'000 + 5) * 100'000'000;
    auto shim = [&](AgentProcess& agent) {
      return fmt::format("env LD_PRELOAD={} ONEBOX_SOCKET={}", ShimLib(), agent.socket());
    };
    std::string writers = fmt::format("{} python3 -c '{}' {} a {} {} & ", shim(*a_), kWriter, at, round, joined) +
                          fmt::format("{} python3 -c '{}' {} c {} {} & ", shim(*c_), kWriter, at, round, joined);
    // Every third round b writes too; in the others it moves or removes a file the writers write.
    if (round % 3 == 0) writers += fmt::format("{} python3 -c '{}' {} b {} {} & ", shim(*b_), kWriter, at, round, joined);
    else writers += fmt::format("{} python3 -c '{}' {} {} {} {} & ", shim(*b_), kMover, at, round,
                                round % 3 == 1 ? "mv" : "rm", files[static_cast<size_t>(round) % files.size()]);
    RunResult r = RunCommand({"bash", "-c", writers + "wait"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  // Quiet now: the stores agree, and so do the views (what differs is shown below).
  EXPECT_TRUE(Converge({a_.get(), b_.get(), c_.get()}, seconds(30)));
  std::map<std::string, std::string> on_a = Read(*a_);
  ASSERT_FALSE(on_a.empty());
  EXPECT_EQ(Read(*b_), on_a);
  EXPECT_EQ(Read(*c_), on_a);
  // And what they read is the store's current version of each file.
  int ties = 0;  // versions of one file stamped in the same HLC instant by two nodes
  for (const auto& [name, bytes] : on_a) {
    v1::VersionsRequest vq;
    vq.set_path("/cluster/race/" + name);
    v1::VersionsResponse versions;
    grpc::ClientContext vctx;
    vctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
    ASSERT_TRUE(v1::Namespace::NewStub(b_->channel())->Versions(&vctx, vq, &versions).ok());
    std::map<uint64_t, int> stamps;
    for (const v1::FileVersion& v : versions.versions()) ties += stamps[v.version().hlc()]++ > 0;
    bool found = false;
    v1::Inode recorded = RecordedInode(*b_, "/cluster/race/" + name, &found);
    ASSERT_TRUE(found) << name;
    // (An empty file, which a mover may catch as a writer makes it, has no chunks.)
    ASSERT_EQ(recorded.chunks_size(), bytes.empty() ? 0 : 1) << name;
    if (!bytes.empty()) {
      EXPECT_EQ(recorded.chunks(0), Sha256(bytes)) << name << " reads " << bytes;
    }
  }
  RecordProperty("ties", ties);
  std::cout << "versions that tied on the timestamp: " << ties << "\n";
}

// The lines of want missing from got ("- ") and those of got not in want ("+ ").
std::string LinesDiffering(const std::string& want, const std::string& got) {
  auto lines = [](const std::string& text) {
    std::set<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.insert(line);
    return out;
  };
  const std::set<std::string> w = lines(want), g = lines(got);
  std::string diff;
  for (const std::string& line : w)
    if (!g.count(line)) diff += "- " + line + "\n";
  for (const std::string& line : g)
    if (!w.count(line)) diff += "+ " + line + "\n";
  return diff;
}

// Cross-node conformance (issue 15): five seeded sequences of 1,000 file
// operations each (tests/integration/differential/ops.py: create, write at
// offsets, truncate, rename of files and directories, link, symlink, chmod,
// utimens, setxattr and removexattr, mkdir, rmdir, unlink), applied in
// slices of 100 on a plain directory and under node a's shim in /cluster.
// After each slice: every call got the same answer in both places, both
// trees are alike (types, modes, sizes, bytes, symlink targets, extended
// attributes, link counts and which names are one file), and b's programs
// soon see exactly a's tree, files' mtimes too.
//
// In a loop beside a busy loop it found, among others, the recorder races
// of docs/consistency.md ("One node's file operations, seen on the others").
// Seeds 18 to 59, each run once, found a change through a name renamed over
// before the recorder looked (18) and lremovexattr's answer on a symlink
// (27), both kept here; 28 finds a write through a link whose name goes
// before the recorder sees it made (docs/consistency.md).
TEST_F(ViewConvergenceTest, ASeededSequenceOfFileOperationsLeavesEveryNodeWithTheSameTreeAsANativeRun) {
  StartThree();
  if (HasFatalFailure()) return;
  const std::string ops = std::string(ONEBOX_SOURCE_DIR) + "/tests/integration/differential/ops.py";
  auto under = [&](AgentProcess& agent, std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/python3", ops});
    return RunCommand(args, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent.socket()}});
  };
  constexpr int kOps = 1000, kSlice = 100;
  for (int seed : {15, 16, 17, 18, 27}) {
    const std::string native = dir_ / fmt::format("native-{}", seed), in_cluster = fmt::format("/cluster/diff/{}", seed);
    ASSERT_EQ(mkdir(native.c_str(), 0755), 0);
    ASSERT_EQ(Shell(*a_, "mkdir -p " + in_cluster).exit_code, 0);
    for (int first = 0; first < kOps; first += kSlice) {
      SCOPED_TRACE(fmt::format("seed {}, operations {} to {}", seed, first, first + kSlice - 1));
      const std::vector<std::string> slice{std::to_string(seed), std::to_string(first), std::to_string(first + kSlice)};
      std::vector<std::string> here{"/usr/bin/python3", ops, native};
      here.insert(here.end(), slice.begin(), slice.end());
      RunResult natively = RunCommand(here);
      std::vector<std::string> there{in_cluster};
      there.insert(there.end(), slice.begin(), slice.end());
      RunResult made = under(*a_, there);
      ASSERT_EQ(natively.exit_code, 0) << natively.err;
      ASSERT_EQ(made.exit_code, 0) << made.err;
      ASSERT_EQ(made.out, natively.out) << "the same calls got other answers in the cluster";
      RunResult native_tree = RunCommand({"/usr/bin/python3", ops, "--snapshot", native, "--no-mtime"});
      RunResult a_tree = under(*a_, {"--snapshot", in_cluster, "--no-mtime"});
      ASSERT_EQ(a_tree.exit_code, 0) << a_tree.err;
      ASSERT_EQ(a_tree.out, native_tree.out) << "a's tree is not the native one:\n"
                                              << LinesDiffering(native_tree.out, a_tree.out);
      RunResult a_whole = under(*a_, {"--snapshot", in_cluster});
      ASSERT_TRUE(WaitUntil(
          [&] {
            RunResult b_tree = under(*b_, {"--snapshot", in_cluster});
            return ::testing::AssertionResult(b_tree.out == a_whole.out)
                   << "b, against a:\n" << LinesDiffering(a_whole.out, b_tree.out) << b_tree.err;
          },
          seconds(20), "b's programs see a's tree"));
    }
  }
  // And the third node, at the end.
  RunResult a_whole = under(*a_, {"--snapshot", "/cluster/diff"});
  EXPECT_TRUE(WaitUntil(
      [&] {
        RunResult c_tree = under(*c_, {"--snapshot", "/cluster/diff"});
        return ::testing::AssertionResult(c_tree.out == a_whole.out)
               << "c, against a:\n" << LinesDiffering(a_whole.out, c_tree.out) << c_tree.err;
      },
      seconds(20), "c's programs see a's tree"));
}

}  // namespace
}  // namespace onebox::testing
