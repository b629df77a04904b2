// `onebox agent --metrics HOST:PORT` (nodeagent/metrics/, docs/operations.md):
// two agents on loopback, scraped with curl as Prometheus would, the text
// read by Debian's prometheus_client parser; what the agents did (a file
// written on one node and read on the other, a gRPC call) shows in the
// counts, and the members and replication in the gauges.
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "onebox/v1/cluster.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using std::chrono::seconds;

// An agent serving metrics on a loopback port the kernel picks; with
// replication factor 1, a file written there stays there (the others get
// stubs, and a read elsewhere brings its content: a hydration).
std::unique_ptr<AgentProcess> MetricsAgent(const TempDir& dir, const std::string& name, const std::string& join = "",
                                           const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args{"--name",      name,          "--data-dir",           dir / (name + "-data"),
                                "--listen",    "127.0.0.1:0", "--socket",             dir / (name + ".sock"),
                                "--log-level", "info",        "--replication-factor", "1",
                                "--metrics",   "127.0.0.1:0"};
  if (!join.empty()) args.insert(args.end(), {"--join", join});
  args.insert(args.end(), extra.begin(), extra.end());
  return AgentProcess::WithArgs(args, dir / (name + ".sock"), dir / (name + ".log"));
}

// Where the agent says its metrics are ("metrics at http://HOST:PORT/metrics").
std::string MetricsUrl(const AgentProcess& agent) {
  std::smatch m;
  const std::string log = agent.log();
  return std::regex_search(log, m, std::regex("metrics at (http://[^ ]+/metrics)")) ? m[1].str() : "";
}

RunResult Scrape(const std::string& url) { return RunCommand({"curl", "-sS", "--max-time", "5", url}); }

// The value of the sample `name{labels}` (exactly as printed), or -1.
double Sample(const std::string& text, const std::string& key) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.size() > key.size() && line.compare(0, key.size(), key) == 0 && line[key.size()] == ' ')
      return std::stod(line.substr(key.size() + 1));
  return -1;
}

