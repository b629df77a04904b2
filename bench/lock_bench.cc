// Cluster-wide advisory locks (issue 15): what a lock costs, native beside
// onebox on three agents on loopback, programs under the shim.
//  Uncontended: a lock and an unlock by one program on a file nobody else
//     locks (fcntl's POSIX lock, and flock), per pair: native (a plain
//     directory), and onebox with the file's lock home on the program's own
//     node and on another node.
//  Handoff: two programs incrementing one counter file under flock, each
//     taking the lock, reading, writing and unlocking, N times: native (both
//     on this machine, one directory) beside onebox with the two programs on
//     two nodes (each lock that moves waits for what the other node wrote),
//     per increment; the counter's end value is checked.
//  SQLite: two programs each committing 2N one-row transactions into one
//     database at once (native: one directory; onebox: two nodes), per
//     transaction; the rows and integrity_check are checked.
//
//   lock_bench [--pairs N] [--increments N]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "nodeagent/locks/lock_home.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {

using onebox::testing::AgentProcess;
using onebox::testing::RunCommand;
using onebox::testing::RunResult;

constexpr char kPairs[] = R"(
import fcntl, os, sys, time
path, n, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
def once():
    if kind == 'fcntl':
        fcntl.lockf(fd, fcntl.LOCK_EX)
        fcntl.lockf(fd, fcntl.LOCK_UN)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
once()  # the first pays for what is set up once (a new home's grace)
began = time.perf_counter()
for _ in range(n):
    once()
print((time.perf_counter() - began) / n * 1e6)
)";

constexpr char kIncrements[] = R"(
import fcntl, os, sys
lock, counter, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
lf = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
for _ in range(n):
    fcntl.flock(lf, fcntl.LOCK_EX)
    with open(counter) as f:
        v = int(f.read() or 0)
    with open(counter, 'w') as f:
        f.write(str(v + 1))
    fcntl.flock(lf, fcntl.LOCK_UN)
)";

constexpr char kSqliteInserts[] = R"(
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)
for i in range(int(sys.argv[3])):
    con.execute('BEGIN IMMEDIATE')
    con.execute('INSERT INTO t VALUES (?, ?)', (sys.argv[2], i))
    con.execute('COMMIT')
)";

std::map<std::string, std::string> On(const AgentProcess* node) {
  if (node == nullptr) return {};
  return {{"LD_PRELOAD", onebox::testing::ShimLib()}, {"ONEBOX_SOCKET", node->socket()}};
}

double Pairs(const AgentProcess* node, const std::string& path, int n, const std::string& kind) {
  RunResult r = RunCommand({"/usr/bin/python3", "-c", kPairs, path, std::to_string(n), kind}, On(node));
  if (r.exit_code != 0) {
    fprintf(stderr, "lock_bench: %s pairs on %s: %s\n", kind.c_str(), path.c_str(), r.err.c_str());
    return -1;
  }
  return std::stod(r.out);
}

// Two programs incrementing counter under lock at once: µs per increment,
// and whether the counter ends at 2n.
std::pair<double, bool> Handoff(const AgentProcess* one, const AgentProcess* two, const std::string& dir, int n) {
  const std::string lock = dir + "/counter.lock", counter = dir + "/counter";
  RunResult init = RunCommand({"/bin/sh", "-c", "echo 0 > " + counter}, On(one));
  if (init.exit_code != 0) return {-1, false};
  if (two != nullptr) {  // the counter is on the second node before it starts
    for (int i = 0; i < 200 && RunCommand({"/bin/cat", counter}, On(two)).out != "0\n"; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto began = std::chrono::steady_clock::now();
  RunResult second;
  std::thread other([&] {
    second = RunCommand({"/usr/bin/python3", "-c", kIncrements, lock, counter, std::to_string(n)}, On(two));
  });
  RunResult first = RunCommand({"/usr/bin/python3", "-c", kIncrements, lock, counter, std::to_string(n)}, On(one));
  other.join();
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began).count();
  if (first.exit_code != 0 || second.exit_code != 0) {
    fprintf(stderr, "lock_bench: increments failed: %s %s\n", first.err.c_str(), second.err.c_str());
    return {-1, false};
  }
  std::string end = RunCommand({"/bin/cat", counter}, On(one)).out;
  return {us / (2 * n), end == std::to_string(2 * n)};
}

// Two programs (on one and two) committing n single-row transactions each
// into one SQLite database at once: us per transaction, and whether every
// row is there and the database passes integrity_check.
std::pair<double, bool> Sqlite(const AgentProcess* one, const AgentProcess* two, const std::string& db, int n) {
  const std::string make = "import sqlite3; c = sqlite3.connect('" + db + "'); c.execute('create table t (who, i)'); c.commit()";
  if (RunCommand({"/usr/bin/python3", "-c", make}, On(one)).exit_code != 0) return {-1, false};
  const std::string count = "import sqlite3; print(sqlite3.connect('" + db + "').execute('select count(*) from t').fetchone()[0])";
  if (two != nullptr)
    for (int i = 0; i < 200 && RunCommand({"/usr/bin/python3", "-c", count}, On(two)).out != "0\n"; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto began = std::chrono::steady_clock::now();
  RunResult second;
  std::thread other([&] {
    second = RunCommand({"/usr/bin/python3", "-c", kSqliteInserts, db, "two", std::to_string(n)}, On(two));
  });
  RunResult first = RunCommand({"/usr/bin/python3", "-c", kSqliteInserts, db, "one", std::to_string(n)}, On(one));
  other.join();
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - began).count();
  if (first.exit_code != 0 || second.exit_code != 0) {
    fprintf(stderr, "lock_bench: sqlite inserts failed: %s %s\n", first.err.c_str(), second.err.c_str());
    return {-1, false};
  }
  const std::string check = "import sqlite3; c = sqlite3.connect('" + db +
                            "'); print(c.execute('select count(*) from t').fetchone()[0], "
                            "c.execute('pragma integrity_check').fetchone()[0])";
  return {us / (2 * n), RunCommand({"/usr/bin/python3", "-c", check}, On(two)).out ==
                            std::to_string(2 * n) + " ok\n"};
}

}  // namespace

