// Shim benchmarks P1-P5: each workload runs natively and under libonebox.so,
// in one run, and the two figures are printed side by side with their ratio.
// The workloads run in child processes of this binary (`shim_bench --child
// ...`), started with or without LD_PRELOAD.
//
//   shim_bench [--files N] [--repeat R] [--dir DIR]
//
// The native files and the agent's data dir (hence the view) share one file
// system, DIR (default /dev/shm, a tmpfs: the figures measure the shim, not
// the disk, whose journal commits and IOPS limits vary from run to run).
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "onebox/v1/namespace.grpc.pb.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// ---- child workloads: print the seconds taken ----

int ChildOpenStatClose(const std::string& path, int n) {  // P1
  auto t0 = Clock::now();
  struct stat st;
  for (int i = 0; i < n; ++i) {
    int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0 || stat(path.c_str(), &st) != 0) return 1;
    close(fd);
  }
  printf("%.9f\n", Seconds(t0));
  return 0;
}

int ChildCreateWrite(const std::string& dir, int n) {  // P3: new files in a new directory
  char block[4096];
  memset(block, 'x', sizeof block);
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return 1;
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    std::string p = dir + "/f" + std::to_string(i);
    int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, block, sizeof block) != static_cast<ssize_t>(sizeof block)) return 1;
    close(fd);
  }
  printf("%.9f\n", Seconds(t0));
  return 0;
}

int ChildOpenRead(const std::string& dir, int n, int files) {  // P4
  char block[4096];
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    std::string p = dir + "/f" + std::to_string(i % files);
    int fd = open(p.c_str(), O_RDONLY);
    if (fd < 0 || read(fd, block, sizeof block) != static_cast<ssize_t>(sizeof block)) return 1;
    close(fd);
  }
  printf("%.9f\n", Seconds(t0));
  return 0;
}

int ChildStatReaddir(const std::string& dir, int n, int files) {  // P5
  struct stat st;
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    std::string p = dir + "/f" + std::to_string(i % files);
    if (stat(p.c_str(), &st) != 0) return 1;
  }
  double stat_s = Seconds(t0);
  t0 = Clock::now();
  int entries = 0;
  for (int i = 0; i < n / files + 1; ++i) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) return 1;
    while (readdir(d) != nullptr) ++entries;
    closedir(d);
  }
  printf("%.9f %.9f\n", stat_s, Seconds(t0));
  return entries > 0 ? 0 : 1;
}

// ---- the parent: runs children with and without the shim ----

struct Env {
  std::string shim, socket;
};

std::vector<double> RunChild(const std::vector<std::string>& args, const Env* shim) {
  std::vector<std::string> argv{"/proc/self/exe", "--child"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::map<std::string, std::string> env;
  if (shim) env = {{"LD_PRELOAD", shim->shim}, {"ONEBOX_SOCKET", shim->socket}};
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  self[n > 0 ? n : 0] = '\0';
  argv[0] = self;
  onebox::testing::RunResult r = onebox::testing::RunCommand(argv, env);
  std::vector<double> out;
  if (r.exit_code != 0) {
    fprintf(stderr, "child %s failed (%d): %s\n", args[0].c_str(), r.exit_code, r.err.c_str());
    exit(1);
  }
  for (size_t pos = 0; pos < r.out.size();) {
    size_t end = r.out.find_first_of(" \n", pos);
    out.push_back(std::stod(r.out.substr(pos, end - pos)));
    pos = end + 1;
  }
  return out;
}

// Best of `repeat` runs each, native and onebox alternating so that drift in
// the machine's load hits both alike. args_for(run) gives a run's arguments.
struct Pair {
  std::vector<double> native, onebox;  // best per column
};
Pair BestPair(const std::function<std::vector<std::string>(int, bool)>& args_for, const Env* shim, int repeat) {
  Pair p;
  for (int i = 0; i < repeat; ++i) {
    for (bool with_shim : {false, true}) {
      std::vector<double> r = RunChild(args_for(i, with_shim), with_shim ? shim : nullptr);
      auto& best = with_shim ? p.onebox : p.native;
      if (best.empty()) best = r;
      for (size_t c = 0; c < r.size(); ++c) best[c] = std::min(best[c], r[c]);
    }
  }
  return p;
}

// P2: seconds to start and reap /bin/true n times, with or without the shim.
double SpawnTrue(int n, const Env* shim) {
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
  if (shim) {
    env_store.push_back("LD_PRELOAD=" + shim->shim);
    env_store.push_back("ONEBOX_SOCKET=" + shim->socket);
  }
  std::vector<char*> envp;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, nullptr};
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    pid_t pid;
    if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, envp.data()) != 0) exit(1);
    int status;
    waitpid(pid, &status, 0);
  }
  return Seconds(t0);
}

// Waits until the agent has recorded path (its last file), so that its
// hashing does not share the cores with the next timed run.
void WaitRecorded(onebox::testing::AgentProcess& agent, const std::string& path) {
  auto stub = onebox::v1::Namespace::NewStub(agent.channel());
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline) {
    onebox::v1::StatRequest q;
    q.set_path(path);
    onebox::v1::StatResponse r;
    grpc::ClientContext ctx;
    if (stub->Stat(&ctx, q, &r).ok() && r.found() && r.inode().size() == 4096) return;
    usleep(5000);
  }
  fprintf(stderr, "shim_bench: the agent did not record %s within 30 s\n", path.c_str());
}

