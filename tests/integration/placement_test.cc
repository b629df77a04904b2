// Placement at exec (ONEBOX_PLACE), on three agents each in a node of its
// own (process_cluster.h): make's compiles go to other nodes and come back
// as local children; what they write is everywhere before they exit
// (exit-to-wait); a failing compile and ^C behave as in a local build.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "tests/integration/node_quota.h"
#include "tests/integration/process_cluster.h"

namespace onebox::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Both builds map their own directory to "." in the debug information, so
// that the objects of one tree built in two places are byte for byte alike.
constexpr const char* kMake = "make -j8 CFLAGS=\"-g -O2 -ffile-prefix-map=$PWD=.\"";

// A CMake project over the same sources (the files make would compile:
// sources.txt), for the ninja build.
constexpr const char* kCmakeLists = R"(cmake_minimum_required(VERSION 3.13)
project(iberty C)
file(STRINGS ${CMAKE_SOURCE_DIR}/sources.txt SOURCES)
add_library(iberty STATIC ${SOURCES})
target_include_directories(iberty PRIVATE libiberty include)
target_compile_definitions(iberty PRIVATE HAVE_CONFIG_H _GNU_SOURCE)
target_compile_options(iberty PRIVATE -ffile-prefix-map=${CMAKE_SOURCE_DIR}=. -ffile-prefix-map=${CMAKE_BINARY_DIR}=.)
)";

// SHA-256 of every object and archive under the current directory, by path.
constexpr const char* kSums = "find . -name '*.o' -o -name '*.a' | sort | xargs sha256sum";

// A placed "job" at dir/timed that sleeps `seconds`, then writes into the
// file it is given when it began and ended (the realtime clock: one clock
// for every node of one machine) and the pid namespace it ran in (its node).
void MakeTimedJob(const std::string& dir, double seconds) {
  const std::string tool = dir + "/timed";
  std::ofstream(tool) << fmt::format(
      "#!/bin/sh\nbegan=$(date +%s.%N)\nsleep {}\necho \"$began $(date +%s.%N) $(readlink /proc/self/ns/pid)\" > \"$1\"\n",
      seconds);
  chmod(tool.c_str(), 0755);
}

struct TimedRun {
  double began, ended;
  std::string node;  // its pid namespace
};

// The lines MakeTimedJob's job wrote, one per job.
std::vector<TimedRun> TimedRuns(const std::string& lines) {
  std::vector<TimedRun> runs;
  std::istringstream in(lines);
  TimedRun r;
  while (in >> r.began >> r.ended >> r.node) runs.push_back(r);
  return runs;
}

// The most runs (of node, or of all for "") that ran at one instant.
size_t MostAtOnce(const std::vector<TimedRun>& runs, const std::string& node = "") {
  std::vector<std::pair<double, int>> edges;  // (time, +1 at a start, -1 at an end; ends first at a tie)
  for (const TimedRun& r : runs)
    if (node.empty() || r.node == node) {
      edges.push_back({r.began, 1});
      edges.push_back({r.ended, -1});
    }
  std::sort(edges.begin(), edges.end());
  int now = 0, most = 0;
  for (const auto& [at, step] : edges) most = std::max(most, now += step);
  return static_cast<size_t>(most);
}