TEST(MetricsTest, AgentsServePrometheusTextThatCountsWhatTheyDid) {
  TempDir dir;
  auto a = MetricsAgent(dir, "ma");
  ASSERT_TRUE(a->Start());
  auto b = MetricsAgent(dir, "mb", a->address());
  ASSERT_TRUE(b->Start());
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get()}, 1));
  const std::string url_a = MetricsUrl(*a), url_b = MetricsUrl(*b);
  ASSERT_NE(url_a, "") << a->log();
  ASSERT_NE(url_b, "") << b->log();

  // A file of 300,000 bytes made on a and read on b.
  RunResult wrote = Shell(*a, "mkdir -p /cluster/m && head -c 300000 /dev/urandom > /cluster/m/f && sync /cluster/m/f");
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  ASSERT_TRUE(Eventually(*b, "wc -c < /cluster/m/f", "300000\n", seconds(20)));

  // One Cluster/Status call on b's gRPC port.
  const std::string status_ok = R"(onebox_grpc_requests_total{method="/onebox.v1.Cluster/Status",code="OK"})";
  RunResult before = Scrape(url_b);
  ASSERT_EQ(before.exit_code, 0) << before.err;
  {
    grpc::ClientContext ctx;
    v1::StatusResponse resp;
    ASSERT_TRUE(v1::Cluster::NewStub(b->channel())->Status(&ctx, v1::StatusRequest(), &resp).ok());
  }
  RunResult scraped_b = Scrape(url_b), scraped_a = Scrape(url_a);
  ASSERT_EQ(scraped_b.exit_code, 0) << scraped_b.err;
  ASSERT_EQ(scraped_a.exit_code, 0) << scraped_a.err;
  const std::string& mb = scraped_b.out;
  const std::string& ma = scraped_a.out;
  EXPECT_EQ(Sample(mb, status_ok), std::max(Sample(before.out, status_ok), 0.0) + 1) << mb;

  // b brought the content (a hydration, its time, the bytes); a served it.
  EXPECT_GE(Sample(mb, R"(onebox_hydrations_total{result="ok"})"), 1) << mb;
  EXPECT_EQ(Sample(mb, "onebox_hydration_seconds_count"), Sample(mb, R"(onebox_hydrations_total{result="ok"})"));
  EXPECT_GE(Sample(mb, R"(onebox_shim_requests_total{kind="Hydrate",result="ok"})"), 1) << mb;
  EXPECT_GE(Sample(mb, R"(onebox_content_bytes_total{direction="fetched"})"), 300000) << mb;
  EXPECT_GE(Sample(ma, R"(onebox_content_bytes_total{direction="served"})"), 300000) << ma;
  EXPECT_GE(Sample(ma, R"(onebox_store_blob_bytes{family="chunks"})") +
                Sample(ma, R"(onebox_store_memtable_bytes{family="chunks"})"),
            300000)
      << "a holds the content: " << ma;
  EXPECT_EQ(Sample(ma, R"(onebox_hydrations_total{result="ok"})"), -1) << "a read nothing from b";

  // The members, the replication to the other, the store.
  for (const std::string* m : {&ma, &mb}) {
    EXPECT_EQ(Sample(*m, R"(onebox_members{state="alive"})"), 2) << *m;
    EXPECT_EQ(Sample(*m, R"(onebox_members{state="dead"})"), 0) << *m;
    // The namespace holds /m and /m/f at least, on each node.
    EXPECT_GE(Sample(*m, R"(onebox_store_estimated_keys{family="ns"})"), 2) << *m;
  }
  EXPECT_EQ(Sample(ma, R"(onebox_member_state{node="mb",state="alive"})"), 1) << ma;
  EXPECT_GE(Sample(ma, R"(onebox_replication_entries_behind{peer="mb"})"), 0) << ma;
  EXPECT_GE(Sample(ma, R"(onebox_replication_lag_seconds{peer="mb"})"), 0) << ma;

  // Gossip between them goes as heartbeat datagrams: over 3 s each sends and
  // takes about six (two a second), where a Gossip call goes every 10 s.
  {
    RunResult first = Scrape(url_a);
    std::this_thread::sleep_for(seconds(3));
    RunResult then = Scrape(url_a);
    auto delta = [&](const std::string& kind) {
      const std::string key = R"(onebox_gossip_total{kind=")" + kind + R"("})";
      return Sample(then.out, key) - Sample(first.out, key);
    };
    EXPECT_GE(delta("beat_sent"), 4) << then.out;
    EXPECT_GE(delta("beat_taken"), 4) << then.out;
    EXPECT_LE(delta("call"), 2) << then.out;  // one due every 10 s; one more after a stalled round
    EXPECT_EQ(Sample(then.out, R"(onebox_gossip_total{kind="beat_unopened"})"), 0) << then.out;
  }

  // Prometheus' own parser (Debian's python3-prometheus-client) reads it all.
  for (const std::string* m : {&ma, &mb}) {
    std::ofstream(dir / "scraped.txt") << *m;
    RunResult read = RunCommand({"/usr/bin/python3", "-c",
                                 "import sys\n"
                                 "from prometheus_client.parser import text_string_to_metric_families as parse\n"
                                 "families = list(parse(open(sys.argv[1]).read()))\n"
                                 "print(len(families))",
                                 dir / "scraped.txt"});
    EXPECT_EQ(read.exit_code, 0) << read.err << *m;
    EXPECT_GE(std::atoi(read.out.c_str()), 15) << read.out;
  }

  // Only /metrics, only GET.
  RunResult other = RunCommand({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                                url_b.substr(0, url_b.size() - 8) + "/other"});
  EXPECT_EQ(other.out, "404");
  RunResult post = RunCommand({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", "POST",
                               url_b});
  EXPECT_EQ(post.out, "405");
  KeepLogsIfFailed(dir.path(), {a.get(), b.get()});
}

