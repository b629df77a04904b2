// Store benchmark: puts and gets of small values, native (raw RocksDB in this
// process) against onebox (a real agent, level ONE: puts over its Unix
// socket, where they act as their caller, gets over gRPC), at several
// client concurrencies. One run prints both side by side with their ratio.
// Then the store's RPC path against etcd (Debian's etcd-server, one member
// on loopback, over its gRPC API; installed with apt-get when missing):
// synced puts (etcd fsyncs its raft log before it answers; onebox's Put with
// sync), gets (etcd's default, linearizable, and serializable; onebox's Get)
// at 1 and 16 clients, over the same keys and value size; onebox's unsynced
// puts beside them.
//
//   store_bench [--seconds S] [--threads 1,4,16] [--value-bytes N] [--keys N]
#include <grpcpp/grpcpp.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/peers.h"
#include "etcd_kv.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "nodeagent/cli/client.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Figures {
  double ops_per_sec = 0;
  double p50_us = 0;
  double p99_us = 0;
  uint64_t errors = 0;
};

// Runs op(thread, i) on `threads` threads for `seconds`; op returns false on error.
Figures Measure(int threads, double seconds, const std::function<bool(int, uint64_t)>& op) {
  std::vector<std::vector<float>> lat(threads);
  std::atomic<uint64_t> errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> pool;
  auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      lat[t].reserve(1 << 16);
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        auto a = Clock::now();
        if (!op(t, i)) ++errors;
        lat[t].push_back(std::chrono::duration<float, std::micro>(Clock::now() - a).count());
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& th : pool) th.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<float> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  Figures f;
  f.ops_per_sec = all.size() / elapsed;
  f.p50_us = all.empty() ? 0 : all[all.size() / 2];
  f.p99_us = all.empty() ? 0 : all[std::min(all.size() - 1, all.size() * 99 / 100)];
  f.errors = errors;
  return f;
}

std::string Key(uint64_t n) { return fmt::format("bench/{:010}", n); }
// The key client t uses for its i-th operation: spread over `keys`.
std::string KeyFor(int t, uint64_t i, uint64_t keys) { return Key((i * 7919 + t) % keys); }

// onebox's put on its socket (level ONE) and its get on gRPC, as both tables call them.
bool OneboxPut(onebox::AgentSocketClient& socket, const std::string& key, const std::string& value, bool sync) {
  onebox::v1::PutRequest q;
  q.set_key(key);
  q.set_value(value);
  q.set_level(onebox::v1::WRITE_LEVEL_ONE);
  q.set_sync(sync);
  onebox::v1::PutResponse r;
  return socket.Call("/onebox.v1.Store/Put", q, &r).ok();
}
bool OneboxGet(onebox::v1::Store::Stub& stub, const std::string& key) {
  onebox::v1::GetRequest q;
  q.set_key(key);
  onebox::v1::GetResponse r;
  grpc::ClientContext ctx;
  return stub.Get(&ctx, q, &r).ok() && r.found();
}

void EtcdRow(const char* what, int clients, const Figures* etcd, const Figures& o) {
  if (etcd == nullptr) {
    printf("%-22s %7d | %12s %9s %9s | %12.0f %9.1f %9.1f |\n", what, clients, "-", "-", "-", o.ops_per_sec, o.p50_us,
           o.p99_us);
    return;
  }
  printf("%-22s %7d | %12.0f %9.1f %9.1f | %12.0f %9.1f %9.1f | %6.2fx\n", what, clients, etcd->ops_per_sec,
         etcd->p50_us, etcd->p99_us, o.ops_per_sec, o.p50_us, o.p99_us, o.ops_per_sec / etcd->ops_per_sec);
}

