// Partitions, made with network namespaces: three agents, each in a namespace
// of its own with a veth on a bridge this test creates (traffic goes only
// among them and to the test, on a private /24). One node's link is cut for
// 30 s while both sides write (files through the shim, keys through gRPC),
// then healed: every node converges to the same state within seconds, and no
// acknowledged write is lost. During the cut, the cut-off node keeps serving
// what it holds, and (once it has noticed the cut) an open that needs content
// only the others hold fails at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "nodeagent/locks/lock_home.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/node_spaces.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

// Agents NAME1..NAMEcount, agent i inside namespace i, each joining `seeds`
// (default: node 1's address; node 1 joins nobody then).
void StartNodes(Network& net, const TempDir& dir, const std::string& prefix, int count,
                std::vector<std::unique_ptr<AgentProcess>>* nodes, const std::string& seeds = "") {
  for (int i = 1; i <= count; ++i) {
    std::string name = fmt::format("{}{}", prefix, i);
    // Debug logs: a failed test keeps them (KeepLogsOf), and they say what each agent recorded and placed.
    std::vector<std::string> args{"--name", name, "--data-dir", dir / (name + "-data"), "--listen",
                                  net.Address(i) + ":7070", "--socket", dir / (name + ".sock"), "--log-level", "debug"};
    if (!seeds.empty() || i > 1) {
      args.push_back("--join");
      args.push_back(seeds.empty() ? net.Address(1) + ":7070" : seeds);
    }
    nodes->push_back(AgentProcess::WithArgs(args, dir / (name + ".sock"), dir / (name + ".log")));
    nodes->back()->set_command_prefix(net.Inside(i));
    ASSERT_TRUE(nodes->back()->Start());
  }
}

void StartThree(Network& net, const TempDir& dir, const std::string& prefix,
                std::vector<std::unique_ptr<AgentProcess>>* nodes, const std::string& seeds = "") {
  StartNodes(net, dir, prefix, 3, nodes, seeds);
}

// A quorum read of key on agent, which on two nodes needs the other's answer.
grpc::Status QuorumRead(AgentProcess& agent, const std::string& key) {
  v1::GetRequest q;
  q.set_key(key);
  q.set_level(v1::READ_LEVEL_QUORUM);
  v1::GetResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
  return v1::Store::NewStub(agent.channel())->Get(&ctx, q, &r);
}

// Whether agent lists every member it knows as alive.
bool AllAlive(AgentProcess& agent, size_t members) {
  v1::ListNodesResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
  if (!v1::Cluster::NewStub(agent.channel())->ListNodes(&ctx, {}, &r).ok()) return false;
  size_t alive = 0;
  for (const v1::Node& n : r.nodes()) alive += n.state() == v1::NODE_STATE_ALIVE;
  return alive == members;
}

// Declared after the agents and their dir: if the test failed, keeps the
// agents' logs (KeepLogsIfFailed) before they and the dir go.
class KeepLogsOf {
 public:
  KeepLogsOf(const TempDir& dir, const std::vector<std::unique_ptr<AgentProcess>>& nodes) : dir_(dir), nodes_(nodes) {}
  ~KeepLogsOf() {
    std::vector<AgentProcess*> agents;
    for (const auto& n : nodes_) agents.push_back(n.get());
    KeepLogsIfFailed(dir_.path(), agents);
  }

 private:
  const TempDir& dir_;
  const std::vector<std::unique_ptr<AgentProcess>>& nodes_;
};

// How the store of node i holds path: "present", "deleted" or "absent" (the
// CLI's Namespace/Versions, run inside the node's namespace: the test cannot
// reach a node that is cut off).
std::string Recorded(const Network& net, int i, const std::string& path) {
  std::vector<std::string> argv = net.Inside(i);
  argv.insert(argv.end(), {OneboxBin(), "--agent", net.Address(i) + ":7070", "versions", path});
  RunResult r = RunCommand(argv);
  if (r.out.find("current (deleted)") != std::string::npos) return "deleted";
  if (r.out.find("current") != std::string::npos) return "present";
  return "absent";
}