// A lock granted on a after b held it while it wrote a burst: the grant
// waits until a's view holds what b wrote (docs/consistency.md, Advisory
// locks), and that wait hurries a's placing thread, lowered below the
// programs while it is behind (architecture.md, Catch-up below programs):
// it counts as a drain. a's thread is behind whenever anything waits for
// it (--catch-up-backlog 1: whatever the size of the stream's batches),
// and the cores are kept busy meanwhile, so that it is still at work when
// the grant comes, however fast the machine.
TEST(MetricsTest, ALockGrantWaitsForThePlacingOfWhatItsLastHolderWroteAndHurriesIt) {
  TempDir dir;
  auto a = MetricsAgent(dir, "ma", "", {"--catch-up-backlog", "1"});
  ASSERT_TRUE(a->Start());
  auto b = MetricsAgent(dir, "mb", a->address());
  ASSERT_TRUE(b->Start());
  ASSERT_TRUE(WaitForPagesCounting({a.get(), b.get()}, 1));
  const std::string url_a = MetricsUrl(*a);
  ASSERT_NE(url_a, "") << a->log();
  ASSERT_EQ(Shell(*b, "mkdir -p /cluster/h/d && touch /cluster/h/lock").exit_code, 0);
  ASSERT_TRUE(Eventually(*a, "ls /cluster/h", "d\nlock\n", seconds(10)));
  const std::string drains = R"(onebox_catch_up_waits_total{wait="drain"})";
  RunResult before = Scrape(url_a);
  ASSERT_EQ(before.exit_code, 0) << before.err;
  EXPECT_EQ(Sample(before.out, "onebox_catch_up_lowered"), testing::CanRaiseNiceBack() ? 1 : 0) << before.out;
  EXPECT_EQ(Sample(before.out, "onebox_catch_up_behind"), 0) << "nothing queued: keeping up\n" << before.out;
  ASSERT_GE(Sample(before.out, drains), 0) << before.out;

  // b holds the lock, says so, and then writes 3,000 files while a waits for it.
  BusyCores busy;
  RunResult burst;
  std::thread on_b([&] {
    burst = Shell(*b, "flock /cluster/h/lock /usr/bin/python3 -c \"\n"
                      "import time\n"
                      "open('/cluster/h/started', 'w').close()\n"
                      "time.sleep(1)\n"
                      "for i in range(3000):\n"
                      "    with open('/cluster/h/d/f%d' % i, 'w') as f: f.write('x' * 2000)\n"
                      "\"");
  });
  EXPECT_TRUE(Eventually(*a, "test -e /cluster/h/started && echo held", "held\n", seconds(10)));
  RunResult granted = Shell(*a, "flock /cluster/h/lock sh -c 'ls /cluster/h/d | wc -l'");
  on_b.join();
  busy.End();
  ASSERT_EQ(burst.exit_code, 0) << burst.err;
  ASSERT_EQ(granted.exit_code, 0) << granted.err;
  EXPECT_EQ(granted.out, "3000\n") << "the lock's grant on a saw all that b wrote under it";
  RunResult after = Scrape(url_a);
  ASSERT_EQ(after.exit_code, 0) << after.err;
  const double drained = Sample(after.out, drains) - Sample(before.out, drains);
  if (testing::CanRaiseNiceBack())
    EXPECT_GE(drained, 1) << "the grant's wait for the placing hurried it: " << after.out;
  else
    EXPECT_EQ(drained, 0) << "nothing is lowered here, so nothing is hurried: " << after.out;
  // Nothing else on a drains here (no program of a's makes names) but a
  // full scan after its events overflowed.
  EXPECT_EQ(a->log().find("inotify queue overflowed"), std::string::npos) << a->log();
  KeepLogsIfFailed(dir.path(), {a.get(), b.get()});
}

TEST(MetricsTest, AMetricsAddressThatCannotBeTakenStopsTheAgentWithItsReason) {
  TempDir dir;
  auto a = MetricsAgent(dir, "first");
  ASSERT_TRUE(a->Start());
  std::smatch m;
  const std::string url = MetricsUrl(*a);
  ASSERT_TRUE(std::regex_search(url, m, std::regex(":([0-9]+)/metrics")));
  auto b = AgentProcess::WithArgs({"--name", "second", "--data-dir", dir / "second-data", "--listen", "127.0.0.1:0",
                                   "--socket", dir / "second.sock", "--metrics", "127.0.0.1:" + m[1].str()},
                                  dir / "second.sock", dir / "second.log");
  EXPECT_FALSE(b->Start(std::chrono::seconds(10)));
  EXPECT_NE(b->log().find("--metrics 127.0.0.1:" + m[1].str() + ": cannot listen: Address already in use"),
            std::string::npos)
      << b->log();
}

}  // namespace
}  // namespace onebox::testing
