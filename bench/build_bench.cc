// P11, placement speed-up (issue 12): make -jJ of GNU libiberty (66 C
// files, from Debian's binutils-source; installed with apt-get when
// missing), configured once per column and then built --rounds times from
// no objects, the columns interleaved round by round. Each "node" is a
// cgroup with --cpu-quota CPUs (tests/integration/node_quota.h; 0.6 by
// default, so that three nodes share this machine's two cores fairly), and
// everything a node runs (its agent, what the agent starts, its distccd, and
// on node A make itself) runs inside it:
//   one node (native)   a plain directory, make in node A
//   onebox 1 node       the tree in /cluster, node A's agent, nothing placed
//   onebox N placed     the tree in /cluster, N agents on loopback, each in
//                       its node, ONEBOX_PLACE=auto
//   distcc N            a plain directory, CC="distcc gcc", one distccd per
//                       node on loopback (J/N jobs each); preprocessing
//                       stays on node A, as distcc does it
// Printed: median seconds, the speed-up over one node (native), each node's
// share of the CPU the build used, the CPU of each agent, and the compiles
// each node ran. With --cpu-quota 0 nothing is confined (every column has the
// whole machine: the ratios are then what distributing costs, not what it
// gains).
//
//   build_bench [--rounds N] [--nodes N] [--cpu-quota CPUS] [--jobs J] [--jobs-per-cpu X]
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "bench/peers.h"
#include "onebox/v1/cluster.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/node_quota.h"
#include "tests/test_util.h"

