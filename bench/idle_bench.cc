// What an idle cluster costs: agents on loopback that have joined and have
// nothing to do, their CPU over a window (user + system, all threads, as a
// share of one core), beside a one-member etcd idling in the same window (the
// coordination store a user would otherwise run on every machine). Then
// the same for the first agent while a program under its shim holds a
// connection and idles too (the symlink guard's heartbeat runs only then).
// CPU is read from each process's CPU clock (CpuSeconds): in ns, where
// /proc/PID/stat's 10 ms ticks would be a sixth of the 0.2% goal over 30 s.
//
//   idle_bench [--agents N] [--seconds S]     (default 3 agents, 30 s)
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iterator>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/peers.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {
using onebox::testing::AgentProcess;
using onebox::testing::CpuSeconds;

// Each pid's CPU over the same `seconds`, as % of one core; nothing if one
// of them ended meanwhile (its clock stopped there: a share too low, a pass
// it did not earn).
std::optional<std::vector<double>> CpuShares(const std::vector<pid_t>& pids, int seconds) {
  std::vector<double> before;
  for (pid_t p : pids) before.push_back(CpuSeconds(p));
  auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> out;
  for (size_t i = 0; i < pids.size(); ++i) {
    out.push_back(100 * (CpuSeconds(pids[i]) - before[i]) / wall);
    // (After the read: one that ends in between is caught.)
    if (onebox::testing::ProcessEnded(pids[i])) {
      fprintf(stderr, "idle_bench: process %d ended while it was measured\n", pids[i]);
      return std::nullopt;
    }
  }
  return out;
}

// Why a measurement failed: the log of each agent that ended.
int Failed(const std::vector<std::unique_ptr<AgentProcess>>& agents) {
  for (const auto& a : agents) {
    if (!onebox::testing::ProcessEnded(a->pid())) continue;
    const std::string log = a->log();
    fprintf(stderr, "idle_bench: agent %d ended; its log ends:\n%s\n", a->pid(),
            log.substr(log.size() > 2000 ? log.size() - 2000 : 0).c_str());
  }
  return 1;
}

void Row(const std::string& name, std::vector<double> v, const std::string& goal) {
  std::sort(v.begin(), v.end());
  printf("%-58s %7.3f %7.3f %7.3f   %s\n", name.c_str(), v.front(), v[v.size() / 2], v.back(), goal.c_str());
}

size_t Threads(pid_t pid) {
  std::error_code ec;
  auto tasks = std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec);
  return ec ? 0 : static_cast<size_t>(std::distance(tasks, std::filesystem::directory_iterator()));
}
}  // namespace

int main(int argc, char** argv) {
  size_t n = 3;
  int seconds = 30;
  CLI::App app{"What an idle cluster costs, beside an idle etcd"};
  app.add_option("--agents", n, "agents in the cluster")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--seconds", seconds, "seconds measured")->check(CLI::Range(1, 86400))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  onebox::testing::TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> agents;
  std::vector<AgentProcess*> all;
  for (size_t i = 0; i < n; ++i) {
    agents.push_back(
        onebox::testing::QuietLoopbackAgent(dir.path(), fmt::format("n{}", i), i > 0 ? agents[0]->address() : ""));
    if (!agents.back()->Start(std::chrono::seconds(60))) return 1;
    all.push_back(agents.back().get());
  }
  if (!onebox::testing::WaitForPagesCounting(all, static_cast<int64_t>(n) - 1)) {
    fprintf(stderr, "idle_bench: the agents never all saw each other alive\n");
    return 1;
  }
  onebox::bench::EtcdMember etcd(dir.path());
  std::string etcd_missing;
  bool with_etcd = etcd.Start(&etcd_missing);
  std::this_thread::sleep_for(std::chrono::seconds(5));  // joins and first rounds done

  std::vector<pid_t> pids;
  for (auto& a : agents) pids.push_back(a->pid());
  if (with_etcd) pids.push_back(etcd.pid());
  std::optional<std::vector<double>> shares = CpuShares(pids, seconds);
  if (!shares) return Failed(agents);
  std::vector<double> agent_shares(shares->begin(), shares->begin() + static_cast<long>(n));

  // One program under the first agent's shim, connected (it listed the
  // cluster root) and then idle.
  std::string said = dir / "program.log";
  pid_t program = onebox::bench::StartDaemon(
      {"python3", "-c", "import os, time; os.listdir('/cluster'); print('connected', flush=True); time.sleep(100000)"},
      said, {{"LD_PRELOAD", onebox::testing::ShimLib()}, {"ONEBOX_SOCKET", agents[0]->socket()}});
  bool up = program > 0 && onebox::testing::WaitUntil(
                               [&] { return onebox::bench::Tail(said).find("connected") != std::string::npos; },
                               std::chrono::seconds(20), "the program under the shim has connected");
  std::optional<std::vector<double>> connected;
  if (up) {
    std::this_thread::sleep_for(std::chrono::seconds(2));
    connected = CpuShares({agents[0]->pid()}, seconds);
  }
  if (program > 0) {
    kill(program, SIGKILL);
    onebox::bench::Reap(program);
  }
  if (up && !connected) return Failed(agents);

  printf("idle_bench: %zu agents on one machine (loopback), joined and idle; CPU over %d s, %% of one core\n", n,
         seconds);
  printf("%-58s %7s %7s %7s   %s\n", "benchmark", "min", "median", "max", "goal");
  Row(fmt::format("idle agent ({} threads)", Threads(agents[0]->pid())), agent_shares, "<= 0.2 % each");
  if (with_etcd)
    Row(fmt::format("etcd {} one member, idle (same window)", etcd.version()), {shares->back()}, "(what a user would run)");
  else
    printf("%-58s %s\n", "etcd one member, idle", etcd_missing.c_str());
  if (up)
    Row("agent A with one idle program under its shim connected", *connected, "(symlink heartbeat every 10 ms)");
  else
    printf("%-58s did not start: %s\n", "agent A with one idle program under its shim",
           onebox::bench::Tail(said, 300).c_str());
  return 0;
}