// The second table (see the top). Returns the failed operations.
int AgainstEtcd(const std::string& dir, std::vector<std::unique_ptr<onebox::AgentSocketClient>>& sockets,
                std::vector<std::unique_ptr<onebox::v1::Store::Stub>>& stubs, const std::string& value, uint64_t keys,
                double seconds) {
  onebox::bench::EtcdMember etcd(dir);
  std::string why;
  if (!etcd.Start(&why)) {
    printf("\nstore_bench: no etcd to compare with: %s\n", why.c_str());
    return 0;
  }
  const int most = 16;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> kv;
  for (int t = 0; t < most; ++t) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection per client, as for onebox
    kv.push_back(etcdserverpb::KV::NewStub(
        grpc::CreateCustomChannel(etcd.endpoint(), grpc::InsecureChannelCredentials(), args)));
  }
  auto etcd_put = [&](int t, uint64_t i) {
    etcdserverpb::PutRequest q;
    q.set_key(KeyFor(t, i, keys));
    q.set_value(value);
    etcdserverpb::PutResponse r;
    grpc::ClientContext ctx;
    return kv[t]->Put(&ctx, q, &r).ok();
  };
  auto etcd_get = [&](bool serializable) {
    return [&, serializable](int t, uint64_t i) {
      etcdserverpb::RangeRequest q;
      q.set_key(KeyFor(t, i, keys));
      q.set_serializable(serializable);
      etcdserverpb::RangeResponse r;
      grpc::ClientContext ctx;
      return kv[t]->Range(&ctx, q, &r).ok() && r.kvs_size() == 1;
    };
  };
  auto onebox_put = [&](bool sync) {
    return [&, sync](int t, uint64_t i) { return OneboxPut(*sockets[t], KeyFor(t, i, keys), value, sync); };
  };
  auto onebox_get = [&](int t, uint64_t i) { return OneboxGet(*stubs[t], KeyFor(t, i, keys)); };
  // Every key in etcd before the gets (onebox has them from the first table).
  std::atomic<uint64_t> next{0};
  std::vector<std::thread> loaders;
  std::atomic<int> load_errors{0};
  for (int t = 0; t < most; ++t)
    loaders.emplace_back([&, t] {
      for (uint64_t k; (k = next++) < keys;) {
        etcdserverpb::PutRequest q;
        q.set_key(Key(k));
        q.set_value(value);
        etcdserverpb::PutResponse r;
        grpc::ClientContext ctx;
        if (!kv[t]->Put(&ctx, q, &r).ok()) ++load_errors;
      }
    });
  for (auto& l : loaders) l.join();
  if (load_errors) {
    printf("\nstore_bench: etcd refused %d of the first puts\n", load_errors.load());
    return load_errors;
  }

  printf("\nstore_bench: the store's RPC path against etcd %s (one member on loopback, gRPC), %zu-byte values over "
         "%llu keys, %.1f s per cell; onebox's puts on its socket, its gets on gRPC\n",
         etcd.version().c_str(), value.size(), static_cast<unsigned long long>(keys), seconds);
  printf("%-22s %7s | %12s %9s %9s | %12s %9s %9s | %7s\n", "op", "clients", "etcd op/s", "p50 us", "p99 us",
         "onebox op/s", "p50 us", "p99 us", "ratio");
  int failures = 0;
  using Op = std::function<bool(int, uint64_t)>;
  for (int clients : {1, most}) {
    Figures e = Measure(clients, seconds, Op(etcd_put));
    Figures o = Measure(clients, seconds, Op(onebox_put(true)));
    EtcdRow("put, synced", clients, &e, o);
    failures += e.errors + o.errors;
  }
  for (int clients : {1, most}) {
    Figures e = Measure(clients, seconds, Op(etcd_get(false)));
    Figures o = Measure(clients, seconds, Op(onebox_get));
    EtcdRow("get (etcd linearizable)", clients, &e, o);
    Figures es = Measure(clients, seconds, Op(etcd_get(true)));
    EtcdRow("get (etcd serializable)", clients, &es, o);
    failures += e.errors + o.errors + es.errors;
  }
  for (int clients : {1, most}) {
    Figures o = Measure(clients, seconds, Op(onebox_put(false)));
    EtcdRow("put, unsynced (onebox)", clients, nullptr, o);
    failures += o.errors;
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  std::vector<int> thread_counts{1, 4, 16};
  size_t value_bytes = 100;
  uint64_t keys = 10000;
  CLI::App app{"Puts and gets of small values: RocksDB in this process, one agent, and etcd, side by side"};
  app.add_option("--seconds", seconds, "seconds of each row")->check(CLI::Range(0.1, 3600.0))->capture_default_str();
  app.add_option("--threads", thread_counts, "client concurrencies")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--value-bytes", value_bytes, "bytes of each value")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  app.add_option("--keys", keys, "distinct keys")->check(CLI::Range(1, 100000000))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const std::string value(value_bytes, 'x');
  onebox::testing::TempDir dir;

  // Native: RocksDB in this process, default options, WAL on, no sync.
  rocksdb::Options options;
  options.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  if (!rocksdb::DB::Open(options, dir / "native", &raw).ok()) return 1;
  std::unique_ptr<rocksdb::DB> db(raw);

  // onebox: a real agent on loopback.
  onebox::testing::AgentProcess agent("bench", dir / "agent-data", dir / "agent.sock");
  if (auto started = agent.Start(); !started) {
    fprintf(stderr, "%s\n", started.message());
    return 1;
  }
  // One channel per client thread, each on its own connection.
  int max_threads = std::max(16, *std::max_element(thread_counts.begin(), thread_counts.end()));  // 16: the etcd table
  std::vector<std::unique_ptr<onebox::v1::Store::Stub>> stubs;
  for (int t = 0; t < max_threads; ++t) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stubs.push_back(onebox::v1::Store::NewStub(
        grpc::CreateCustomChannel(agent.address(), grpc::InsecureChannelCredentials(), args)));
  }
  // And one socket connection per client thread for the puts.
  std::vector<std::unique_ptr<onebox::AgentSocketClient>> sockets;
  for (int t = 0; t < max_threads; ++t) {
    auto client = onebox::AgentSocketClient::Connect(agent.socket(), 10);
    if (!client.ok()) return 1;
    sockets.push_back(std::make_unique<onebox::AgentSocketClient>(std::move(client).value()));
  }
  auto rpc_put = [&](int t, uint64_t i) { return OneboxPut(*sockets[t], KeyFor(t, i, keys), value, /*sync=*/false); };
  auto rpc_get = [&](int t, uint64_t i) { return OneboxGet(*stubs[t], KeyFor(t, i, keys)); };
  auto native_put = [&](int t, uint64_t i) {
    return db->Put(rocksdb::WriteOptions(), KeyFor(t, i, keys), value).ok();
  };
  auto native_get = [&](int t, uint64_t i) {
    std::string v;
    return db->Get(rocksdb::ReadOptions(), KeyFor(t, i, keys), &v).ok();
  };
  // Preload every key on both sides so that gets always hit.
  for (uint64_t k = 0; k < keys; ++k) {
    (void)db->Put(rocksdb::WriteOptions(), Key(k), value);
    onebox::v1::PutRequest q;
    q.set_key(Key(k));
    q.set_value(value);
    onebox::v1::PutResponse r;
    if (!sockets[0]->Call("/onebox.v1.Store/Put", q, &r).ok()) return 1;
  }

  printf("store_bench: %zu-byte values over %llu keys, %.1f s per cell; native = RocksDB in-process, "
         "onebox = agent on loopback (level ONE; puts on its socket, gets on gRPC)\n",
         value_bytes, static_cast<unsigned long long>(keys), seconds);
  printf("%-5s %7s | %12s %9s %9s | %12s %9s %9s | %7s\n", "op", "clients", "native op/s", "p50 us", "p99 us",
         "onebox op/s", "p50 us", "p99 us", "ratio");
  int failures = 0;
  for (const char* op : {"put", "get"}) {
    bool is_put = std::strcmp(op, "put") == 0;
    for (int threads : thread_counts) {
      Figures n = Measure(threads, seconds, is_put ? std::function<bool(int, uint64_t)>(native_put) : native_get);
      Figures o = Measure(threads, seconds, is_put ? std::function<bool(int, uint64_t)>(rpc_put) : rpc_get);
      failures += n.errors + o.errors;
      printf("%-5s %7d | %12.0f %9.1f %9.1f | %12.0f %9.1f %9.1f | %6.3fx\n", op, threads, n.ops_per_sec, n.p50_us,
             n.p99_us, o.ops_per_sec, o.p50_us, o.p99_us, o.ops_per_sec / n.ops_per_sec);
    }
  }
  failures += AgainstEtcd(dir.path(), sockets, stubs, value, std::min<uint64_t>(keys, 1000), seconds);
  if (failures) fprintf(stderr, "store_bench: %d operations failed\n", failures);
  return failures ? 1 : 0;
}
