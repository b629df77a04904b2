// A real source tree through what developers do to it, side by side: native
// (a plain directory on the same disk) and onebox on 2 and on 3 nodes
// (agents on loopback; programs under the shim on node A, the tree under
// /cluster). The tree is this machine's Python standard library
// (/usr/lib/python3.11 without site- and dist-packages, and without its two
// symlinks out of the tree, config-*/libpython3.11.so and sitecustomize.py,
// which sshfs cannot read: about 1,500 files, 51 MiB), made into a tarball
// first. Rows (median of --rounds):
//   extract      tar -xf of the tarball
//   git          git init, add -A, commit
//   walk         find | wc -l; du -s; grep -r
//   compileall   python3 -m compileall -q -f (-d /tree: the .pyc files name
//                their sources alike wherever the tree is)
//   read on B    the tree as a tarball on another node (tar | sha256sum),
//                right after compileall on A (read again until it equals
//                what A reads; that wait is printed too), checked equal to
//                native's (names, modes, bytes)
//   1000 files   1,000 small files made on A, until B sees them all
// The last two are cross-node: native is the same work on one machine.
// Then, per cluster: the agents' CPU per file of the extract (per node), and
// how long after tar's exit every file is in every other node's view with
// its size (the burst's visibility, p50 and max over the rounds), and the
// same for the commit's .git after git's exit.
// sshfs: two mounts (A's and B's) of one directory through a sshd of the
// bench's own on loopback (sshfs's defaults; installed with apt-get when
// missing); its extract sets no times or owners (tar -m --no-same-owner:
// SFTP cannot set them on a symlink). GlusterFS: one replica-2 volume of two
// bricks on this machine (127.0.0.2), mounted twice, A's and B's (bench/
// peers.h). Kernel NFS cannot run on these VMs (their kernel has no nfsd:
// /proc/filesystems lists none, and there are no modules to load).
//
//   tree_bench [--rounds N] [--nodes 2,3]
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/peers.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {
using Clock = std::chrono::steady_clock;
using onebox::testing::AgentProcess;
using onebox::testing::CpuSeconds;
using onebox::testing::RunResult;
using onebox::testing::TempDir;

constexpr const char* kTreeSource = "/usr/lib/python3.11";
constexpr const char* kTree = "python3.11";  // the tarball's top directory

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// Regular files and directories below root, with each file's size.
std::map<std::string, int64_t> Listing(const std::string& root) {
  std::map<std::string, int64_t> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (lstat(it->path().c_str(), &st) != 0) continue;
    out[it->path().string().substr(root.size())] = S_ISREG(st.st_mode) ? st.st_size : -1;
  }
  return out;
}

// One way of running the rows: native, a cluster of n agents, or sshfs.
struct Column {
  std::string name;
  std::vector<std::unique_ptr<AgentProcess>> nodes;  // empty: programs run plainly
  std::string root;                                  // where the rows work: a dir, /cluster, a mount
  std::string root_on_b;                             // the same tree as "node B" reads it
  std::string tar_flags;                             // for the extract
  std::map<std::string, std::vector<double>> seconds;
  std::vector<double> cpu_us_per_file;  // per node, per round
  std::vector<double> burst_s;          // tar's exit -> in every other view
  std::vector<double> settle_s;         // until B's read of the tree equals A's
  std::vector<double> commit_s;         // git commit's exit -> its .git in every other view
  std::string read_sum;
};

RunResult Run(Column& col, const std::string& cmd, size_t node = 0) {
  if (col.nodes.empty()) return onebox::testing::RunCommand({"bash", "-c", cmd});
  return onebox::testing::Shell(*col.nodes[node], cmd);
}

bool Timed(Column& col, const std::string& row, const std::string& cmd, size_t node = 0) {
  auto start = Clock::now();
  RunResult r = Run(col, cmd, node);
  double s = Seconds(Clock::now() - start);
  if (r.exit_code != 0) {
    fprintf(stderr, "tree_bench: %s, %s: `%s` exited %d: %s\n", col.name.c_str(), row.c_str(), cmd.c_str(),
            r.exit_code, r.err.c_str());
    return false;
  }
  col.seconds[row].push_back(s);
  return true;
}

