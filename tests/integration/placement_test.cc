// Placement at exec (ONEBOX_PLACE), on three agents each in a node of its
// own (process_cluster.h): make's compiles go to other nodes and come back
// as local children; what they write is everywhere before they exit
// (exit-to-wait); a failing compile and ^C behave as in a local build.
#include <gtest/gtest.h>
#include <glob.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "tests/integration/process_cluster.h"

namespace onebox::testing {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// The GNU libiberty sources of Debian's binutils-source (66 C files, a
// generated configure, a plain Makefile): "" when the package is missing.
std::string BinutilsTarball() {
  glob_t found{};
  std::string path;
  if (glob("/usr/src/binutils/binutils-*.tar.xz", 0, nullptr, &found) == 0 && found.gl_pathc > 0)
    path = found.gl_pathv[0];
  globfree(&found);
  return path;
}

// The commands that unpack and configure libiberty in the current directory.
std::string PrepareLibiberty(const std::string& tarball) {
  std::string top = tarball.substr(tarball.rfind('/') + 1);
  top = top.substr(0, top.find(".tar"));
  return fmt::format(
      "tar --strip-components=1 -xJf {0} {1}/libiberty {1}/include {1}/install-sh {1}/config.guess "
      "{1}/config.sub {1}/move-if-change && cd libiberty && CC=gcc ./configure >configure.out 2>&1 && "
      "make stamp-h >/dev/null",
      tarball, top);
}

// Both builds map their own directory to "." in the debug information, so
// that the objects of one tree built in two places are byte for byte alike.
constexpr const char* kMake = "make -j8 CFLAGS=\"-g -O2 -ffile-prefix-map=$PWD=.\"";

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
};

TEST_F(PlacementTest, MakeSpreadsItsCompilesOverTheNodesAndBuildsWhatALocalBuildBuilds) {
  const std::string tarball = BinutilsTarball();
  ASSERT_FALSE(tarball.empty()) << "no /usr/src/binutils/binutils-*.tar.xz: install binutils-source "
                                   "(deploy/install-deps.sh does)";
  RunResult prepared = Sh(1, "mkdir lib && cd lib && " + PrepareLibiberty(tarball));
  ASSERT_EQ(prepared.exit_code, 0) << prepared.err;
  // The same configured tree, built natively for reference.
  const std::string native = dir_ / "native";
  RunResult copied = Sh(1, fmt::format("cp -a /cluster/w/lib {}", native));
  ASSERT_EQ(copied.exit_code, 0) << copied.err;
  RunResult local = RunCommand({"bash", "-c", fmt::format("cd {}/libiberty && {} >/dev/null", native, kMake)});
  ASSERT_EQ(local.exit_code, 0) << local.err;

  // The cluster build, with `onebox ps` looked at meanwhile: compiles on which nodes.
  std::atomic<bool> done{false};
  std::set<std::string> compiling_on;
  size_t compiles_seen = 0, placed_seen = 0;
  std::thread watch([&] {
    while (!done) {
      v1::ListProcessesResponse ps = Ps(1);
      for (const v1::ProcessInfo& p : ps.processes()) {
        bool compile = p.argv_size() > 0 && (p.argv(0).ends_with("/cc1") || p.argv(0) == "gcc");
        if (!compile) continue;
        ++compiles_seen;
        compiling_on.insert(p.node());
        // (A driver's own child shows the driver's argv until it execs cc1.)
        placed_seen += p.node() != "n1" && p.home_node() == "n1";
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
  });
  RunResult built = Sh(1, fmt::format("cd lib/libiberty && ONEBOX_PLACE=auto {} >/dev/null", kMake));
  done = true;
  watch.join();
  ASSERT_EQ(built.exit_code, 0) << built.err;
  EXPECT_GE(compiling_on.size(), 2u) << "compiles were seen on " << fmt::format("{}", fmt::join(compiling_on, ", "))
                                     << " only (" << compiles_seen << " seen)";
  EXPECT_GT(placed_seen, 0u) << "onebox ps names the home of the compiles placed on other nodes";

  // Every object and the library, byte for byte as the local build made them.
  const std::string sums = "sha256sum *.o libiberty.a | sort -k2";
  RunResult here = RunCommand({"bash", "-c", fmt::format("cd {}/libiberty && {}", native, sums)});
  RunResult there = Sh(1, "cd lib/libiberty && " + sums);
  ASSERT_EQ(here.exit_code, 0) << here.err;
  ASSERT_EQ(there.exit_code, 0) << there.err;
  EXPECT_GE(std::count(here.out.begin(), here.out.end(), '\n'), 67) << here.out;
  EXPECT_EQ(there.out, here.out);

  // Counted: placed out by n1, taken in by the others.
  v1::StatusResponse home = Status(1);
  EXPECT_GT(home.jobs_placed_out(), 0u);
  EXPECT_EQ(home.jobs_out_now(), 0u);
  EXPECT_EQ(Status(2).jobs_taken_in() + Status(3).jobs_taken_in(), home.jobs_placed_out());
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
  // A job whose directory is outside the cluster runs here, placement or not.
  RunResult outside = RunInNode(Node(1), {"bash", "-c", "cd / && ONEBOX_PLACE=n2 gcc --version >/dev/null; echo $?"},
                                ShimEnv(1));
  EXPECT_EQ(outside.out, "0\n") << outside.err;
  EXPECT_EQ(Status(2).jobs_taken_in(), 1u);
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

}  // namespace
}  // namespace onebox::testing
