// P12, cluster ports side by side (issue 13): a server on node 1 and its
// client on node 2, each node in its own network namespace (as in the
// tests), so the client reaches the server only through onebox: without the
// shim (node 2's agent listens and relays: "relayed") and under it (the
// client's socket is the link to node 1: "direct"); against the same client
// on node 1 (native loopback) and, for bulk, through an `ssh -L` forward on
// loopback (a sshd of the bench's own, as P7's):
//   bulk       iperf3, one connection, --seconds each
//   requests   redis-benchmark GET and SET, 50 clients, --requests each,
//              --rounds rounds of native, relayed and direct in turn: the
//              medians of each round's ratio and added p99 (one slow
//              moment of this shared VM moves one round, not the row)
//   set-up     connect, one byte each way, close, --connects in a row
//              (tests/tools/port_probe.py setup): p50 and p99 added
// iperf3, redis-server and redis-tools are installed with apt-get when
// missing; a row whose program cannot run says why and the rest goes on.
// Every node shares this one machine's CPUs: what the relay costs, not
// what a network gives.
//
//   port_bench [--seconds N] [--requests N] [--rounds N] [--connects N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "bench/peers.h"
#include "onebox/v1/cluster.pb.h"
#include "tests/integration/harness.h"
#include "tests/integration/node_spaces.h"
#include "tests/test_util.h"

namespace {
using onebox::testing::AgentInNode;
using onebox::testing::AgentProcess;
using onebox::testing::NodeProcess;
using onebox::testing::Nodes;
using onebox::testing::RunInNode;
using onebox::testing::RunResult;
using onebox::testing::TempDir;

std::string Probe() { return std::string(ONEBOX_SOURCE_DIR) + "/tests/tools/port_probe.py"; }

struct Cluster {
  Nodes nodes{2};
  TempDir dir;
  std::vector<std::unique_ptr<AgentProcess>> agents;
  std::map<std::string, std::string> Shim(int i) const {
    return {{"LD_PRELOAD", onebox::testing::ShimLib()}, {"ONEBOX_SOCKET", agents[i - 1]->socket()}};
  }
  // Whether node 2's agent lists port (so it listens for it).
  bool Listed(int port) {
    RunResult r = RunInNode(nodes[2], {onebox::testing::OneboxBin(), "--socket", agents[1]->socket(), "ports", "-o", "json"});
    onebox::v1::ListPortsResponse listed;
    if (r.exit_code != 0 || !google::protobuf::util::JsonStringToMessage(r.out, &listed).ok()) return false;
    for (const auto& p : listed.ports())
      if (p.port() == static_cast<uint32_t>(port)) return true;
    return false;
  }
};

bool WaitFor(const std::function<bool()>& ok, int seconds) {
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
       std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(std::chrono::milliseconds(100)))
    if (ok()) return true;
  return false;
}

// iperf3's received bits per second, from its JSON; 0 when it failed.
double Gbits(const RunResult& r) {
  size_t end = r.out.find("\"sum_received\"");
  size_t at = end == std::string::npos ? end : r.out.find("\"bits_per_second\":", end);
  if (at == std::string::npos) return 0;
  return std::strtod(r.out.c_str() + at + 18, nullptr) / 1e9;
}