int main(int argc, char** argv) {
  int pairs = 2000, increments = 100;
  CLI::App app{"Cluster-wide locks: an uncontended lock, and a lock handed between nodes, beside native"};
  app.add_option("--pairs", pairs, "lock and unlock pairs of each uncontended row")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  app.add_option("--increments", increments,
                 "increments by each program of the handoff row (and 2N SQLite transactions each)")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  onebox::testing::TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> agents;
  std::vector<AgentProcess*> all;
  for (int i = 0; i < 3; ++i) {
    agents.push_back(onebox::testing::QuietLoopbackAgent(dir.path(), fmt::format("n{}", i),
                                                         i > 0 ? agents[0]->address() : ""));
    if (!agents.back()->Start(std::chrono::seconds(60))) return 1;
    all.push_back(agents.back().get());
  }
  if (!onebox::testing::WaitForPagesCounting(all, 2)) {
    fprintf(stderr, "lock_bench: the agents never all saw each other alive\n");
    return 1;
  }
  // Which node is a file's lock home: as every agent computes it.
  onebox::v1::ListNodesResponse nodes;
  grpc::ClientContext ctx;
  if (!onebox::v1::Cluster::NewStub(all[0]->channel())->ListNodes(&ctx, {}, &nodes).ok()) return 1;
  std::vector<std::string> ids;
  std::string self;
  for (const onebox::v1::Node& n : nodes.nodes()) {
    ids.push_back(n.node_id());
    if (n.self()) self = n.node_id();
  }
  std::string here, elsewhere;
  for (int i = 0; here.empty() || elsewhere.empty(); ++i) {
    const std::string name = fmt::format("lock{}", i);  // its key: below the view root
    (onebox::LockHome::HomeOf("cluster/" + name, ids) == self ? here : elsewhere) = name;
  }
  const std::string native_dir = dir.path() + "/native";
  std::filesystem::create_directories(native_dir);

  printf("Locks, three agents on loopback; programs in python3 under the shim (the native column without it)\n");
  printf("%-44s %12s %14s %14s %10s %10s\n", "", "native", "onebox home", "onebox home", "ratio", "ratio");
  printf("%-44s %12s %14s %14s %10s %10s\n", "", "", "here", "elsewhere", "here", "elsewhere");
  for (const std::string kind : {"fcntl", "flock"}) {
    const double native = Pairs(nullptr, native_dir + "/f", pairs, kind);
    const double at_home = Pairs(all[0], "/cluster/" + here, pairs, kind);
    const double away = Pairs(all[0], "/cluster/" + elsewhere, pairs, kind);
    printf("%-44s %9.1f us %11.1f us %11.1f us %9.1fx %9.1fx\n",
           fmt::format("uncontended {} lock + unlock ({} pairs)", kind, pairs).c_str(), native, at_home, away,
           at_home / native, away / native);
  }
  auto [native_us, native_ok] = Handoff(nullptr, nullptr, native_dir, increments);
  auto [onebox_us, onebox_ok] = Handoff(all[0], all[1], "/cluster", increments);
  printf("%-44s %9.0f us %11.0f us %14s %9.1fx\n",
         fmt::format("handoff: 2 x {} increments under flock", increments).c_str(), native_us, onebox_us,
         "(2 nodes)", onebox_us / native_us);
  auto [native_sql, native_sql_ok] = Sqlite(nullptr, nullptr, native_dir + "/app.db", increments * 2);
  auto [onebox_sql, onebox_sql_ok] = Sqlite(all[0], all[1], "/cluster/app.db", increments * 2);
  printf("%-44s %9.0f us %11.0f us %14s %9.1fx\n",
         fmt::format("sqlite: 2 x {} one-row transactions", increments * 2).c_str(), native_sql, onebox_sql,
         "(2 nodes)", onebox_sql / native_sql);
  printf("counter at the end: native %s, onebox %s; sqlite rows and integrity_check: native %s, onebox %s\n",
         native_ok ? "right" : "WRONG", onebox_ok ? "right" : "WRONG", native_sql_ok ? "right" : "WRONG",
         onebox_sql_ok ? "right" : "WRONG");
  return native_ok && onebox_ok && native_sql_ok && onebox_sql_ok ? 0 : 1;
}
