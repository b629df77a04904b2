// Cluster benchmark P6: visibility lag. Three agents on loopback; a writer
// puts a key on node A every millisecond (1k updates/s), a reader on node B
// polls for each key in turn; the lag of a key is the time from A's
// acknowledgement of the put to its first read on B. There is no native
// counterpart (one machine has no lag): the figures are printed against the goal.
//
//   cluster_bench [--seconds S]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {
using Clock = std::chrono::steady_clock;

std::unique_ptr<onebox::testing::AgentProcess> Agent(onebox::testing::TempDir& dir, const std::string& name,
                                                     const std::string& join) {
  std::vector<std::string> args{"--name", name, "--data-dir", dir / (name + "-data"), "--listen", "127.0.0.1:0",
                                "--socket", dir / (name + ".sock"), "--log-level", "warn"};
  if (!join.empty()) {
    args.push_back("--join");
    args.push_back(join);
  }
  return onebox::testing::AgentProcess::WithArgs(args, dir / (name + ".sock"), dir / (name + ".log"));
}
}  // namespace

int main(int argc, char** argv) {
  double seconds = 3;
  if (argc == 3 && std::string(argv[1]) == "--seconds") seconds = std::stod(argv[2]);
  onebox::testing::TempDir dir;
  auto a = Agent(dir, "a", "");
  if (!a->Start()) return 1;
  auto b = Agent(dir, "b", a->address());
  auto c = Agent(dir, "c", a->address());
  if (!b->Start() || !c->Start()) return 1;
  auto store_a = onebox::v1::Store::NewStub(a->channel());
  auto store_b = onebox::v1::Store::NewStub(b->channel());
  // Until B sees A's writes: membership settled, replication flowing.
  for (int i = 0;; ++i) {
    onebox::v1::PutRequest q;
    q.set_key("warmup");
    q.set_value("x");
    onebox::v1::PutResponse r;
    grpc::ClientContext ctx;
    (void)store_a->Put(&ctx, q, &r);
    onebox::v1::GetRequest g;
    g.set_key("warmup");
    onebox::v1::GetResponse gr;
    grpc::ClientContext gctx;
    if (store_b->Get(&gctx, g, &gr).ok() && gr.found()) break;
    if (i > 500) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int total = static_cast<int>(seconds * 1000);
  std::vector<Clock::time_point> acked(total);
  std::vector<std::atomic<bool>> done(total);
  std::thread writer([&] {
    auto start = Clock::now();
    for (int i = 0; i < total; ++i) {
      std::this_thread::sleep_until(start + std::chrono::microseconds(1000) * i);  // 1k updates/s
      onebox::v1::PutRequest q;
      q.set_key(fmt::format("lag/{:08}", i));
      q.set_value("v");
      onebox::v1::PutResponse r;
      grpc::ClientContext ctx;
      if (!store_a->Put(&ctx, q, &r).ok()) std::abort();
      acked[i] = Clock::now();
      done[i] = true;
    }
  });
  std::vector<double> lag_ms;
  for (int i = 0; i < total; ++i) {
    onebox::v1::GetRequest g;
    g.set_key(fmt::format("lag/{:08}", i));
    for (;;) {
      onebox::v1::GetResponse gr;
      grpc::ClientContext ctx;
      if (store_b->Get(&ctx, g, &gr).ok() && gr.found()) break;
    }
    auto seen = Clock::now();
    while (!done[i]) std::this_thread::yield();  // seen before the writer noted its ack: lag ~0
    lag_ms.push_back(std::max(0.0, std::chrono::duration<double, std::milli>(seen - acked[i]).count()));
  }
  writer.join();
  std::sort(lag_ms.begin(), lag_ms.end());
  auto pct = [&](double p) { return lag_ms[std::min(lag_ms.size() - 1, static_cast<size_t>(lag_ms.size() * p))]; };
  printf("cluster_bench: 3 agents on loopback, %d puts on A at 1k/s, each read on B as soon as it is there\n", total);
  printf("%-52s %8s %8s %8s   %s\n", "benchmark", "p50 ms", "p99 ms", "max ms", "goal");
  printf("%-52s %8.2f %8.2f %8.2f   %s\n", "P6 visibility lag A -> B (Store put, acked -> read)", pct(0.5), pct(0.99),
         lag_ms.back(), "p99 <= 50 ms");
  return 0;
}