// Where each node sees the tree below rel, A's first: each agent's view
// (onebox), A's and B's mounts (sshfs, GlusterFS), or one directory (native).
std::vector<std::string> Copies(TempDir& dir, const Column& col, const std::string& rel) {
  if (col.nodes.empty()) {
    std::vector<std::string> copies{col.root + "/" + rel};
    if (col.root_on_b != col.root) copies.push_back(col.root_on_b + "/" + rel);
    return copies;
  }
  std::vector<std::string> views;
  for (size_t i = 0; i < col.nodes.size(); ++i)
    views.push_back(dir / fmt::format("n{}-{}-data/view/cluster/{}", col.nodes.size(), i, rel));
  return views;
}

// Waits until every other node's copy lists below rel what A's lists.
bool AwaitViews(TempDir& dir, Column& col, const std::string& rel, std::chrono::seconds timeout) {
  std::vector<std::string> copies = Copies(dir, col, rel);
  std::map<std::string, int64_t> want = Listing(copies[0]);
  auto give_up = Clock::now() + timeout;
  for (size_t i = 1; i < copies.size(); ++i) {
    while (Listing(copies[i]) != want) {
      if (Clock::now() > give_up) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3;
  std::vector<size_t> cluster_sizes{2, 3};
  CLI::App app{"A real source tree through extract, git, a walk, compileall and a read on another node: native, "
               "onebox, sshfs and GlusterFS side by side"};
  app.add_option("--rounds", rounds, "rounds of each row (the median is printed)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--nodes", cluster_sizes, "onebox clusters to run, by their number of agents (at least 2 each)")
      ->delimiter(',')
      ->check(CLI::Range(2, 16))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  TempDir dir;
  // Stopped by a signal: the data (GiBs on tmpfs) and the agents' join token
  // go too, last (after the peers' mounts: registered later, run first).
  onebox::bench::UndoOnSignal({"rm", "-rf", dir.path(), onebox::testing::TestJoinTokenFile()});
  std::string tarball = dir / "tree.tar";
  RunResult made = onebox::testing::RunCommand(
      {"tar", "-cf", tarball, "--exclude=*-packages", "--exclude=libpython3.11.so", "--exclude=sitecustomize.py", "-C", std::filesystem::path(kTreeSource).parent_path(), kTree});
  if (made.exit_code != 0) {
    fprintf(stderr, "tree_bench: cannot make the tarball of %s: %s\n", kTreeSource, made.err.c_str());
    return 1;
  }
  RunResult count = onebox::testing::RunCommand({"bash", "-c", "tar -tf " + tarball + " | wc -l"});
  size_t entries = std::stoul(count.out);

  std::vector<Column> columns(1);
  columns[0].name = "native";
  columns[0].root = columns[0].root_on_b = dir / "native";
  std::filesystem::create_directories(columns[0].root);
  for (size_t n : cluster_sizes) {
    Column col;
    col.name = fmt::format("onebox {} nodes", n);
    col.root = col.root_on_b = "/cluster";
    for (size_t i = 0; i < n; ++i) {
      col.nodes.push_back(onebox::testing::QuietLoopbackAgent(dir.path(), fmt::format("n{}-{}", n, i), i == 0 ? "" : col.nodes[0]->address()));
      if (!col.nodes.back()->Start()) return 1;
    }
    // Until every shim would ask the others: all alive on every state page.
    std::vector<AgentProcess*> agents;
    for (auto& a : col.nodes) agents.push_back(a.get());
    if (!onebox::testing::WaitForPagesCounting(agents, static_cast<int64_t>(n - 1))) return 1;
    columns.push_back(std::move(col));
  }
  // sshfs: two mounts of one directory through a sshd on loopback, A's and B's.
  std::filesystem::create_directories(dir / "sshd");
  std::filesystem::create_directories(dir / "sshfs-remote");
  onebox::bench::LoopbackSshd sshd(dir / "sshd");
  onebox::bench::SshfsMount sshfs_a(sshd, dir / "sshfs-remote", dir / "sshfs-a");
  onebox::bench::SshfsMount sshfs_b(sshd, dir / "sshfs-remote", dir / "sshfs-b");
  std::string why;
  if (sshd.Start(&why) && sshfs_a.Mount(&why) && sshfs_b.Mount(&why)) {
    Column col;
    col.name = "sshfs";
    col.root = sshfs_a.path();
    col.root_on_b = sshfs_b.path();
    // SFTP's setstat follows symlinks: tar cannot set a symlink's times or
    // owner there (ENOENT for one that points out of the tree), so sshfs
    // extracts without either (less work than the other columns do).
    col.tar_flags = " -m --no-same-owner";
    columns.push_back(std::move(col));
  } else {
    printf("tree_bench: no sshfs column: %s\n", why.c_str());
  }
  // GlusterFS: a volume of two bricks (replica 2) on this machine, mounted twice (A's and B's).
  std::filesystem::create_directories(dir / "gluster");
  onebox::bench::GlusterVolume gluster(dir / "gluster");
  why.clear();
  if (gluster.Start(&why) && gluster.Mount(dir / "gluster-a", &why) && gluster.Mount(dir / "gluster-b", &why)) {
    Column col;
    col.name = "glusterfs";
    col.root = dir / "gluster-a";
    col.root_on_b = dir / "gluster-b";
    columns.push_back(std::move(col));
  } else {
    printf("tree_bench: no GlusterFS column: %s\n", why.c_str());
  }

  const std::string commit = "git init -q && git add -A && git -c user.email=bench@onebox -c user.name=bench "
                             "commit -qm tree";
  for (int r = 0; r < rounds; ++r) {
    for (Column& col : columns) {
      std::string base = fmt::format("{}/t{}", col.root, r);
      std::string tree = base + "/" + kTree;
      if (Run(col, "mkdir " + base).exit_code != 0) return 1;
      std::vector<double> cpu_before;
      for (auto& a : col.nodes) cpu_before.push_back(CpuSeconds(a->pid()));
      if (!Timed(col, "extract", fmt::format("tar -xf {} -C {}{}", tarball, base, col.tar_flags))) return 1;
      auto extracted = Clock::now();
      if (Copies(dir, col, "").size() > 1) {  // not native
        if (!AwaitViews(dir, col, fmt::format("t{}", r), std::chrono::seconds(120))) {
          fprintf(stderr, "tree_bench: %s: the extract never showed whole on every node\n", col.name.c_str());
          return 1;
        }
        col.burst_s.push_back(Seconds(Clock::now() - extracted));
        for (size_t i = 0; i < col.nodes.size(); ++i)
          col.cpu_us_per_file.push_back((CpuSeconds(col.nodes[i]->pid()) - cpu_before[i]) * 1e6 /
                                        static_cast<double>(entries));
      }
      if (!Timed(col, "git add -A && commit", fmt::format("cd {} && {}", tree, commit))) return 1;
      auto committed = Clock::now();
      if (Copies(dir, col, "").size() > 1) {  // not native
        if (!AwaitViews(dir, col, fmt::format("t{}/{}/.git", r, kTree), std::chrono::seconds(120))) {
          fprintf(stderr, "tree_bench: %s: the commit never showed whole on every node\n", col.name.c_str());
          return 1;
        }
        col.commit_s.push_back(Seconds(Clock::now() - committed));
      }
      if (!Timed(col, "walk (find, du, grep -r)",
                 fmt::format("find {0} | wc -l >/dev/null && du -s {0} >/dev/null && "
                             "grep -r -I 'import os' {0} | wc -l >/dev/null",
                             tree)))
        return 1;
      if (!Timed(col, "python3 -m compileall -f", fmt::format("python3 -m compileall -q -f -d /tree {} >/dev/null", tree)))
        return 1;
      // On another node (native: the same machine): the whole tree as a tarball, hashed.
      auto read = [&](const std::string& root) {
        return fmt::format(
            "tar -cf - --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --exclude=.git "
            "-C {}/t{} {} | sha256sum",
            root, r, kTree);
      };
      // What A holds now, then B's reads until B holds the same (what A
      // wrote last, compileall's output, may still be on its way).
      RunResult on_a = Run(col, read(col.root), 0);
      if (on_a.exit_code != 0) return 1;
      auto start = Clock::now();
      for (int attempt = 0;; ++attempt) {
        auto read_at = Clock::now();
        RunResult sum = Run(col, read(col.root_on_b), col.nodes.empty() ? 0 : 1);
        if (sum.exit_code != 0) return 1;
        if (attempt == 0) col.seconds["read on B (tar | sha256sum)"].push_back(Seconds(Clock::now() - read_at));
        if (sum.out == on_a.out) break;
        if (Clock::now() - start > std::chrono::seconds(60)) {
          fprintf(stderr, "tree_bench: %s: B never read what A holds\n", col.name.c_str());
          return 1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      col.settle_s.push_back(Seconds(Clock::now() - start));
      if (col.read_sum.empty()) col.read_sum = on_a.out.substr(0, 64);
      else if (col.read_sum != on_a.out.substr(0, 64)) col.read_sum = "differs between rounds";
      // 1,000 small files made on A, awaited on B.
      std::string small = fmt::format("{}/small", base);
      start = Clock::now();
      if (Run(col, fmt::format("mkdir {0} && for i in $(seq 1000); do echo $i > {0}/f$i; done", small)).exit_code != 0)
        return 1;
      if (!AwaitViews(dir, col, fmt::format("t{}/small", r), std::chrono::seconds(120))) return 1;
      col.seconds["1000 files on A, all seen on B"].push_back(Seconds(Clock::now() - start));
    }
  }

  printf("tree_bench: %s (%zu entries, %.0f MiB as a tarball), %d rounds, medians in seconds; data in %s\n",
         kTreeSource, entries, static_cast<double>(std::filesystem::file_size(tarball)) / (1 << 20), rounds,
         dir.path().c_str());
  printf("%-34s", "row");
  for (const Column& col : columns) printf(" %18s", col.name.c_str());
  printf("\n");
  for (const auto& [row, native] : columns[0].seconds) {
    printf("%-34s %18.3f", row.c_str(), Median(native));
    for (size_t c = 1; c < columns.size(); ++c) {
      double s = Median(columns[c].seconds[row]);
      printf("   %7.3f (%5.2fx)", s, s / Median(native));
    }
    printf("\n");
  }
  for (const Column& col : columns)
    if (!col.tar_flags.empty())
      printf("(%s's extract runs tar with%s: it sets no times or owners, less work than the other columns do)\n",
             col.name.c_str(), col.tar_flags.c_str());
  for (size_t c = 1; c < columns.size(); ++c) {
    const Column& col = columns[c];
    std::vector<double> burst = col.burst_s;
    std::sort(burst.begin(), burst.end());
    printf("%s: the commit's .git listed whole on every other node %.3f s (median), %.3f s (max) after git exited\n",
           col.name.c_str(), Median(col.commit_s), *std::max_element(col.commit_s.begin(), col.commit_s.end()));
    if (col.nodes.empty()) {  // sshfs: no agents
      printf("%s: extract listed whole on B's mount %.3f s (median), %.3f s (max) after tar exited; B read the tree "
             "as A held it after %.3f s (median)\n",
             col.name.c_str(), Median(burst), burst.back(), Median(col.settle_s));
      continue;
    }
    printf("%s: agent CPU per extracted file per node: median %.0f us, max %.0f us; extract visible on every other "
           "node %.3f s (median), %.3f s (max) after tar exited\n",
           col.name.c_str(), Median(col.cpu_us_per_file),
           *std::max_element(col.cpu_us_per_file.begin(), col.cpu_us_per_file.end()), Median(burst), burst.back());
    printf("%s: B read the tree as A held it after %.3f s (median; 0 when its first read did)\n", col.name.c_str(),
           Median(col.settle_s));
  }
  // (B's read equals A's in every column: the rounds wait for it.) sshfs's
  // extract keeps no mtimes, and compileall's .pyc files record their
  // sources' mtimes: its tree is not native's.
  bool equal = true;
  for (size_t c = 1; c < columns.size(); ++c) {
    if (!columns[c].tar_flags.empty()) {
      printf("read on B: %s equal to A's read (not comparable to native: extracted with%s)\n",
             columns[c].name.c_str(), columns[c].tar_flags.c_str());
      continue;
    }
    printf("read on B: %s %s native\n", columns[c].name.c_str(),
           columns[c].read_sum == columns[0].read_sum ? "equal to" : "DIFFERS from");
    equal = equal && columns[c].read_sum == columns[0].read_sum;
  }
  return equal ? 0 : 1;
}