namespace {
using Clock = std::chrono::steady_clock;
using onebox::testing::NodeQuota;
using onebox::testing::AgentProcess;
using onebox::testing::RunResult;
using onebox::testing::TempDir;

constexpr const char* kClean = "find . -name '*.o' -delete && rm -f libiberty.a";

struct Column {
  std::string name;
  std::string root;  // where the tree goes
  std::vector<std::unique_ptr<AgentProcess>> nodes;  // empty: plainly
  std::map<std::string, std::string> env;            // for the build
  std::string make_args;
  std::vector<double> seconds;
  std::vector<double> cpu;        // CPU seconds used in each node over all rounds
  std::vector<double> agent_cpu;  // of which each node's agent used
};

// cmd in a shell: under node A's shim for a onebox column, and, when
// confined is given, inside that node's cgroup.
RunResult Run(Column& col, const std::string& cmd, const NodeQuota* confined = nullptr,
              const std::map<std::string, std::string>& extra = {}) {
  const std::string enter = confined != nullptr ? confined->EnterCommand() : "";
  if (col.nodes.empty()) {
    std::map<std::string, std::string> env = col.env;
    env.insert(extra.begin(), extra.end());
    return onebox::testing::RunCommand({"bash", "-c", enter + cmd}, env);
  }
  std::string exports;
  for (const auto& [k, v] : extra) exports += fmt::format("export {}='{}'; ", k, v);
  return onebox::testing::Shell(*col.nodes[0], enter + exports + cmd);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// distccd's jobs done, by its log ("COMPILE_OK" per job at --log-level info).
int DistccJobs(const std::string& log) {
  std::ifstream in(log);
  int jobs = 0;
  for (std::string line; std::getline(in, line);) jobs += line.find("COMPILE_OK") != std::string::npos;
  return jobs;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3;
  size_t nodes = 3;
  double quota = 0.6;
  int jobs = 0;  // 0: 3 per node
  double jobs_per_cpu = 4;  // at 0.6 CPU: 3 jobs a node (placement rounds up)
  CLI::App app{"make -j of a real C library: native, onebox with and without placement, and distcc, side by side"};
  app.add_option("--rounds", rounds, "builds of each column (the median is printed)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--nodes", nodes, "agents in the cluster")->check(CLI::Range(2, 16))->capture_default_str();
  app.add_option("--cpu-quota", quota, "each node's CPUs, as a cgroup quota (0: none)")
      ->check(CLI::Range(0.0, 64.0))
      ->capture_default_str();
  app.add_option("--jobs", jobs, "make's -j (0: three per node)")->check(CLI::Range(0, 256))->capture_default_str();
  app.add_option("--jobs-per-cpu", jobs_per_cpu, "the agents' placement limit, jobs per CPU")
      ->check(CLI::Range(0.1, 64.0))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (jobs == 0) jobs = static_cast<int>(3 * nodes);
  if (rounds < 1 || nodes < 2 || quota < 0 || jobs < 1 || jobs_per_cpu <= 0) {
    fprintf(stderr, "build_bench: --rounds is at least 1, --nodes at least 2, --cpu-quota at least 0 (0: none), "
                    "--jobs and --jobs-per-cpu more than 0\n");
    return 2;
  }
  std::string why;
  if (onebox::testing::BinutilsTarball().empty() && !onebox::bench::InstallIfMissing("/usr/src/binutils", "binutils-source", &why)) {
    fprintf(stderr, "build_bench: %s\n", why.c_str());
    return 1;
  }
  const std::string prepare = onebox::testing::PrepareLibiberty(onebox::testing::BinutilsTarball());
  TempDir dir;

  // The nodes' cgroups (none with --cpu-quota 0).
  std::vector<std::unique_ptr<NodeQuota>> quotas;
  if (quota > 0) {
    for (size_t i = 0; i < nodes; ++i) {
      quotas.push_back(std::make_unique<NodeQuota>(fmt::format("{}-n{}", getpid(), i), quota));
      if (!quotas.back()->Make(&why)) {
        fprintf(stderr, "build_bench: %s (run as root, or with --cpu-quota 0)\n", why.c_str());
        return 1;
      }
    }
  }
  auto node_quota = [&](size_t i) -> const NodeQuota* { return quotas.empty() ? nullptr : quotas[i].get(); };
  auto wrap = [&](size_t i, std::vector<std::string> argv) {
    return quotas.empty() ? argv : quotas[i]->Wrap(argv);
  };

  const std::string make_jobs = fmt::format("-j{}", jobs);
  std::vector<Column> columns;
  columns.emplace_back();
  columns.back().name = "one node (native)";
  columns.back().root = dir / "native";
  columns.back().make_args = make_jobs;
  for (size_t n : {size_t{1}, nodes}) {
    Column col;
    col.name = n == 1 ? "onebox 1 node" : fmt::format("onebox {} placed", n);
    col.root = fmt::format("/cluster/b{}", n);
    col.make_args = make_jobs;
    for (size_t i = 0; i < n; ++i) {
      col.nodes.push_back(onebox::testing::QuietLoopbackAgent(
          dir.path(), fmt::format("n{}-{}", n, i), i == 0 ? "" : col.nodes[0]->address(),
          {"--place-jobs-per-cpu", fmt::format("{}", jobs_per_cpu)}));
      if (!quotas.empty()) col.nodes.back()->set_command_prefix(wrap(i, {}));
      if (!col.nodes.back()->Start()) return 1;
    }
    std::vector<AgentProcess*> agents;
    for (auto& a : col.nodes) agents.push_back(a.get());
    if (!onebox::testing::WaitForPagesCounting(agents, static_cast<int64_t>(n - 1))) return 1;
    if (n > 1) col.env["ONEBOX_PLACE"] = "auto";
    columns.push_back(std::move(col));
  }
  // distcc: one distccd per node on loopback; preprocessing stays on node A, as distcc does it.
  struct Daemons {  // stopped on every way out, before the cgroups go
    std::vector<pid_t> pids;
    ~Daemons() {
      for (pid_t& pid : pids) onebox::bench::StopDaemon(&pid);
    }
  } distccds;
  std::vector<std::string> distcc_logs;
  const int distcc_jobs = std::max(1, jobs / static_cast<int>(nodes));
  if (onebox::bench::InstallIfMissing("/usr/bin/distccd", "distcc", &why)) {
    std::string hosts;
    chmod(dir.path().c_str(), 0711);  // distccd opens its log as nobody
    for (size_t i = 0; i < nodes; ++i) {
      int port = onebox::bench::FreeLoopbackPort();
      distcc_logs.push_back(dir / fmt::format("distccd{}.log", i));
      std::ofstream(distcc_logs.back()).flush();
      chmod(distcc_logs.back().c_str(), 0666);
      pid_t pid = onebox::bench::StartDaemon(
          wrap(i, {"/usr/bin/distccd", "--no-detach", "--daemon", "--listen", "127.0.0.1", "--port",
                   std::to_string(port), "--allow", "127.0.0.1", "--jobs", std::to_string(distcc_jobs), "--user",
                   "nobody", "--log-level", "info", "--log-file", distcc_logs.back()}),
          dir / fmt::format("distccd{}.out", i));
      distccds.pids.push_back(pid);
      hosts += fmt::format("127.0.0.1:{}/{} ", port, distcc_jobs);
    }
    std::filesystem::create_directories(dir / "distcc-state");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    Column col;
    col.name = fmt::format("distcc {}", nodes);
    col.root = dir / "distcc";
    col.make_args = make_jobs + " CC='distcc gcc'";
    col.env = {{"DISTCC_HOSTS", hosts}, {"DISTCC_FALLBACK", "0"}, {"DISTCC_DIR", dir / "distcc-state"}};
    columns.push_back(std::move(col));
  } else {
    printf("build_bench: no distcc column: %s\n", why.c_str());
  }

  for (Column& col : columns) {
    col.cpu.assign(nodes, 0);
    col.agent_cpu.assign(col.nodes.size(), 0);
    if (Run(col, fmt::format("mkdir -p {0} && cd {0} && {1}", col.root, prepare)).exit_code != 0) {
      fprintf(stderr, "build_bench: %s: cannot prepare libiberty in %s\n", col.name.c_str(), col.root.c_str());
      return 1;
    }
  }
  int compiles = 0;  // in one build
  for (int r = 0; r < rounds; ++r) {
    for (Column& col : columns) {
      const std::string lib = col.root + "/libiberty";
      if (Run(col, fmt::format("cd {} && {}", lib, kClean)).exit_code != 0) return 1;
      std::vector<double> cpu_before, agent_before;
      for (const auto& q : quotas) cpu_before.push_back(q->CpuSeconds());
      for (const auto& a : col.nodes) agent_before.push_back(onebox::testing::CpuSeconds(a->pid()));
      auto start = Clock::now();
      RunResult built = Run(col, fmt::format("cd {} && make {} >/dev/null", lib, col.make_args), node_quota(0), col.env);
      col.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
      for (size_t i = 0; i < quotas.size(); ++i) col.cpu[i] += quotas[i]->CpuSeconds() - cpu_before[i];
      for (size_t i = 0; i < col.nodes.size(); ++i)
        col.agent_cpu[i] += onebox::testing::CpuSeconds(col.nodes[i]->pid()) - agent_before[i];
      if (built.exit_code != 0) {
        fprintf(stderr, "build_bench: %s: the build failed: %s\n", col.name.c_str(), built.err.c_str());
        return 1;
      }
      if (r == 0 && &col == &columns[0])  // a compile per object
        compiles = std::stoi(Run(col, fmt::format("find {} -name '*.o' | wc -l", lib)).out);
    }
  }

  const double one_node = Median(columns[0].seconds);
  if (quotas.empty())
    printf("make %s of GNU libiberty (66 C files), %d rounds, nothing confined (every column has the whole "
           "machine, %u cores)\n",
           make_jobs.c_str(), rounds, std::thread::hardware_concurrency());
  else
    printf("make %s of GNU libiberty (66 C files), %d rounds, each node a cgroup of %.2f CPU (this machine has %u "
           "cores); agents at --place-jobs-per-cpu %g, distccd --jobs %d\n",
           make_jobs.c_str(), rounds, quota, std::thread::hardware_concurrency(), jobs_per_cpu, distcc_jobs);
  printf("  %-20s %9s %9s %9s  %s\n", "column", "median s", "speed-up", "rounds", "CPU by node (share)");
  for (const Column& col : columns) {
    const double median = Median(col.seconds);
    std::string each_round, shares;
    for (double s : col.seconds) each_round += fmt::format("{}{:.2f}", each_round.empty() ? "" : " ", s);
    double total = 0;
    for (double c : col.cpu) total += c;
    for (size_t i = 0; i < col.cpu.size() && total > 0; ++i)
      shares += fmt::format(" {}: {:.1f} s ({:.0f}%)", char('A' + i), col.cpu[i], 100 * col.cpu[i] / total);
    printf("  %-20s %9.2f %8.2fx  [%s] %s\n", col.name.c_str(), median, one_node / median, each_round.c_str(),
           shares.c_str());
  }
  // The compiles each node ran, over all rounds: onebox's by its agents' counts (node A ran those it
  // did not place out), distcc's by its distccds' logs.
  const int all = compiles * rounds;
  auto share = [&](size_t i, int n) { return fmt::format(" {}: {} ({:.0f}%)", char('A' + i), n, 100.0 * n / all); };
  for (const Column& col : columns) {
    if (col.nodes.empty()) continue;
    std::string each;
    for (size_t i = 0; i < col.agent_cpu.size(); ++i) each += fmt::format(" {}: {:.1f} s;", char('A' + i), col.agent_cpu[i]);
    printf("  %s: CPU of each node's agent, over all rounds:%s\n", col.name.c_str(), each.c_str());
  }
  for (const Column& col : columns) {
    if (col.nodes.size() < 2) continue;
    std::string counts;
    for (size_t i = 0; i < col.nodes.size(); ++i) {
      RunResult r = onebox::testing::RunCommand(
          {onebox::testing::OneboxBin(), "--socket", col.nodes[i]->socket(), "status", "-o", "json"});
      onebox::v1::StatusResponse st;
      if (r.exit_code != 0 || !google::protobuf::util::JsonStringToMessage(r.out, &st).ok()) continue;
      counts += share(i, i == 0 ? all - static_cast<int>(st.jobs_placed_out()) : static_cast<int>(st.jobs_taken_in()));
    }
    printf("  %s: compiles run by each node, of %d:%s\n", col.name.c_str(), all, counts.c_str());
  }
  if (!distcc_logs.empty()) {
    std::string counts;
    for (size_t i = 0; i < distcc_logs.size(); ++i) counts += share(i, DistccJobs(distcc_logs[i]));
    printf("  distcc %zu: compiles run by each node's distccd, of %d:%s\n", nodes, all, counts.c_str());
  }
  for (Column& col : columns)
    for (auto& a : col.nodes) a->Stop();
  return 0;
}