void Row(const char* name, const char* unit, double native, double onebox, const char* goal, bool higher_is_better) {
  double ratio = higher_is_better ? onebox / native : native / onebox;
  printf("%-46s %12.0f %12.0f %8.3fx   %s\n", name, native, onebox, ratio, goal);
  (void)unit;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::string(argv[1]) == "--child") {
    std::string what = argv[2];
    if (what == "p1") return ChildOpenStatClose(argv[3], std::stoi(argv[4]));
    if (what == "p3") return ChildCreateWrite(argv[3], std::stoi(argv[4]));
    if (what == "p4") return ChildOpenRead(argv[3], std::stoi(argv[4]), std::stoi(argv[5]));
    if (what == "p5") return ChildStatReaddir(argv[3], std::stoi(argv[4]), std::stoi(argv[5]));
    return 2;
  }
  int files = 2000, repeat = 3;
  std::string base_dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  CLI::App app{"The shim (P1 to P5): each workload natively and under libonebox.so, side by side"};
  app.add_option("--files", files, "files of each workload")->check(CLI::Range(1, 10000000))->capture_default_str();
  app.add_option("--repeat", repeat, "runs of each workload")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--dir", base_dir, "the file system of the native files and the agent's data")
      ->check(CLI::ExistingDirectory)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  setenv("TMPDIR", base_dir.c_str(), 1);
  onebox::testing::TempDir dir;
  onebox::testing::AgentProcess agent("bench", dir / "data", dir / "agent.sock");
  if (auto ok = agent.Start(); !ok) {
    fprintf(stderr, "%s\n", ok.message());
    return 1;
  }
  Env shim{onebox::testing::ShimLib(), agent.socket()};
  // Native files live on the same disk as the agent's view (both under TMPDIR).
  std::string native = dir / "native", cluster = "/cluster/bench";
  mkdir(native.c_str(), 0755);
  if (onebox::testing::RunCommand({"mkdir", "-p", cluster}, {{"LD_PRELOAD", shim.shim}, {"ONEBOX_SOCKET", shim.socket}})
          .exit_code != 0)
    return 1;
  std::string ops = std::to_string(files * 10);
  std::string last = "/f" + std::to_string(files - 1);

  printf("shim_bench: native vs onebox (libonebox.so + agent), best of %d; %d files of 4 KiB; both in %s\n", repeat,
         files, base_dir.c_str());
  printf("%-46s %12s %12s %9s   %s\n", "benchmark (per second, higher is better)", "native", "onebox", "ratio",
         "goal");
  std::string etc = "/etc/hostname", p1_ops = std::to_string(files * 100);
  Pair p1 = BestPair([&](int, bool) { return std::vector<std::string>{"p1", etc, p1_ops}; }, &shim, repeat);
  Row("P1 open+stat+close, non-cluster path", "ops", files * 100 / p1.native[0], files * 100 / p1.onebox[0],
      ">= 0.98x (<= 1.02x time)", true);
  int p3_runs = 0;
  Pair p3 = BestPair(
      [&](int run, bool with_shim) {
        // Before each run, the agent has finished recording the previous cluster run.
        if (p3_runs++ > 0 && !with_shim) WaitRecorded(agent, cluster + "/run" + std::to_string(run - 1) + last);
        return std::vector<std::string>{"p3", (with_shim ? cluster : native) + "/run" + std::to_string(run),
                                        std::to_string(files)};
      },
      &shim, repeat);
  WaitRecorded(agent, cluster + "/run" + std::to_string(repeat - 1) + last);
  // P4 and P5 read a set of files made once, untimed.
  std::string native_base = native + "/base", cluster_base = cluster + "/base";
  RunChild({"p3", native_base, std::to_string(files)}, nullptr);
  RunChild({"p3", cluster_base, std::to_string(files)}, &shim);
  WaitRecorded(agent, cluster_base + last);
  Row("P3 create+write 4 KiB+close, new files", "files", files / p3.native[0], files / p3.onebox[0], ">= 0.5x", true);
  Pair p4 = BestPair(
      [&](int, bool with_shim) {
        return std::vector<std::string>{"p4", with_shim ? cluster_base : native_base, ops, std::to_string(files)};
      },
      &shim, repeat);
  Row("P4 open+read 4 KiB+close, existing file", "ops", files * 10 / p4.native[0], files * 10 / p4.onebox[0],
      ">= 0.8x", true);
  Pair p5 = BestPair(
      [&](int, bool with_shim) {
        return std::vector<std::string>{"p5", with_shim ? cluster_base : native_base, ops, std::to_string(files)};
      },
      &shim, repeat);
  Row("P5 stat", "ops", files * 10 / p5.native[0], files * 10 / p5.onebox[0], ">= 0.9x", true);
  double entries = (files * 10 / files + 1) * (files + 2.0);
  Row("P5 readdir (entries)", "entries", entries / p5.native[1], entries / p5.onebox[1], ">= 0.9x", true);
  int starts = 1000;
  double p2n = 1e300, p2o = 1e300;
  for (int i = 0; i < repeat; ++i) {
    p2n = std::min(p2n, SpawnTrue(starts, nullptr));
    p2o = std::min(p2o, SpawnTrue(starts, &shim));
  }
  printf("%-46s %10.1f us %9.1f us %+8.1f us   %s\n", "P2 start /bin/true (time per start)", p2n / starts * 1e6,
         p2o / starts * 1e6, (p2o - p2n) / starts * 1e6, "<= +150 us");
  return 0;
}
