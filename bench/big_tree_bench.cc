// The agents' cost per file as a tree grows: work whose cost per file grows
// with the number of files the view holds shows as a per-file figure that
// rises with the tree's size. For each size (--files, default 2,000 and
// 20,000 small files in directories of 1,000), side by side: native (a plain
// directory on the same disk) and onebox on 1 and 2 nodes (agents on
// loopback, programs under the shim on node A, the tree under /cluster).
// Rows, in this order on one tree:
//   make     a python3 under the shim makes the files (one byte each)
//   cp -al   a copy of the tree made of hard links
//   mv       the copy renamed
//   rm -rf   both trees removed
// Each row: the program's wall time, and for onebox the agents' CPU from the
// program's start until every node's view shows the result (the other node's
// too) and the agents have settled (together under 1% of a core per node
// for 5 s), per file of the row and per node.
//
//   big_tree_bench [--files 2000,20000]
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace {
using Clock = std::chrono::steady_clock;
using onebox::testing::AgentProcess;
using onebox::testing::CpuSeconds;
using onebox::testing::ProcessEnded;
using onebox::testing::RunResult;
using onebox::testing::TempDir;

struct Column {
  std::string name;
  std::vector<std::unique_ptr<AgentProcess>> nodes;  // empty: native
  std::vector<std::string> views;                    // each node's view of /cluster
  std::string root;                                  // where the rows work
};

// Entries below root (recursively), 0 when it is missing.
size_t CountBelow(const std::string& root) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

bool AgentsAlive(const Column& col) {
  for (const auto& a : col.nodes)
    if (ProcessEnded(a->pid())) return false;
  return true;
}

double AgentsCpu(const Column& col) {
  double s = 0;
  for (const auto& a : col.nodes) s += CpuSeconds(a->pid());
  return s;
}

// Until every node's view holds `want` entries below each of rels (0: rel
// gone), then until the agents use under 1% of a core per node for 5 s:
// anti-entropy's first round after a burst, up to two of its 2 s periods
// after the last write, belongs to the row (at most 120 s in all).
bool Settle(const Column& col, const std::vector<std::string>& rels, size_t want) {
  const auto give_up = Clock::now() + std::chrono::seconds(120);
  auto shows = [&](const std::string& path) {
    return want == 0 ? !std::filesystem::exists(path) : CountBelow(path) == want;
  };
  for (const std::string& view : col.views) {
    for (const std::string& rel : rels) {
      while (!shows(view + "/" + rel)) {
        if (Clock::now() > give_up || !AgentsAlive(col)) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  constexpr auto kQuiet = std::chrono::seconds(5);
  for (double before = AgentsCpu(col);;) {
    std::this_thread::sleep_for(kQuiet);
    const double now = AgentsCpu(col);
    if (!AgentsAlive(col)) return false;
    if (now - before < 0.01 * std::chrono::duration<double>(kQuiet).count() * static_cast<double>(col.nodes.size()))
      return true;
    if (Clock::now() > give_up) return false;
    before = now;
  }
}

struct Row {
  std::string name, cmd;            // ROOT in cmd: the column's root
  std::vector<std::string> rels;    // what the views must show after it
  size_t want;                      // entries below each of rels (0: gone)
  size_t files;                     // files the row works on, for the per-file figure
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes{2000, 20000};
  CLI::App app{"The agents' cost per file as a tree grows: make, cp -al, mv and rm -rf of trees of each size"};
  app.add_option("--files", sizes, "sizes of the trees, in files")
      ->delimiter(',')
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  TempDir dir;
  std::vector<Column> columns(1);
  columns[0].name = "native";
  columns[0].root = dir / "native";
  std::filesystem::create_directories(columns[0].root);
  for (size_t n : {1u, 2u}) {
    Column col;
    col.name = fmt::format("onebox {} node{}", n, n > 1 ? "s" : "");
    col.root = "/cluster";
    for (size_t i = 0; i < n; ++i) {
      const std::string name = fmt::format("n{}-{}", n, i);
      col.nodes.push_back(
          onebox::testing::QuietLoopbackAgent(dir.path(), name, i == 0 ? "" : col.nodes[0]->address()));
      if (!col.nodes.back()->Start()) return 1;
      col.views.push_back(dir / (name + "-data/view/cluster"));
    }
    std::vector<AgentProcess*> agents;
    for (auto& a : col.nodes) agents.push_back(a.get());
    if (!onebox::testing::WaitForPagesCounting(agents, static_cast<int64_t>(n - 1))) return 1;
    columns.push_back(std::move(col));
  }

  printf("seconds of the program (x native); agents' CPU until settled, us per file per node\n");
  printf("%-8s %7s | %8s | %-24s | %-24s\n", "row", "files", "native", columns[1].name.c_str(),
         columns[2].name.c_str());
  for (size_t files : sizes) {
    const size_t dirs = (files + 999) / 1000;
    const size_t below = files + dirs;  // entries below the tree's top
    const std::vector<Row> rows = {
        {"make",
         fmt::format("python3 -c \"import os\nfor d in range({0}): os.makedirs(f'ROOT/t/d{{d}}')\nfor i in range({1}):\n"
                     "  with open(f'ROOT/t/d{{i//1000}}/f{{i}}', 'w') as f: f.write('x')\"",
                     dirs, files),
         {"t"}, below, files},
        {"cp -al", "cp -al ROOT/t ROOT/t2", {"t2"}, below, files},
        {"mv", "mv ROOT/t2 ROOT/t3", {"t3"}, below, files},
        {"rm -rf", "rm -rf ROOT/t ROOT/t3", {"t", "t3"}, 0, 2 * files},
    };
    for (const Row& row : rows) {
      std::string line = fmt::format("{:<8} {:>7} |", row.name, row.files);
      double native_s = 0;
      for (Column& col : columns) {
        std::string cmd = row.cmd;
        for (size_t at = cmd.find("ROOT"); at != std::string::npos; at = cmd.find("ROOT", at + col.root.size()))
          cmd.replace(at, 4, col.root);
        const double cpu_before = AgentsCpu(col);
        const auto start = Clock::now();
        RunResult r = col.nodes.empty() ? onebox::testing::RunCommand({"bash", "-c", cmd})
                                        : onebox::testing::Shell(*col.nodes[0], cmd);
        const double s = std::chrono::duration<double>(Clock::now() - start).count();
        if (r.exit_code != 0) {
          fprintf(stderr, "big_tree_bench: %s, %s: exited %d: %s\n", col.name.c_str(), row.name.c_str(), r.exit_code,
                  r.err.c_str());
          return 1;
        }
        if (col.nodes.empty()) {
          native_s = s;
          line += fmt::format(" {:>8.3f} |", s);
          continue;
        }
        if (!Settle(col, row.rels, row.want)) {
          fprintf(stderr, "big_tree_bench: %s, %s: %s\n", col.name.c_str(), row.name.c_str(),
                  AgentsAlive(col) ? "the views did not show it within 120 s" : "an agent died");
          return 1;
        }
        const double us = (AgentsCpu(col) - cpu_before) * 1e6 / static_cast<double>(row.files) /
                          static_cast<double>(col.nodes.size());
        line += fmt::format(" {:>7.3f} ({:>5.1f}x) {:>6.0f} us |", s, s / std::max(1e-3, native_s), us);
      }
      printf("%s\n", line.c_str());
      fflush(stdout);
    }
  }
  return 0;
}