struct Redis {
  double rps = 0, p99_ms = 0;
};
// redis-benchmark --csv: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",...
std::map<std::string, Redis> RedisRows(const RunResult& r) {
  std::map<std::string, Redis> rows;
  size_t pos = 0;
  while ((pos = r.out.find('\n', pos)) != std::string::npos) {
    size_t start = pos + 1;
    size_t end = r.out.find('\n', start);
    std::string line = r.out.substr(start, end == std::string::npos ? std::string::npos : end - start);
    pos = start;
    std::vector<std::string> f;
    for (size_t i = 0; i < line.size();) {
      size_t q1 = line.find('"', i), q2 = q1 == std::string::npos ? q1 : line.find('"', q1 + 1);
      if (q2 == std::string::npos) break;
      f.push_back(line.substr(q1 + 1, q2 - q1 - 1));
      i = q2 + 1;
    }
    if (f.size() >= 7) rows[f[0]] = {std::strtod(f[1].c_str(), nullptr), std::strtod(f[6].c_str(), nullptr)};
  }
  return rows;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

std::pair<double, double> Setup(const RunResult& r) {
  double p50 = 0, p99 = 0;
  if (std::sscanf(r.out.c_str(), "setup p50 %lf p99 %lf", &p50, &p99) != 2) return {0, 0};
  return {p50, p99};
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 5, requests = 100000, rounds = 3, connects = 2000;
  CLI::App app{"Cluster ports (P12): a server on one node and its client on another, beside loopback and ssh -L"};
  app.add_option("--seconds", seconds, "seconds of each bulk transfer")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--requests", requests, "requests of each redis-benchmark run")
      ->check(CLI::Range(1, 100000000))
      ->capture_default_str();
  app.add_option("--rounds", rounds, "rounds of the requests rows")->check(CLI::Range(1, 100))->capture_default_str();
  app.add_option("--connects", connects, "connections of the set-up row")
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  Cluster c;
  if (!c.nodes.net().ok() || !c.nodes.Made()) {
    fprintf(stderr, "port_bench: cannot make network namespaces here (root and ip(8) needed): %s\n",
            c.nodes.net().error().c_str());
    return 1;
  }
  for (int i = 1; i <= 2; ++i) {
    c.agents.push_back(AgentInNode(c.nodes, i, fmt::format("n{}", i), c.dir.path()));
    if (!c.agents.back()->Start()) {
      fprintf(stderr, "port_bench: agent n%d did not start:\n%s\n", i, c.agents.back()->log().c_str());
      return 1;
    }
  }
  printf("P12 cluster ports: server on node 1, client on node 1 (native loopback) or node 2 (through onebox);\n"
         "each node in its own network namespace, all on this one machine\n\n");

  // Bulk: iperf3.
  std::string why;
  if (onebox::bench::InstallIfMissing("/usr/bin/iperf3", "iperf3", &why)) {
    NodeProcess server(c.nodes[1], {"iperf3", "-s", "-p", "15201", "-B", "127.0.0.1"}, c.Shim(1),
                       c.dir / "iperf3.log");
    if (!WaitFor([&] { return c.Listed(15201); }, 20)) {
      printf("bulk: iperf3's port never reached the table: %s\n", onebox::bench::Tail(c.dir / "iperf3.log").c_str());
    } else {
      std::vector<std::string> client{"iperf3", "-c", "127.0.0.1", "-p", "15201", "-t", std::to_string(seconds), "-J"};
      // iperf3's server takes a moment between two tests to listen again.
      auto iperf = [&](const std::function<RunResult()>& run) {
        RunResult r;
        for (int attempt = 0; attempt < 3 && Gbits(r) == 0; ++attempt) {
          std::this_thread::sleep_for(std::chrono::seconds(1));
          r = run();
        }
        if (Gbits(r) == 0) printf("iperf3 failed: %s%s\n", r.out.substr(0, 1000).c_str(), r.err.c_str());
        return Gbits(r);
      };
      double native = iperf([&] { return RunInNode(c.nodes[1], client); });
      double relayed = iperf([&] { return RunInNode(c.nodes[2], client); });
      double direct = iperf([&] { return RunInNode(c.nodes[2], client, c.Shim(2)); });
      double ssh = 0;
      onebox::bench::LoopbackSshd sshd(c.dir.path());
      std::string ssh_why;
      if (sshd.Start(&ssh_why)) {
        const int target = onebox::bench::FreeLoopbackPort(), forward = onebox::bench::FreeLoopbackPort();
        pid_t plain = onebox::bench::StartDaemon({"iperf3", "-s", "-p", std::to_string(target), "-B", "127.0.0.1"},
                                                 c.dir / "iperf3-plain.log");
        std::vector<std::string> tunnel = sshd.Ssh({});
        tunnel.insert(tunnel.end() - 1, {"-N", "-L", fmt::format("{}:127.0.0.1:{}", forward, target)});
        pid_t ssh_pid = onebox::bench::StartDaemon(tunnel, c.dir / "ssh-L.log");
        std::this_thread::sleep_for(std::chrono::seconds(2));
        ssh = iperf([&] {
          return onebox::testing::RunCommand(
              {"iperf3", "-c", "127.0.0.1", "-p", std::to_string(forward), "-t", std::to_string(seconds), "-J"});
        });
        onebox::bench::StopDaemon(&ssh_pid);
        onebox::bench::StopDaemon(&plain);
      } else {
        printf("ssh -L: %s\n", ssh_why.c_str());
      }
      printf("bulk, one connection, %d s (iperf3)    native %.2f Gbit/s   ssh -L %.2f Gbit/s\n", seconds, native, ssh);
      for (auto [way, gbits] : {std::pair{"relayed", relayed}, std::pair{"direct", direct}})
        printf("  onebox %-8s %.2f Gbit/s (%.2fx native, %.1fx ssh -L)\n", way, gbits, native > 0 ? gbits / native : 0,
               ssh > 0 ? gbits / ssh : 0);
    }
  } else {
    printf("bulk: %s\n", why.c_str());
  }

  // Requests: redis-benchmark.
  if (onebox::bench::InstallIfMissing("/usr/bin/redis-server", "redis-server", &why) &&
      onebox::bench::InstallIfMissing("/usr/bin/redis-benchmark", "redis-tools", &why)) {
    NodeProcess server(c.nodes[1],
                       {"redis-server", "--port", "16379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--daemonize", "no"},
                       c.Shim(1), c.dir / "redis.log");
    if (!WaitFor([&] { return c.Listed(16379); }, 20)) {
      printf("requests: redis's port never reached the table: %s\n", onebox::bench::Tail(c.dir / "redis.log").c_str());
    } else {
      std::vector<std::string> bench{"redis-benchmark", "-h", "127.0.0.1", "-p", "16379", "-c", "50", "-n",
                                     std::to_string(requests), "-t", "get,set", "--csv"};
      // Per test and way, each round's ratio to that round's native run and its added p99.
      std::map<std::string, std::vector<double>> ratios, added_p99, native_rps, native_p99;
      for (int round = 1; round <= rounds; ++round) {
        auto native = RedisRows(RunInNode(c.nodes[1], bench));
        printf("redis round %d, native ", round);
        for (const char* test : {"SET", "GET"}) {
          native_rps[test].push_back(native[test].rps);
          native_p99[test].push_back(native[test].p99_ms);
          printf("  %s %.0f/s, p99 %.3f ms", test, native[test].rps, native[test].p99_ms);
        }
        printf("\n");
        for (bool shim : {false, true}) {
          const char* way = shim ? "direct" : "relayed";
          const double cpu1 = onebox::testing::CpuSeconds(c.agents[0]->pid()),
                       cpu2 = onebox::testing::CpuSeconds(c.agents[1]->pid());
          RunResult through = shim ? RunInNode(c.nodes[2], bench, c.Shim(2)) : RunInNode(c.nodes[2], bench);
          auto onebox = RedisRows(through);
          printf("redis round %d, %-7s", round, way);
          for (const char* test : {"SET", "GET"}) {
            Redis n = native[test], o = onebox[test];
            const std::string key = fmt::format("{} {}", test, way);
            if (n.rps == 0 || o.rps == 0) {  // a run that failed says so, and stays out of the medians
              printf("  %s: no figures (%s)", test, n.rps == 0 ? "native failed" : "this run failed");
              continue;
            }
            ratios[key].push_back(n.rps > 0 ? o.rps / n.rps : 0);
            added_p99[key].push_back(o.p99_ms - n.p99_ms);
            printf("  %s %.0f/s %.2fx, p99 %.3f ms %+.3f", test, o.rps, ratios[key].back(), o.p99_ms,
                   added_p99[key].back());
          }
          printf("   agent CPU: server's node %.2f s, client's node %.2f s\n",
                 onebox::testing::CpuSeconds(c.agents[0]->pid()) - cpu1,
                 onebox::testing::CpuSeconds(c.agents[1]->pid()) - cpu2);
        }
      }
      for (const char* test : {"SET", "GET"}) {
        printf("redis %s, 50 clients, %d requests, median of %d rounds   native %.0f/s p99 %.3f ms\n", test, requests,
               rounds, Median(native_rps[test]), Median(native_p99[test]));
        for (const char* way : {"relayed", "direct"}) {
          const std::string key = fmt::format("{} {}", test, way);
          printf("  onebox %-8s %.2fx native requests/s, p99 %+.3f ms\n", way, Median(ratios[key]),
                 Median(added_p99[key]));
        }
      }
    }
  } else {
    printf("requests: %s\n", why.c_str());
  }

  // Set-up: connect, a byte each way, close.
  {
    NodeProcess server(c.nodes[1], {"python3", Probe(), "echo-server", "15202"}, c.Shim(1), c.dir / "echo.log");
    if (WaitFor([&] { return c.Listed(15202); }, 20)) {
      std::vector<std::string> probe{"python3", Probe(), "setup", "15202", std::to_string(connects)};
      auto [n50, n99] = Setup(RunInNode(c.nodes[1], probe));
      for (bool shim : {false, true}) {
        auto [o50, o99] = Setup(shim ? RunInNode(c.nodes[2], probe, c.Shim(2)) : RunInNode(c.nodes[2], probe));
        printf("set-up, %d connects in a row        native p50 %.0f us p99 %.0f us   onebox %s p50 %.0f us p99 %.0f us   "
               "(added: p50 %+.0f us, p99 %+.0f us)\n",
               connects, n50, n99, shim ? "direct" : "relayed", o50, o99, o50 - n50, o99 - n99);
      }
    } else {
      printf("set-up: the echo server's port never reached the table\n");
    }
  }
  return 0;
}