class PlacementTest : public ProcessTest {
 protected:
  // Node i's status.
  v1::StatusResponse Status(int i) {
    v1::StatusResponse st;
    RunResult r = Onebox(i, {"status", "-o", "json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &st).ok()) << r.out;
    return st;
  }
  // libiberty unpacked and configured in /cluster/w/lib, and a copy of it
  // in native_ for the local reference build.
  void PrepareTree() {
    const std::string tarball = BinutilsTarball();
    ASSERT_FALSE(tarball.empty()) << "no /usr/src/binutils/binutils-*.tar.xz: install binutils-source "
                                     "(deploy/install-deps.sh does)";
    RunResult prepared = Sh(1, "mkdir lib && cd lib && " + PrepareLibiberty(tarball));
    ASSERT_EQ(prepared.exit_code, 0) << prepared.err;
    RunResult copied = Sh(1, fmt::format("cp -a /cluster/w/lib {}", native_));
    ASSERT_EQ(copied.exit_code, 0) << copied.err;
  }
  // Runs cmd in node 1 under the shim, with `onebox ps` looked at every 100
  // ms meanwhile; expects it to succeed with compiles seen on two nodes or
  // more, and placed ones named with their home.
  void BuildSpread(const std::string& cmd) {
    std::atomic<bool> done{false};
    std::set<std::string> compiling_on;
    size_t compiles_seen = 0, placed_seen = 0;
    std::thread watch([&] {
      while (!done) {
        v1::ListProcessesResponse ps = Ps(1);
        for (const v1::ProcessInfo& p : ps.processes()) {
          const std::string name = p.argv_size() > 0 ? p.argv(0).substr(p.argv(0).rfind('/') + 1) : "";
          bool compile = name == "cc1" || name == "gcc" || name == "cc";
          if (!compile) continue;
          ++compiles_seen;
          compiling_on.insert(p.node());
          // (A driver's own child shows the driver's argv until it execs cc1.)
          placed_seen += p.node() != "n1" && p.home_node() == "n1";
        }
        std::this_thread::sleep_for(milliseconds(100));
      }
    });
    RunResult built = Sh(1, cmd);
    done = true;
    watch.join();
    ASSERT_EQ(built.exit_code, 0) << built.err;
    EXPECT_GE(compiling_on.size(), 2u) << "compiles were seen on " << fmt::format("{}", fmt::join(compiling_on, ", "))
                                       << " only (" << compiles_seen << " seen)";
    EXPECT_GT(placed_seen, 0u) << "onebox ps names the home of the compiles placed on other nodes";
  }
  // Every object and archive below rel (a directory of both trees: native_'s
  // and /cluster/w/lib's), byte for byte alike, at least `outputs` of them.
  void ExpectBuiltAlike(const std::string& rel, long outputs) {
    RunResult here = RunCommand({"bash", "-c", fmt::format("cd {}/{} && {}", native_, rel, kSums)});
    RunResult there = Sh(1, fmt::format("cd lib/{} && {}", rel, kSums));
    ASSERT_EQ(here.exit_code, 0) << here.err;
    ASSERT_EQ(there.exit_code, 0) << there.err;
    EXPECT_GE(std::count(here.out.begin(), here.out.end(), '\n'), outputs) << here.out;
    EXPECT_EQ(there.out, here.out);
  }
  // Counted: placed out by n1, taken in by the others, none running any more.
  void ExpectCounted() {
    v1::StatusResponse home = Status(1);
    EXPECT_GT(home.jobs_placed_out(), 0u);
    EXPECT_EQ(home.jobs_out_now(), 0u);
    EXPECT_EQ(Status(2).jobs_taken_in() + Status(3).jobs_taken_in(), home.jobs_placed_out());
  }

  // Node i's pid namespace, as `readlink /proc/self/ns/pid` names it there.
  std::string PidNamespaceOf(int i) { return RunInNode(Node(i), {"readlink", "/proc/self/ns/pid"}).out; }
  // A program at dir_/name that prints the pid namespace it runs in: its node's.
  std::string WhereTool(const std::string& name) {
    const std::string tool = dir_ / name;
    std::ofstream(tool) << "#!/bin/sh\nreadlink /proc/self/ns/pid\n";
    EXPECT_EQ(chmod(tool.c_str(), 0755), 0);
    return tool;
  }

  const std::string native_ = dir_ / "native";
};

TEST_F(PlacementTest, MakeSpreadsItsCompilesOverTheNodesAndBuildsWhatALocalBuildBuilds) {
  ASSERT_NO_FATAL_FAILURE(PrepareTree());
  RunResult local = RunCommand({"bash", "-c", fmt::format("cd {}/libiberty && {} >/dev/null", native_, kMake)});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  ASSERT_NO_FATAL_FAILURE(BuildSpread(fmt::format("cd lib/libiberty && ONEBOX_PLACE=auto {} >/dev/null", kMake)));
  // Every object and the library, byte for byte as the local build made them.
  ASSERT_NO_FATAL_FAILURE(ExpectBuiltAlike("libiberty", 67));
  ExpectCounted();
}

TEST_F(PlacementTest, NinjaFromCmakeSpreadsItsCompilesAndBuildsWhatALocalBuildBuilds) {
  ASSERT_NO_FATAL_FAILURE(PrepareTree());
  // The sources make would compile, and a CMake project over them, in both trees.
  std::string project = fmt::format(
      "cd libiberty && make -n | grep -o '\\./[a-z0-9_-]*\\.c' | sort -u | sed 's|^\\./|libiberty/|' "
      "> ../sources.txt && cd .. && test $(wc -l < sources.txt) -ge 60 && cat > CMakeLists.txt <<'EOF'\n{}EOF\n"
      "cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null",
      kCmakeLists);
  RunResult made = Sh(1, "cd lib && " + project);
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  RunResult local = RunCommand({"bash", "-c", fmt::format("cd {} && {} && ninja -C build >/dev/null", native_, project)});
  ASSERT_EQ(local.exit_code, 0) << local.out << local.err;
  ASSERT_NO_FATAL_FAILURE(BuildSpread("cd lib && ONEBOX_PLACE=auto ninja -C build -j8 >/dev/null"));
  ASSERT_NO_FATAL_FAILURE(ExpectBuiltAlike("build", 61));
  ExpectCounted();
}

TEST_F(PlacementTest, AFailingPlacedCompileFailsTheBuildWithTheCompilersMessageAndStatus) {
  RunResult failed = Sh(1,
                        "mkdir bad && cd bad && printf 'int main(void) { return undeclared_thing; }\\n' > a.c && "
                        "printf 'a.o: a.c\\n\\tgcc -c a.c -o a.o\\n' > Makefile && ONEBOX_PLACE=n2 make; echo status $?");
  EXPECT_NE(failed.out.find("status 2"), std::string::npos) << failed.out << failed.err;
  EXPECT_NE(failed.err.find("a.c:1:"), std::string::npos) << failed.err;
  EXPECT_NE(failed.err.find("undeclared_thing"), std::string::npos) << failed.err;
  EXPECT_NE(failed.err.find("error:"), std::string::npos) << failed.err;
  EXPECT_EQ(Status(2).jobs_taken_in(), 1u) << "the compile ran on n2, the node named";
  // The same through `onebox exec --place`, which sets ONEBOX_PLACE.
  RunResult exec = RunInNode(Node(1), {OneboxBin(), "--socket", Socket(1), "exec", "--place", "n2", "--", "bash", "-c",
                                       "cd /cluster/w/bad && make; echo status $?"});
  EXPECT_NE(exec.out.find("status 2"), std::string::npos) << exec.out << exec.err;
  EXPECT_EQ(Status(2).jobs_taken_in(), 2u) << "onebox exec --place n2 placed the compile on n2";
  // A job whose directory is outside the cluster runs here, placement or not.
  const uint64_t placed_before = Status(1).jobs_placed_out();
  RunResult outside = RunInNode(Node(1), {"bash", "-c", "cd / && ONEBOX_PLACE=n2 gcc --version >/dev/null; echo $?"},
                                ShimEnv(1));
  EXPECT_EQ(outside.out, "0\n") << outside.err;
  EXPECT_EQ(outside.err.find("placement"), std::string::npos) << outside.err;
  EXPECT_EQ(Status(1).jobs_placed_out(), placed_before);
  EXPECT_EQ(Status(2).jobs_taken_in(), 2u);
}

TEST_F(PlacementTest, EachStepOfAChainOfPlacedStepsReadsTheLastOnesOutputAtOnce) {
  // A program on every node (the test's files are every node's): adds one.
  const std::string step = dir_ / "step";
  {
    std::ofstream(step) << "#!/bin/sh\nn=$(cat \"$1\") || exit 3\necho $((n + 1)) > \"$2\"\n";
  }
  ASSERT_EQ(chmod(step.c_str(), 0755), 0);
  // Steps alternate between n2 and n3; the home reads each result at once.
  constexpr int kSteps = 1000;
  RunResult chain = Sh(1, fmt::format("mkdir chain && cd chain && echo 0 > 0 && "
                                      "for i in $(seq 0 {0}); do j=$((i + 1)); "
                                      "if [ $((i % 2)) = 0 ]; then n=n2; else n=n3; fi; "
                                      "ONEBOX_PLACE=$n ONEBOX_PLACE_PROGRAMS=step {1} $i $j || exit 1; "
                                      "[ \"$(cat $j)\" = $j ] || {{ echo \"miss at $j: $(cat $j)\"; exit 1; }}; "
                                      "done; cat {2}",
                                      kSteps - 1, step, kSteps));
  EXPECT_EQ(chain.exit_code, 0) << chain.out << chain.err;
  EXPECT_EQ(chain.out, fmt::format("{}\n", kSteps)) << chain.err;
  EXPECT_EQ(Status(2).jobs_taken_in(), static_cast<uint64_t>(kSteps / 2));
  EXPECT_EQ(Status(3).jobs_taken_in(), static_cast<uint64_t>(kSteps / 2));
}

TEST_F(PlacementTest, OnlyANodeWhereTheProgramIsTheSameRunsIt) {
  // One program, on every node at one path (the test's files are every
  // node's), but another one on n3: a file mounted over it in n3's mount
  // namespace only.
  const std::string tool = dir_ / "tool", other = dir_ / "other-tool";
  std::ofstream(tool) << "#!/bin/sh\necho same\n";
  std::ofstream(other) << "#!/bin/sh\necho other\n";
  ASSERT_EQ(chmod(tool.c_str(), 0755), 0);
  ASSERT_EQ(chmod(other.c_str(), 0755), 0);
  RunResult mounted = RunInNode(Node(3), {"mount", "--bind", other, tool});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  EXPECT_EQ(RunInNode(Node(3), {tool}).out, "other\n");
  EXPECT_EQ(RunInNode(Node(2), {tool}).out, "same\n");
  // (n3 named first: of two nodes equally loaded, the first named is chosen.)
  RunResult runs = Sh(1, fmt::format("for i in 1 2 3 4 5 6; do ONEBOX_PLACE=n3,n2 ONEBOX_PLACE_PROGRAMS=tool {}; done",
                                     tool));
  EXPECT_EQ(runs.out, "same\nsame\nsame\nsame\nsame\nsame\n") << runs.err;
  EXPECT_EQ(Status(2).jobs_taken_in(), 6u);
  EXPECT_EQ(Status(3).jobs_taken_in(), 0u);
}

TEST_F(PlacementTest, EveryWayOfStartingAProgramPlacesIt) {
  // The program says in which pid namespace it runs: node 2's, when placed there.
  const std::string tool = WhereTool("tool");
  const std::string node2 = PidNamespaceOf(2);
  ASSERT_FALSE(node2.empty());
  // execve (the shell), execvp, posix_spawn, posix_spawnp, system(3) and
  // subprocess (vfork, then exec), each with the tool's directory in PATH.
  RunResult ways = Sh(1, fmt::format(
      "export PATH={}:$PATH ONEBOX_PLACE=n2 ONEBOX_PLACE_PROGRAMS=tool; tool && python3 -c '"
      "import os, subprocess, sys\n"
      "sys.stdout.flush()\n"
      "def wait(pid): os.waitpid(pid, 0)\n"
      "wait(os.posix_spawn(\"{}\", [\"tool\"], os.environ))\n"
      "wait(os.posix_spawnp(\"tool\", [\"tool\"], os.environ))\n"
      "os.system(\"tool\")\n"
      "subprocess.run([\"tool\"])\n"
      "pid = os.fork()\n"
      "if pid == 0: os.execvp(\"tool\", [\"tool\"])\n"
      "wait(pid)\n'",
      dir_.path(), tool));
  EXPECT_EQ(ways.exit_code, 0) << ways.err;
  std::string six;
  for (int i = 0; i < 6; ++i) six += node2;
  EXPECT_EQ(ways.out, six) << ways.err;
  EXPECT_EQ(Status(2).jobs_taken_in(), 6u);
}

TEST_F(PlacementTest, AJobTheChosenNodeCannotStartRunsHereAndThatNodeIsLeftAlone) {
  const std::string bin = dir_ / "fb", empty = dir_ / "empty";
  ASSERT_EQ(mkdir(bin.c_str(), 0755), 0);
  ASSERT_EQ(mkdir(empty.c_str(), 0755), 0);
  const std::string tool = WhereTool("fb/tool");
  const std::string node1 = PidNamespaceOf(1);
  const std::string node2 = PidNamespaceOf(2);
  const std::string run = fmt::format("ONEBOX_PLACE=n2 ONEBOX_PLACE_PROGRAMS=tool {}", tool);
  RunResult first = Sh(1, run);
  EXPECT_EQ(first.out, node2) << first.err;
  // Gone from n2 (its directory covered there), while n1 still holds n2's digest of it.
  ASSERT_EQ(RunInNode(Node(2), {"mount", "--bind", empty, bin}).exit_code, 0);
  RunResult refused = Sh(1, run);
  EXPECT_EQ(refused.exit_code, 0) << refused.err;
  EXPECT_EQ(refused.out, node1) << refused.err;
  EXPECT_NE(refused.err.find("did not start"), std::string::npos) << refused.err;
  RunResult avoided = Sh(1, run);
  EXPECT_EQ(avoided.out, node1) << avoided.err;
  EXPECT_EQ(avoided.err, "") << "n2 is not tried again at once";
  EXPECT_EQ(Status(1).jobs_placed_out(), 1u);
  EXPECT_EQ(Status(1).jobs_out_now(), 0u);
  EXPECT_EQ(Status(2).jobs_taken_in(), 1u);
}

TEST_F(PlacementTest, AHomeWeighsTheJobsOtherHomesPlacedOnANode) {
  const std::string tool = WhereTool("tool");
  // The node n1 sees node `busy` carrying `jobs` placed jobs (gossip's word).
  auto seen_from_n1 = [&](const std::string& busy, uint32_t jobs) {
    return WaitUntil(
        [&] {
          v1::ListNodesResponse listed;
          RunResult r = Onebox(1, {"nodes", "-o", "json"});
          uint32_t seen = 1000;
          if (r.exit_code == 0 && google::protobuf::util::JsonStringToMessage(r.out, &listed).ok())
            for (const v1::Node& n : listed.nodes())
              if (n.name() == busy) seen = n.load().placed_jobs();
          return Observed(seen == jobs, fmt::format("{} placed jobs on {}", seen, busy));
        },
        seconds(10), fmt::format("n1 sees {} placed jobs on {}", jobs, busy));
  };
  // Each way round: the other home (`home`) fills node `busy` (2 jobs, 2
  // CPUs: full), then n1 places 3 jobs on `busy` or `free`: all go to `free`.
  for (auto [home, busy, free] : {std::tuple{3, 2, 3}, std::tuple{2, 3, 2}}) {
    SCOPED_TRACE(fmt::format("n{} busy with n{}'s jobs", busy, home));
    std::vector<std::unique_ptr<NodeProcess>> fill;
    for (int j = 0; j < 2; ++j) {
      fill.push_back(std::make_unique<NodeProcess>(
          Node(home),
          std::vector<std::string>{"bash", "-c",
                                   fmt::format("cd /cluster/w && ONEBOX_PLACE=n{} ONEBOX_PLACE_PROGRAMS=sleep "
                                               "exec sleep 300",
                                               busy)},
          ShimEnv(home)));
      ASSERT_TRUE(fill.back()->ok());
    }
    ASSERT_TRUE(seen_from_n1(Name(busy), 2));
    RunResult placed = Sh(1, fmt::format("for i in 1 2 3; do ONEBOX_PLACE=n2,n3 ONEBOX_PLACE_PROGRAMS=tool {}; done",
                                         tool));
    const std::string ns = PidNamespaceOf(free);
    EXPECT_EQ(placed.out, ns + ns + ns) << placed.err;
    fill.clear();  // the stand-ins killed: their jobs end
    ASSERT_TRUE(seen_from_n1(Name(busy), 0));
  }
}

TEST_F(PlacementTest, ANodeLostUnderAPlacedJobFailsItWithinTenSecondsAndSaysWhich) {
  ASSERT_EQ(Sh(1, "mkdir lost && printf 'all:\n\tsleep 300\n' > lost/Makefile").exit_code, 0);
  NodeProcess make(Node(1),
                   {"bash", "-c", "cd /cluster/w/lost && ONEBOX_PLACE=n3 ONEBOX_PLACE_PROGRAMS=sleep exec make"},
                   ShimEnv(1), dir_ / "make.log");
  ASSERT_TRUE(make.ok()) << make.error();
  ASSERT_TRUE(WaitUntil(
      [&] {
        v1::ListProcessesResponse ps = Ps(1, {"--node", "n3"});
        for (const v1::ProcessInfo& p : ps.processes())
          if (p.home_node() == "n1" && p.argv_size() > 0 && p.argv(0) == "sleep") return true;
        return false;
      },
      seconds(20), "the placed job runs on n3"));
  agents_[2]->Stop(SIGKILL);
  auto begun = std::chrono::steady_clock::now();
  EXPECT_EQ(make.Wait(seconds(12)), 2) << "make fails, as when a job is killed";
  EXPECT_LT(std::chrono::steady_clock::now() - begun, seconds(11));
  std::ifstream log(dir_ / "make.log");
  std::string said((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(said.find("lost node n3"), std::string::npos) << said;
  EXPECT_NE(said.find("Error 255"), std::string::npos) << said;
}

TEST_F(PlacementTest, InterruptingMakeStopsEveryPlacedJob) {
  ASSERT_EQ(Sh(1, "mkdir int && printf 'all: a b c d\\na b c d:\\n\\tsleep 300\\n' > int/Makefile").exit_code, 0);
  // make leads a process group of its own, as a shell with job control starts it.
  NodeProcess make(Node(1),
                   {"bash", "-c",
                    "cd /cluster/w/int && ONEBOX_PLACE=n2,n3 ONEBOX_PLACE_PROGRAMS=sleep exec setsid make -j4"},
                   ShimEnv(1));
  ASSERT_TRUE(make.ok()) << make.error();
  auto placed_sleeps = [&] {
    size_t n = 0;
    const v1::ListProcessesResponse ps = Ps(1);
    for (const v1::ProcessInfo& p : ps.processes())
      n += p.home_node() == "n1" && p.argv_size() > 0 && p.argv(0) == "sleep";
    return n;
  };
  ASSERT_TRUE(WaitUntil([&] { return Observed(placed_sleeps() == 4, "4 placed sleeps"); }, seconds(20),
                        "make's 4 jobs running on n2 and n3"));
  // ^C: SIGINT to make's process group (make and the jobs' stand-ins).
  ASSERT_EQ(kill(-make.pid(), SIGINT), 0) << strerror(errno);
  EXPECT_NE(make.Wait(seconds(10)), 0) << "make ends, as interrupted";
  EXPECT_TRUE(WaitUntil([&] { return Observed(placed_sleeps() == 0, "placed sleeps left"); }, seconds(10),
                        "no placed job left on any node"));
}

TEST_F(PlacementTest, MakesJobserverBoundsThePlacedJobsOfAllItsSubMakesTogether) {
  // make -j3 over two sub-makes of 6 jobs each: the jobserver lets 3 run at
  // once in the whole tree, wherever they are placed. A stand-in that
  // ended before its job would give its slot back early.
  MakeTimedJob(dir_.path(), 1.5);
  std::ofstream(dir_ / "top.mk") << "all: one two\none two: ; +$(MAKE) -s -C $@\n.PHONY: all one two\n";
  std::ofstream(dir_ / "sub.mk") << "all: $(addsuffix .t,1 2 3 4 5 6)\n%.t: ; timed $@\n";
  RunResult made = Sh(1, fmt::format("mkdir -p jobs/one jobs/two && cp {0}/top.mk jobs/Makefile && "
                                     "cp {0}/sub.mk jobs/one/Makefile && cp {0}/sub.mk jobs/two/Makefile",
                                     dir_.path()));
  ASSERT_EQ(made.exit_code, 0) << made.err;
  RunResult built = Sh(1, fmt::format("export PATH={}:$PATH ONEBOX_PLACE=auto ONEBOX_PLACE_PROGRAMS=timed; "
                                      "cd jobs && make -s -j3 && cat one/*.t two/*.t",
                                      dir_.path()));
  ASSERT_EQ(built.exit_code, 0) << built.err;
  const std::vector<TimedRun> runs = TimedRuns(built.out);
  ASSERT_EQ(runs.size(), 12u) << built.out;
  std::set<std::string> nodes;
  for (const TimedRun& r : runs) nodes.insert(r.node);
  EXPECT_GE(nodes.size(), 2u) << "the jobs were placed over the nodes: " << built.out;
  EXPECT_LE(MostAtOnce(runs), 3u) << "make -j3 runs at most 3 jobs at once: " << built.out;
  EXPECT_GE(MostAtOnce(runs), 2u) << "and runs them in parallel: " << built.out;
  EXPECT_EQ(Status(1).jobs_out_now(), 0u);
}

TEST_F(PlacementTest, ALinkThatWantsMakesJobserverRunsWhereTheJobserverIs) {
  // A "compiler" that says where it ran, placed on n2 by name.
  WhereTool("lto-cc");
  const std::string node1 = PidNamespaceOf(1);
  const std::string node2 = PidNamespaceOf(2);
  ASSERT_NE(node1, node2);
  const std::string place = fmt::format("PATH={}:$PATH ONEBOX_PLACE=n2 ONEBOX_PLACE_PROGRAMS=lto-cc", dir_.path());
  // Under make, on a "+" line (make passes its jobserver's pipes on): the
  // link runs here; a compile with the same flags is placed.
  std::ofstream(dir_ / "lto.mk") << "all: ; +@lto-cc -flto=auto -o prog a.o && lto-cc -c -flto=auto a.c\n";
  RunResult made = Sh(1, fmt::format("mkdir -p lto && cp {}/lto.mk lto/Makefile && cd lto && {} make -s -j3", dir_.path(),
                                     place));
  EXPECT_EQ(made.exit_code, 0) << made.err;
  EXPECT_EQ(made.out, node1 + node2) << made.err;
  // A jobserver fifo named in MAKEFLAGS (make 4.4): the same.
  const std::string fifo = dir_ / "jobserver";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const std::string offered = fmt::format("MAKEFLAGS=' -j3 --jobserver-auth=fifo:{}'", fifo);
  EXPECT_EQ(Sh(1, fmt::format("cd lto && {} {} lto-cc -flto=auto -o prog a.o", place, offered)).out, node1);
  EXPECT_EQ(Sh(1, fmt::format("cd lto && {} {} lto-cc -c -flto=jobserver a.c", place, offered)).out, node2);
  // No jobserver at hand (descriptors MAKEFLAGS names that are not open, a
  // fifo that is not there): a link with -flto=auto is placed as any job;
  // -flto=jobserver stays here, where make's jobs run.
  EXPECT_EQ(Sh(1, fmt::format("exec 3>&- 4>&-; cd lto && {} MAKEFLAGS=' -j3 --jobserver-auth=3,4' lto-cc -flto=auto "
                              "-o prog a.o",
                              place))
                .out,
            node2);
  EXPECT_EQ(Sh(1, fmt::format("cd lto && {} MAKEFLAGS=' --jobserver-auth=fifo:/nonexistent' lto-cc -flto -o prog a.o",
                              place))
                .out,
            node2);
  EXPECT_EQ(Sh(1, fmt::format("cd lto && {} lto-cc -flto=jobserver -o prog a.o", place)).out, node1);
  EXPECT_EQ(Status(1).jobs_out_now(), 0u);
}

TEST_F(PlacementTest, ANodeConfinedToPartOfACpuTakesTheJobsThatPartCanRun) {
  // n2's agent, and what it starts, in a cgroup of half a CPU.
  NodeQuota half(fmt::format("{}-placement-n2", getpid()), 0.5);
  std::string why;
  if (!half.Make(&why)) GTEST_SKIP() << "no CPU quota can be made here: " << why;
  ASSERT_TRUE(half.Move(agents_[1]->pid()));
  RunResult mounted = RunInNode(Node(2), {"sh", "-c", half.MountCommand()});
  ASSERT_EQ(mounted.exit_code, 0) << mounted.err;
  ASSERT_TRUE(WaitUntil(
      [&] {
        RunResult r = Onebox(1, {"nodes", "-o", "json"});
        v1::ListNodesResponse listed;
        if (r.exit_code != 0 || !google::protobuf::util::JsonStringToMessage(r.out, &listed).ok())
          return Observed(false, r.err);
        for (const v1::Node& n : listed.nodes())
          if (n.name() == "n2") return Observed(n.load().cpu_quota() == 0.5, r.out);
        return Observed(false, r.out);
      },
      seconds(15), "n1 hears that n2 may use half a CPU"));
  RunResult status = Onebox(2, {"status"});
  EXPECT_NE(status.out.find("(0.50 by its cgroup's quota)"), std::string::npos) << status.out;
  // make -j6 over nodes of 2, 0.5 and 2 CPUs at one job per CPU: n2 takes
  // one job at a time (it would take two by its CPU count).
  MakeTimedJob(dir_.path(), 3);
  std::ofstream(dir_ / "flat.mk") << "all: $(addsuffix .t,1 2 3 4 5 6)\n%.t: ; timed $@\n";
  RunResult built = Sh(1, fmt::format("mkdir -p flat && cp {0}/flat.mk flat/Makefile && export PATH={0}:$PATH "
                                      "ONEBOX_PLACE=auto ONEBOX_PLACE_PROGRAMS=timed; cd flat && make -s -j6 && "
                                      "cat *.t",
                                      dir_.path()));
  ASSERT_EQ(built.exit_code, 0) << built.err;
  const std::vector<TimedRun> runs = TimedRuns(built.out);
  ASSERT_EQ(runs.size(), 6u) << built.out;
  const std::string n2 = PidNamespaceOf(2);
  const std::string n3 = PidNamespaceOf(3);
  ASSERT_FALSE(n2.empty());
  auto trimmed = [](std::string s) { return s.substr(0, s.find('\n')); };
  EXPECT_EQ(MostAtOnce(runs, trimmed(n2)), 1u) << built.out;
  EXPECT_GE(std::count_if(runs.begin(), runs.end(), [&](const TimedRun& r) { return r.node == trimmed(n3); }), 2)
      << "n3, of 2 CPUs, takes two: " << built.out;
}

}  // namespace
}  // namespace onebox::testing