// Waits until the store of node i holds each path as want says (Recorded).
::testing::AssertionResult WaitForRecords(const Network& net, int i, const std::map<std::string, std::string>& want) {
  return WaitUntil(
      [&] {
        std::map<std::string, std::string> seen;
        for (const auto& [path, state] : want) seen[path] = Recorded(net, i, path);
        return Observed(seen == want, seen);
      },
      seconds(15), fmt::format("node {} has recorded its own changes", i));
}

TEST(PartitionTest, ACutOffNodeAndTheRestBothWriteThenEveryNodeConvergesWithNothingLost) {
  Network net(3);
  if (!net.ok()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error();
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> nodes;
  KeepLogsOf keep_logs(dir, nodes);
  StartThree(net, dir, "p", &nodes);
  if (::testing::Test::HasFatalFailure()) return;
  AgentProcess &a = *nodes[0], &b = *nodes[1], &c = *nodes[2];
  auto converge = [&](seconds timeout) { return Converge({&a, &b, &c}, timeout, Unanswered::kWaitsOn); };
  // Before: files from a, some of whose content c will hold only as a stub.
  ASSERT_EQ(Shell(a, "mkdir -p /cluster/before && for i in $(seq 20); do echo before$i > /cluster/before/f$i; done")
                .exit_code,
            0);
  ASSERT_TRUE(converge(seconds(20)));
  // The digests may agree before a has recorded its files, and c's view
  // follows its store a moment later: wait for a stub there.
  std::string stub_on_c;
  auto find_stub = [&] {
    for (int i = 1; i <= 20 && stub_on_c.empty(); ++i) {
      std::string f = dir / fmt::format("p3-data/view/cluster/before/f{}", i);
      if (getxattr(f.c_str(), "user.onebox.stub", nullptr, 0) >= 0) stub_on_c = fmt::format("/cluster/before/f{}", i);
    }
    return !stub_on_c.empty();
  };
  (void)WaitUntil(find_stub, seconds(10), "c's view holds one of a's files as a stub");  // the assertion below counts
  ASSERT_FALSE(stub_on_c.empty()) << "with replication factor 2, c should hold some of a's files as stubs";

  ASSERT_TRUE(net.SetLink(3, false)) << net.error();
  auto cut_at = std::chrono::steady_clock::now();
  // Both sides write for 30 s: a files and keys on a (fsync'd: a and b make
  // the quorum), files on c (fsync fails there: no quorum, kept locally).
  int rounds = 0;
  std::vector<std::string> c_fsync;
  std::vector<int> c_wrote;  // rounds whose file c could make (not in its first seconds: see below)
  bool checked_stub = false;
  const auto cut_for = seconds(getenv("ONEBOX_PARTITION_SECONDS") ? atoi(getenv("ONEBOX_PARTITION_SECONDS")) : 30);
  while (std::chrono::steady_clock::now() - cut_at < cut_for) {
    ASSERT_EQ(Shell(a, fmt::format("mkdir -p /cluster/ab && echo ab{0} > /cluster/ab/f{0} && sync /cluster/ab/f{0}",
                                   rounds))
                  .exit_code,
              0);
    v1::PutRequest q;
    q.set_key(fmt::format("ab/{}", rounds));
    q.set_value("v");
    v1::PutResponse r;
    ASSERT_TRUE(CallOverSocket(b, "/onebox.v1.Store/Put", q, &r).ok());
    // Until c's membership marks the others suspect (2 s of silence), a
    // mkdir there cannot win a majority and fails with EIO: c's writes count
    // from when they succeed.
    RunResult cw = Shell(c, fmt::format("mkdir -p /cluster/c && echo c{0} > /cluster/c/f{0} && sync /cluster/c/f{0}; "
                                        "cat /cluster/c/f{0}",
                                        rounds));
    c_fsync.push_back(cw.err);
    if (cw.out == fmt::format("c{}\n", rounds)) c_wrote.push_back(rounds);
    if (std::chrono::steady_clock::now() - cut_at > seconds(3)) {
      EXPECT_EQ(cw.out, fmt::format("c{}\n", rounds)) << "c's own files stay readable while it is cut off";
      if (!checked_stub) {
        // What only the other side holds fails at once on c; what c holds works.
        RunResult r = Shell(c, "cat " + stub_on_c);
        EXPECT_NE(r.exit_code, 0);
        EXPECT_LT(r.seconds, 1.0) << "an open that needs unreachable content must fail fast";
        checked_stub = true;
      }
    }
    ++rounds;
    // Not a wait for a condition: paces the rounds of writes over the cut.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_NE(c_fsync.back().find("Input/output error"), std::string::npos)
      << "fsync on a node cut off from its write quorum must fail: " << c_fsync.back();

  ASSERT_TRUE(net.SetLink(3, true)) << net.error();
  auto healed_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(converge(seconds(20))) << "no convergence within 20 s of the heal\nc's log:\n"
                                      << c.log() << "\na's log:\n" << a.log();
  double converge_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - healed_at).count();
  RecordProperty("converge_seconds_after_heal", std::to_string(converge_s));
  printf("partition: %d rounds of writes on each side; all digests equal %.1f s after the heal\n", rounds, converge_s);
  // Content only c holds is read from c, once a node counts c alive again:
  // the digests may agree (through b's anti-entropy) before a's first gossip
  // exchange with c.
  ASSERT_TRUE(WaitForPagesCounting({&a, &b, &c}, 2));

  // Nothing lost: every node reads every file either side wrote, and every key.
  ASSERT_GT(c_wrote.size(), static_cast<size_t>(rounds) / 2);
  std::string want, cmd = "cat";
  for (int i = 0; i < rounds; ++i) {
    cmd += fmt::format(" /cluster/ab/f{}", i);
    want += fmt::format("ab{}\n", i);
  }
  for (int i : c_wrote) {
    cmd += fmt::format(" /cluster/c/f{}", i);
    want += fmt::format("c{}\n", i);
  }
  for (AgentProcess* n : {&a, &b, &c}) {
    RunResult r = Shell(*n, cmd);
    EXPECT_EQ(r.out, want) << r.err;
    v1::ScanRequest q;
    q.set_prefix("ab/");
    q.set_limit(10000);
    v1::ScanResponse s;
    // The agent closed our connection while we were cut off (its keepalive
    // pings went unanswered): the first call may meet the reset, as any
    // client's would, and the next connects again.
    ASSERT_TRUE(WaitUntil(
        [&] {
          grpc::ClientContext ctx;
          ctx.set_wait_for_ready(true);
          ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
          grpc::Status scanned = v1::Store::NewStub(n->channel())->Scan(&ctx, q, &s);
          return Observed(scanned.ok(), scanned.error_message());
        },
        seconds(15), "a scan after the heal"));
    EXPECT_EQ(s.entries_size(), rounds);
  }
  EXPECT_EQ(Shell(c, "cat " + stub_on_c).exit_code, 0) << "healed: the content comes";
}

// A peer's agent killed while it is cut off, then started again and
// healed: a call made into the cut fails within its deadline, and once
// membership counts the peer alive again, the first call to it is answered.
// Idle links are not pinged (peer/grpc_peers.h), so this rests on the link
// taking a new connection when the peer is heard again: the old one may be
// one the dead agent's closing never reached (its kernel resends that at
// doubling intervals, 6.2 s and 12.6 s after it), or the channel may be
// between connection attempts. (PeerLinks.CallsAfterConnectNowGoOverANewConnection
// checks the new connection itself; here the race often goes the right way
// without it.)
TEST(PartitionTest, CallsToANodeBackFromACutGoOverANewConnection) {
  Network net(2);
  if (!net.ok()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error();
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> nodes;
  KeepLogsOf keep_logs(dir, nodes);
  StartNodes(net, dir, "r", 2, &nodes);
  if (::testing::Test::HasFatalFailure()) return;
  AgentProcess &a = *nodes[0], &b = *nodes[1];
  ASSERT_TRUE(WaitUntil([&] { return AllAlive(a, 2); }, seconds(20), "a lists b alive"));
  ASSERT_TRUE(QuorumRead(a, "probe").ok());
  ASSERT_TRUE(net.SetLink(2, false)) << net.error();
  // b is still counted alive: a's read goes to it, into the cut, and fails.
  grpc::Status in_cut = QuorumRead(a, "probe");
  EXPECT_EQ(in_cut.error_code(), grpc::StatusCode::UNAVAILABLE) << in_cut.error_message();
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(b.Stop(SIGKILL), -SIGKILL);
  // Healed between two of the kernel's resends of b's closing (6.2 s and
  // 12.6 s after it).
  std::this_thread::sleep_until(killed + seconds(7));
  ASSERT_TRUE(net.SetLink(2, true)) << net.error();
  ASSERT_TRUE(b.Start());
  ASSERT_TRUE(WaitUntil([&] { return AllAlive(a, 2); }, seconds(10), "a lists b alive again"));
  grpc::Status first = QuorumRead(a, "probe");
  EXPECT_TRUE(first.ok()) << first.error_message() << " ("
                          << std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count()
                          << " s after b's agent was killed)";
}

// The rule for a directory lease's holder cut off (docs/consistency.md):
// it goes on deciding exclusive creates in its directory alone; the other
// side waits until its term has run out (5 s from when it won the lease),
// then decides there too, so both sides may make the same name; at the heal
// every node converges.
TEST(PartitionTest, ACutOffLeaseHolderKeepsItsDirectoryForItsTermThenBothSidesDecide) {
  Network net(3);
  if (!net.ok()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error();
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> nodes;
  KeepLogsOf keep_logs(dir, nodes);
  StartThree(net, dir, "l", &nodes);
  if (::testing::Test::HasFatalFailure()) return;
  AgentProcess &a = *nodes[0], &b = *nodes[1], &c = *nodes[2];
  ASSERT_EQ(Shell(a, "mkdir /cluster/leased").exit_code, 0);
  ASSERT_TRUE(Converge({&a, &b, &c}, seconds(20), Unanswered::kWaitsOn));
  ASSERT_TRUE(WaitForPagesCounting({&a, &b, &c}, 2));  // or the shims would not ask for leases
  // c wins the lease on /cluster/leased with its first exclusive create
  // there, a directory, which that lease then covers; a sees it.
  auto won_at = std::chrono::steady_clock::now();
  ASSERT_EQ(Shell(c, "mkdir /cluster/leased/first").exit_code, 0);
  ASSERT_TRUE(Eventually(a, "ls -d /cluster/leased/first", "/cluster/leased/first\n", seconds(3)));
  ASSERT_TRUE(net.SetLink(3, false)) << net.error();
  // Cut off, c decides alone and at once while its term runs, in the
  // directory and in the one it covers.
  auto before = std::chrono::steady_clock::now();
  RunResult on_c = Shell(c, "mkdir /cluster/leased/first/from-c /cluster/leased/first/same "
                            "/cluster/leased/from-c /cluster/leased/same");
  EXPECT_EQ(on_c.exit_code, 0) << on_c.err;
  EXPECT_LT(std::chrono::steady_clock::now() - before, seconds(1));
  // a waits for c's term, in the covered directory too, then decides with b.
  RunResult on_a = Shell(a, "mkdir /cluster/leased/first/from-a /cluster/leased/first/same");
  auto decided_at = std::chrono::steady_clock::now();
  EXPECT_EQ(on_a.exit_code, 0) << on_a.err;
  EXPECT_GE(decided_at - won_at, std::chrono::milliseconds(4500)) << "a decided while c's cover still ran";
  EXPECT_LT(decided_at - won_at, seconds(15));
  on_a = Shell(a, "mkdir /cluster/leased/from-a /cluster/leased/same");
  EXPECT_EQ(on_a.exit_code, 0) << on_a.err;
  ASSERT_TRUE(net.SetLink(3, true)) << net.error();
  ASSERT_TRUE(Converge({&a, &b, &c}, seconds(30), Unanswered::kWaitsOn));
  for (AgentProcess* n : {&a, &b, &c}) {
    RunResult r = Shell(*n, "ls /cluster/leased /cluster/leased/first");
    EXPECT_EQ(r.out, "/cluster/leased:\nfirst\nfrom-a\nfrom-c\nsame\n\n/cluster/leased/first:\nfrom-a\nfrom-c\nsame\n")
        << n->address();
  }
}

// A lock home cut off for longer than the others wait before declaring it
// dead: they move its file's home, and b's program takes the lock there.
// When the cut heals, the file's home is c again, which saw no majority
// meanwhile and so takes only reclaims for its grace: b's lock comes back
// to it, and c's programs never get the lock while b's program holds it.
TEST(PartitionTest, ALockHomeCutOffGrantsNothingTheOthersGaveMeanwhileWhenItComesBack) {
  Network net(3);
  if (!net.ok()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error();
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> nodes;
  KeepLogsOf keep_logs(dir, nodes);
  StartThree(net, dir, "k", &nodes);
  if (::testing::Test::HasFatalFailure()) return;
  AgentProcess &b = *nodes[1], &c = *nodes[2];
  ASSERT_TRUE(WaitForPagesCounting({nodes[0].get(), &b, &c}, 2));
  std::vector<std::string> ids;
  std::string c_id;
  {
    v1::ListNodesResponse r;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
    ASSERT_TRUE(v1::Cluster::NewStub(b.channel())->ListNodes(&ctx, {}, &r).ok());
    for (const v1::Node& n : r.nodes()) {
      ids.push_back(n.node_id());
      if (n.name() == "k3") c_id = n.node_id();
    }
  }
  ASSERT_EQ(ids.size(), 3u);
  std::string name;
  for (int i = 0; name.empty(); ++i)
    if (LockHome::HomeOf(fmt::format("cluster/job{}", i), ids) == c_id) name = fmt::format("job{}", i);
  const std::string path = "/cluster/" + name, held = dir / "held";
  ASSERT_EQ(Shell(c, "echo x > " + path).exit_code, 0);
  ASSERT_TRUE(Eventually(b, "cat " + path, "x\n", seconds(10)));
  ASSERT_TRUE(net.SetLink(3, false)) << net.error();
  std::this_thread::sleep_for(seconds(12));  // a and b declare c dead (10 s): the file's home moves
  RunResult holder_run;
  std::thread holding([&] {
    holder_run = Shell(b, fmt::format("flock {} sh -c 'echo $$ > {}.new && mv {}.new {} && exec sleep 60'", path,
                                      held, held, held));
  });
  const bool took = WaitUntil([&] { return std::filesystem::exists(held); }, seconds(20), "b's program holds the lock");
  ASSERT_TRUE(net.SetLink(3, true)) << net.error();
  auto stop_holder = [&] {
    if (took) kill(std::stoi(ReadFile(held)), SIGKILL);
    holding.join();
  };
  if (!took) {
    stop_holder();
    FAIL() << holder_run.err;
  }
  // c's programs, from the heal on: never granted while b's program holds
  // it (ENOLCK while c's home answers nothing; refused once it does).
  std::string said;
  for (int i = 0; i < 20; ++i) {
    said = Shell(c, "flock -n " + path + " true && echo granted || echo refused").out;
    EXPECT_NE(said, "granted\n") << "c's program got a lock b's program holds (try " << i << ")";
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  EXPECT_EQ(said, "refused\n");
  stop_holder();
}

// Operations that cross on two sides of a partition: c moves x into y while
// a moves y into x, and c removes a directory while a writes a file in it.
// Per-path last-writer-wins alone would leave entries below dead directories
// (orphans); the nodes must instead agree on one tree in which everything
// written is reachable: both moves take effect, and the removed directory
// comes back with the new file (an addition wins over a concurrent removal).
TEST(PartitionTest, CrossedDirectoryMovesAndARemovalConvergeToOneTreeWithNothingOrphaned) {
  Network net(3);
  if (!net.ok()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error();
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> nodes;
  KeepLogsOf keep_logs(dir, nodes);
  StartThree(net, dir, "t", &nodes);
  if (::testing::Test::HasFatalFailure()) return;
  AgentProcess &a = *nodes[0], &b = *nodes[1], &c = *nodes[2];
  auto converge = [&](seconds timeout) { return Converge({&a, &b, &c}, timeout, Unanswered::kWaitsOn); };
  ASSERT_EQ(Shell(a, "mkdir -p /cluster/t/x /cluster/t/y /cluster/t/gone && echo fx > /cluster/t/x/fx && "
                     "echo fy > /cluster/t/y/fy && echo old > /cluster/t/gone/old")
                .exit_code,
            0);
  ASSERT_TRUE(converge(seconds(20)));
  // The stores agree; c's view follows them a moment later.
  ASSERT_TRUE(Eventually(c, "cat /cluster/t/x/fx /cluster/t/y/fy", "fx\nfy\n"));

  ASSERT_TRUE(net.SetLink(3, false)) << net.error();
  RunResult on_c = Shell(c, "mv /cluster/t/x /cluster/t/y/x && rm -r /cluster/t/gone");
  RunResult on_a = Shell(a, "mv /cluster/t/y /cluster/t/x/y && echo new > /cluster/t/gone/new");
  ASSERT_EQ(on_c.exit_code, 0) << on_c.err;
  ASSERT_EQ(on_a.exit_code, 0) << on_a.err;
  // Both sides have recorded their own changes before either hears of the other's.
  EXPECT_TRUE(WaitForRecords(net, 3, {{"/cluster/t/y/x", "present"}, {"/cluster/t/y/x/fx", "present"},
                                      {"/cluster/t/x", "deleted"}, {"/cluster/t/x/fx", "deleted"},
                                      {"/cluster/t/gone", "deleted"}, {"/cluster/t/gone/old", "deleted"}}));
  EXPECT_TRUE(WaitForRecords(net, 1, {{"/cluster/t/x/y", "present"}, {"/cluster/t/x/y/fy", "present"},
                                      {"/cluster/t/y", "deleted"}, {"/cluster/t/y/fy", "deleted"},
                                      {"/cluster/t/gone/new", "present"}}));
  ASSERT_TRUE(net.SetLink(3, true)) << net.error();
  ASSERT_TRUE(converge(seconds(30))) << "no convergence within 30 s of the heal";

  // One tree, the same everywhere, in the stores and in the views alike.
  const std::string want = "./gone\n./gone/new\n./x\n./x/y\n./x/y/fy\n./y\n./y/x\n./y/x/fx\n";
  auto dead_in_store = [&](AgentProcess& n) {
    std::string dead;
    std::istringstream lines(want);
    for (std::string entry; std::getline(lines, entry);) {
      v1::StatRequest q;
      q.set_path("/cluster/t" + entry.substr(1));
      v1::StatResponse r;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + seconds(5));
      if (!v1::Namespace::NewStub(n.channel())->Stat(&ctx, q, &r).ok() || !r.found()) dead += " " + q.path();
    }
    return dead;
  };
  for (auto& n : nodes) {
    auto none_dead = [&] {
      std::string dead = dead_in_store(*n);
      return Observed(dead.empty(), dead);
    };
    EXPECT_TRUE(WaitUntil(none_dead, seconds(15), "the store of " + n->address() + " holds no entry as removed"));
  }
  ASSERT_TRUE(converge(seconds(10))) << "no convergence after the repairs";
  for (auto& n : nodes) {
    EXPECT_TRUE(Eventually(*n, "cd /cluster/t && find . -mindepth 1 | LC_ALL=C sort", want, seconds(15)))
        << "the tree seen through " << n->address();
    EXPECT_EQ(Shell(*n, "cat /cluster/t/y/x/fx /cluster/t/x/y/fy /cluster/t/gone/new").out, "fx\nfy\nnew\n");
  }
}

// In the spirit of Jepsen: a writer on every node makes files (each fsync'd:
// acknowledged once fsync returns) while a nemesis, for 40 s, cuts a random
// node off or kill -9s a random agent and brings it back. Then everything is
// healed, and every node must hold every acknowledged file, byte for byte,
// and the same state digest.
TEST(PartitionTest, RandomKillsAndPartitionsLoseNoAcknowledgedWrite) {
  Network net(3);
  if (!net.ok()) GTEST_SKIP() << "cannot make network namespaces here: " << net.error();
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> nodes;
  KeepLogsOf keep_logs(dir, nodes);
  StartThree(net, dir, "j", &nodes, fmt::format("{}:7070,{}:7070", net.Address(1), net.Address(2)));
  if (::testing::Test::HasFatalFailure()) return;
  ASSERT_EQ(Shell(*nodes[0], "mkdir -p /cluster/h").exit_code, 0);
  // The writers start once every node holds /cluster/h (where they write).
  ASSERT_TRUE(Converge({nodes[0].get(), nodes[1].get(), nodes[2].get()}, seconds(20), Unanswered::kWaitsOn));
  for (auto& n : nodes) ASSERT_TRUE(Eventually(*n, "test -d /cluster/h && echo here", "here\n"));

  const std::string writer_py =
      "import os, sys, time\n"
      "node, stop = sys.argv[1], sys.argv[2]\n"
      "i = 0\n"
      "while not os.path.exists(stop):\n"
      "    i += 1\n"
      "    try:\n"
      "        fd = os.open('/cluster/h/%s-%d' % (node, i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\n"
      "        try:\n"
      "            os.write(fd, ('%s %d\\n' % (node, i)).encode())\n"
      "            os.fsync(fd)\n"
      "        finally:\n"
      "            os.close(fd)\n"
      "        print(i, flush=True)\n"
      "    except OSError:\n"
      "        time.sleep(0.05)\n";
  std::string stop = dir / "stop";
  std::vector<RunResult> written(3);
  std::vector<std::thread> writers;
  for (int i = 0; i < 3; ++i)
    writers.emplace_back([&, i] {
      written[i] = RunCommand({"/usr/bin/python3", "-c", writer_py, fmt::format("w{}", i + 1), stop},
                              {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", nodes[i]->socket()}});
    });

  std::mt19937 rng(static_cast<unsigned>(getpid()));
  std::string history;
  auto until = std::chrono::steady_clock::now() + seconds(40);
  while (std::chrono::steady_clock::now() < until) {
    int victim = std::uniform_int_distribution<int>(1, 3)(rng);
    auto hold = std::chrono::milliseconds(std::uniform_int_distribution<int>(1000, 4000)(rng));
    if (rng() % 2 == 0) {
      history += fmt::format("cut {} for {} ms; ", victim, hold.count());
      ASSERT_TRUE(net.SetLink(victim, false)) << net.error();
      std::this_thread::sleep_for(hold);  // not a wait: how long the cut lasts is the nemesis's choice
      ASSERT_TRUE(net.SetLink(victim, true)) << net.error();
    } else {
      history += fmt::format("kill -9 {} for {} ms; ", victim, hold.count());
      EXPECT_EQ(nodes[victim - 1]->Stop(SIGKILL), -SIGKILL);
      std::this_thread::sleep_for(hold);  // not a wait: how long the node stays down is the nemesis's choice
      ASSERT_TRUE(nodes[victim - 1]->Start()) << history;
    }
    // Not a wait either: the writers have the whole cluster for a random while.
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(500, 2000)(rng)));
  }
  { std::ofstream(stop) << "stop"; }
  for (auto& t : writers) t.join();

  ASSERT_TRUE(Converge({nodes[0].get(), nodes[1].get(), nodes[2].get()}, seconds(30), Unanswered::kWaitsOn))
      << "no convergence within 30 s after: " << history;

  const std::string check_py =
      "import sys\n"
      "bad = []\n"
      "for w in sys.argv[1:]:\n"
      "    node, i = w.split(':')\n"
      "    try:\n"
      "        got = open('/cluster/h/%s-%s' % (node, i)).read()\n"
      "        if got != '%s %s\\n' % (node, i): bad.append('%s(read %r)' % (w, got))\n"
      "    except OSError as e:\n"
      "        bad.append('%s(%s)' % (w, e.strerror))\n"
      "print(len(bad), ' '.join(bad[:10]))\n";
  std::vector<std::string> argv{"/usr/bin/python3", "-c", check_py};
  size_t acked = 0;
  for (int i = 0; i < 3; ++i) {
    std::istringstream lines(written[i].out);
    for (int n; lines >> n; ++acked) argv.push_back(fmt::format("w{}:{}", i + 1, n));
  }
  EXPECT_GT(acked, 50u) << "too few acknowledged writes to say much: " << history;
  for (auto& n : nodes) {
    RunResult r = RunCommand(argv, {{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", n->socket()}});
    std::string versions;  // of the first one missing, as this node's history has them
    if (r.out.substr(0, 2) != "0 ") {
      std::string first = r.out.substr(r.out.find(' ') + 1);
      first = first.substr(0, first.find('('));
      std::string file = "/cluster/h/" + first.substr(0, first.find(':')) + "-" + first.substr(first.find(':') + 1);
      versions = RunCommand({OneboxBin(), "--agent", n->address(), "versions", file}).out;
    }
    EXPECT_EQ(r.out.substr(0, 2), "0 ") << "acknowledged writes missing on " << n->address() << " (of " << acked
                                        << "): " << r.out << r.err << "\nits versions there:\n"
                                        << versions << "nemesis: " << history;
  }
  printf("jepsen-style: %zu acknowledged writes, nemesis: %s\n", acked, history.c_str());
}

}  // namespace
}  // namespace onebox::testing
