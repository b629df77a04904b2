// A parallel build, side by side (issue 12): make -j8 of GNU libiberty (66
// C files, from Debian's binutils-source; installed with apt-get when
// missing), configured once per column and then built --rounds times from
// no objects:
//   native          a plain directory
//   onebox 1 node   the tree in /cluster, one agent, nothing placed: what
//                   the files cost
//   onebox N nodes  the tree in /cluster, N agents on loopback,
//                   ONEBOX_PLACE=auto: compiles placed over the nodes
//   distcc N        a plain directory, CC="distcc gcc" with N distccd on
//                   loopback (2 jobs each): what a user picks today
// Every column runs on this one machine, so no column has more CPUs than
// native: the ratios are what distribution costs, not what it gains (on
// real machines the gain is the other nodes' CPUs). Median seconds and the
// ratio to native; then the jobs each onebox node took in.
//
//   build_bench [--rounds N] [--nodes N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "bench/peers.h"
#include "onebox/v1/cluster.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {
using Clock = std::chrono::steady_clock;
using onebox::testing::AgentProcess;
using onebox::testing::RunResult;
using onebox::testing::TempDir;

constexpr const char* kBuild = "make -j8 >/dev/null";
constexpr const char* kClean = "find . -name '*.o' -delete && rm -f libiberty.a";

struct Column {
  std::string name;
  std::string root;  // where the tree goes
  std::vector<std::unique_ptr<AgentProcess>> nodes;  // empty: plainly
  std::map<std::string, std::string> env;            // for the build
  std::vector<double> seconds;
};

RunResult Run(Column& col, const std::string& cmd, const std::map<std::string, std::string>& extra = {}) {
  if (col.nodes.empty()) {
    std::map<std::string, std::string> env = col.env;
    env.insert(extra.begin(), extra.end());
    return onebox::testing::RunCommand({"bash", "-c", cmd}, env);
  }
  std::string exports;
  for (const auto& [k, v] : extra) exports += fmt::format("export {}='{}'; ", k, v);
  return onebox::testing::Shell(*col.nodes[0], exports + cmd);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3;
  size_t nodes = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--rounds") rounds = std::stoi(argv[i + 1]);
    if (flag == "--nodes") nodes = std::stoul(argv[i + 1]);
  }
  if (rounds < 1 || nodes < 2) {
    fprintf(stderr, "build_bench: --rounds is at least 1, --nodes at least 2\n");
    return 2;
  }
  std::string why;
  if (onebox::testing::BinutilsTarball().empty() && !onebox::bench::InstallIfMissing("/usr/src/binutils", "binutils-source", &why)) {
    fprintf(stderr, "build_bench: %s\n", why.c_str());
    return 1;
  }
  const std::string prepare = onebox::testing::PrepareLibiberty(onebox::testing::BinutilsTarball());
  TempDir dir;

  std::vector<Column> columns;
  columns.emplace_back();
  columns.back().name = "native";
  columns.back().root = dir / "native";
  for (size_t n : {size_t{1}, nodes}) {
    Column col;
    col.name = fmt::format("onebox {} node{}", n, n > 1 ? "s" : "");
    col.root = fmt::format("/cluster/b{}", n);
    for (size_t i = 0; i < n; ++i) {
      col.nodes.push_back(onebox::testing::QuietLoopbackAgent(dir.path(), fmt::format("n{}-{}", n, i),
                                                                i == 0 ? "" : col.nodes[0]->address()));
      if (!col.nodes.back()->Start()) return 1;
    }
    std::vector<AgentProcess*> agents;
    for (auto& a : col.nodes) agents.push_back(a.get());
    if (!onebox::testing::WaitForPagesCounting(agents, static_cast<int64_t>(n - 1))) return 1;
    if (n > 1) col.env["ONEBOX_PLACE"] = "auto";
    columns.push_back(std::move(col));
  }
  // distcc: N distccd on loopback, 2 jobs each; preprocessing stays here, as distcc does it.
  std::vector<pid_t> distccds;
  if (onebox::bench::InstallIfMissing("/usr/bin/distccd", "distcc", &why)) {
    std::string hosts;
    for (size_t i = 0; i < nodes; ++i) {
      int port = onebox::bench::FreeLoopbackPort();
      pid_t pid = onebox::bench::StartDaemon(
          {"/usr/bin/distccd", "--no-detach", "--daemon", "--listen", "127.0.0.1", "--port", std::to_string(port),
           "--allow", "127.0.0.1", "--jobs", "2", "--user", "nobody", "--log-file", dir / fmt::format("distccd{}.log", i)},
          dir / fmt::format("distccd{}.out", i));
      distccds.push_back(pid);
      hosts += fmt::format("127.0.0.1:{}/2 ", port);
    }
    std::filesystem::create_directories(dir / "distcc-state");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    Column col;
    col.name = fmt::format("distcc {}", nodes);
    col.root = dir / "distcc";
    col.env = {{"DISTCC_HOSTS", hosts}, {"DISTCC_FALLBACK", "0"}, {"DISTCC_DIR", dir / "distcc-state"}};
    columns.push_back(std::move(col));
  } else {
    printf("build_bench: no distcc column: %s\n", why.c_str());
  }

  for (Column& col : columns) {
    if (Run(col, fmt::format("mkdir -p {0} && cd {0} && {1}", col.root, prepare)).exit_code != 0) {
      fprintf(stderr, "build_bench: %s: cannot prepare libiberty in %s\n", col.name.c_str(), col.root.c_str());
      return 1;
    }
  }
  for (int r = 0; r < rounds; ++r) {
    for (Column& col : columns) {
      const std::string lib = col.root + "/libiberty";
      std::string build = col.name.starts_with("distcc") ? "make -j8 CC='distcc gcc' >/dev/null" : kBuild;
      if (Run(col, fmt::format("cd {} && {}", lib, kClean)).exit_code != 0) return 1;
      auto start = Clock::now();
      RunResult built = Run(col, fmt::format("cd {} && {}", lib, build), col.env);
      col.seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
      if (built.exit_code != 0) {
        fprintf(stderr, "build_bench: %s: the build failed: %s\n", col.name.c_str(), built.err.c_str());
        return 1;
      }
    }
  }
  const double native = Median(columns[0].seconds);
  printf("make -j8 of GNU libiberty (66 C files), %d rounds, median seconds (ratio to native); one machine, "
         "2 cores\n",
         rounds);
  for (const Column& col : columns)
    printf("  %-16s %7.2f s  %5.2fx\n", col.name.c_str(), Median(col.seconds), Median(col.seconds) / native);
  for (const Column& col : columns) {
    if (col.nodes.size() < 2) continue;
    std::string counts;
    for (auto& a : col.nodes) {
      RunResult r = onebox::testing::RunCommand(
          {onebox::testing::OneboxBin(), "--socket", a->socket(), "status", "-o", "json"});
      onebox::v1::StatusResponse st;
      if (r.exit_code == 0 && google::protobuf::util::JsonStringToMessage(r.out, &st).ok())
        counts += fmt::format(" {}: {} out, {} in;", st.node().name(), st.jobs_placed_out(), st.jobs_taken_in());
    }
    printf("  %s jobs:%s\n", col.name.c_str(), counts.c_str());
  }
  for (pid_t& pid : distccds) onebox::bench::StopDaemon(&pid);
  return 0;
}
