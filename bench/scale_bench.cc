// Cluster benchmark P10: many agents on one machine. Starts N agents (default
// 32) on loopback, each joining the first; once every one lists all N alive
// and the cluster has idled a few seconds, reports each agent's resident
// memory; then puts 10k keys on one agent and reports the time from the last
// acknowledgement until every agent's state digest is the same. No native
// counterpart: the figures are printed against the goal.
//
//   scale_bench [--agents N] [--updates U]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "nodeagent/cli/client.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {
using Clock = std::chrono::steady_clock;
using onebox::testing::AgentProcess;


size_t AliveSeen(AgentProcess& a) {
  onebox::v1::ListNodesResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (!onebox::v1::Cluster::NewStub(a.channel())->ListNodes(&ctx, {}, &r).ok()) return 0;
  return static_cast<size_t>(std::count_if(r.nodes().begin(), r.nodes().end(), [](const onebox::v1::Node& n) {
    return n.state() == onebox::v1::NODE_STATE_ALIVE;
  }));
}

std::string Digest(AgentProcess& a) {
  onebox::v1::StatusResponse r;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!onebox::v1::Cluster::NewStub(a.channel())->Status(&ctx, {}, &r).ok()) return "?";
  return r.state_digest();
}
}  // namespace

int main(int argc, char** argv) {
  size_t n = 32;
  int updates = 10000;
  CLI::App app{"Many agents on one machine (P10): their memory, and the time until every agent holds a burst of "
               "updates"};
  app.add_option("--agents", n, "agents in the cluster")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--updates", updates, "keys put on one agent")->check(CLI::Range(1, 100000000))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  onebox::testing::TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> agents;
  for (size_t i = 0; i < n; ++i) {
    std::string name = fmt::format("n{:02}", i);
    agents.push_back(onebox::testing::QuietLoopbackAgent(dir.path(), name, i > 0 ? agents[0]->address() : ""));
    if (!agents.back()->Start(std::chrono::seconds(60))) return 1;
  }
  auto start = Clock::now();
  for (bool all = false; !all;) {
    all = true;
    for (auto& a : agents) all = all && AliveSeen(*a) == n;
    if (Clock::now() - start > std::chrono::seconds(120)) {
      fprintf(stderr, "the %zu agents never all saw each other alive\n", n);
      return 1;
    }
    if (!all) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::this_thread::sleep_for(std::chrono::seconds(5));  // idle
  std::vector<double> rss;
  for (auto& a : agents) rss.push_back(onebox::testing::ProcessMemoryMiB(a->pid(), "VmRSS:"));
  std::sort(rss.begin(), rss.end());

  // 10k puts on the first agent, from 8 client threads.
  std::atomic<int> next{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t)
    writers.emplace_back([&] {
      auto socket = onebox::AgentSocketClient::Connect(agents[0]->socket(), 10);
      if (!socket.ok()) std::abort();
      for (int i; (i = next++) < updates;) {
        onebox::v1::PutRequest q;
        q.set_key(fmt::format("scale/{:06}", i));
        q.set_value("v");
        onebox::v1::PutResponse r;
        if (!socket->Call("/onebox.v1.Store/Put", q, &r).ok()) std::abort();
      }
    });
  for (auto& w : writers) w.join();
  auto acked = Clock::now();
  double converge_s = -1;
  while (Clock::now() - acked < std::chrono::seconds(120)) {
    std::set<std::string> digests;
    for (auto& a : agents) digests.insert(Digest(*a));
    if (digests.size() == 1) {
      converge_s = std::chrono::duration<double>(Clock::now() - acked).count();
      break;
    }
  }
  double write_s = std::chrono::duration<double>(acked - start).count();
  (void)write_s;
  printf("scale_bench: %zu agents on one machine (loopback), %d puts on one of them\n", n, updates);
  printf("%-52s %8s %8s %8s   %s\n", "benchmark", "min", "median", "max", "goal");
  printf("%-52s %8.1f %8.1f %8.1f   %s\n", "P10 idle RSS per agent (MiB)", rss.front(), rss[rss.size() / 2], rss.back(),
         "<= 40 MB each");
  printf("%-52s %8s %8.2f %8s   %s\n", "P10 last ack -> all digests equal (s)", "", converge_s, "", "<= 5 s");
  return converge_s < 0 ? 1 : 0;
}
