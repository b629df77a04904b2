// Process benchmarks, two agents on loopback (A and B), against what a user
// would otherwise pick: a local fork + exec, and ssh to a sshd of the bench's
// own on a loopback port (throwaway keys; openssh-server installed with
// apt-get when /usr/sbin/sshd is missing).
//  P7  remote start, p50/p99 over N starts each, alternating: posix_spawn +
//      waitpid of `true`; `onebox --socket A run --node b -- true`; `ssh
//      root@127.0.0.1 true`. Then where onebox's time goes: the CLI alone
//      (`onebox --version`), `true` under B's shim started locally, and a run
//      that A serves itself (no hop to B).
//  P7b relay throughput: `cat FILE` of a 512 MiB file (tmpfs), plainly,
//      through `onebox run --node b` and through ssh; the bench reads the
//      output from a pipe, counts it and throws it away. Best of 3.
// Without sshd (no apt, say) the ssh rows say why and the rest still runs.
//
//   process_bench [--runs N] [--mib M] [--dir DIR]   (DIR holds the file; default /dev/shm)
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bench/peers.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

extern char** environ;

namespace {
using Clock = std::chrono::steady_clock;
using onebox::testing::AgentProcess;
using onebox::bench::LoopbackSshd;
using onebox::bench::Reap;
using onebox::bench::Tail;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// One program started with posix_spawnp: standard input /dev/null, standard
// output to out_fd (or /dev/null), standard error appended to err_log; the
// environment is ours with `extra` added. Returns the pid, or -1.
pid_t Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra, int out_fd,
            const std::string& err_log) {
  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string v = *e;
    if (!extra.count(v.substr(0, v.find('=')))) env_text.push_back(v);
  }
  for (const auto& [k, v] : extra) env_text.push_back(k + "=" + v);
  std::vector<char*> args, envp;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (std::string& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  else posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, err_log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// A failed measure ends the bench through main, so that the agents, sshd,
// the temp dir and the big file go as after a run.
[[noreturn]] void Fail(const std::vector<std::string>& argv, int code, const std::string& err_log) {
  std::string cmd;
  for (const std::string& a : argv) cmd += " " + a;
  throw std::runtime_error(fmt::format("exit {} from{}\n{}", code, cmd, Tail(err_log)));
}

// Milliseconds from the start of argv to its reaping (exit 0 required).
double TimedStart(const std::vector<std::string>& argv, const std::map<std::string, std::string>& extra,
                  const std::string& err_log) {
  auto t0 = Clock::now();
  pid_t pid = Spawn(argv, extra, -1, err_log);
  int code = pid > 0 ? Reap(pid) : -1;
  double ms = Ms(Clock::now() - t0);
  if (code != 0) Fail(argv, code, err_log);
  return ms;
}

// Seconds to run argv with its output read from a pipe and thrown away; the
// output must be `want` bytes long and the exit 0.
double TimedDrain(const std::vector<std::string>& argv, uint64_t want, const std::string& err_log) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error(fmt::format("pipe: {}", strerror(errno)));
  auto t0 = Clock::now();
  pid_t pid = Spawn(argv, {}, p[1], err_log);
  close(p[1]);
  std::vector<char> buf(1 << 20);
  uint64_t got = 0;
  for (ssize_t n; (n = read(p[0], buf.data(), buf.size())) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    got += static_cast<uint64_t>(n);
  }
  close(p[0]);
  int code = pid > 0 ? Reap(pid) : -1;
  double s = Ms(Clock::now() - t0) / 1000;
  if (code != 0) Fail(argv, code, err_log);
  if (got != want) throw std::runtime_error(fmt::format("{} gave {} bytes, not {}", argv[0], got, want));
  return s;
}

bool WriteBig(const std::string& path, uint64_t bytes) {  // incompressible: xorshift
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::string block(1 << 20, '\0');
  uint64_t x = 88172645463325252ULL;
  for (uint64_t off = 0; off < bytes; off += block.size()) {
    for (size_t i = 0; i < block.size(); i += 8) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      memcpy(block.data() + i, &x, 8);
    }
    if (write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) return false;
  }
  return close(fd) == 0;
}

double Pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(v.size() * p))];
}

void StartRow(const char* name, const std::vector<double>& ms, const char* goal) {
  printf("%-60s %8.2f %8.2f   %s\n", name, Pct(ms, 0.5), Pct(ms, 0.99), goal);
}

}  // namespace

int Bench(int argc, char** argv) {
  int runs = 200;
  uint64_t mib = 512;
  std::string file_dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  CLI::App app{"Processes (P7, P7b): a remote start and its output relayed, beside a local start and ssh"};
  app.add_option("--runs", runs, "starts of each kind")->check(CLI::Range(1, 1000000))->capture_default_str();
  app.add_option("--mib", mib, "MiB of the file cat relays")->check(CLI::Range(1, 65536))->capture_default_str();
  app.add_option("--dir", file_dir, "where that file goes")
      ->check(CLI::ExistingDirectory)
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  onebox::testing::TempDir dir;
  std::string errors = dir / "stderr.log";  // the timed programs' standard error

  std::string ssh_missing;
  LoopbackSshd sshd(dir.path());
  bool have_ssh = sshd.Start(&ssh_missing);

  auto a = onebox::testing::QuietLoopbackAgent(dir.path(), "a", "");
  if (auto ok = a->Start(); !ok) {
    fprintf(stderr, "%s\n", ok.message());
    return 1;
  }
  auto b = onebox::testing::QuietLoopbackAgent(dir.path(), "b", a->address());
  if (auto ok = b->Start(); !ok) {
    fprintf(stderr, "%s\n", ok.message());
    return 1;
  }
  const std::string onebox = onebox::testing::OneboxBin();
  if (onebox::testing::RunCommand({onebox, "--socket", a->socket(), "exec", "--", "mkdir", "-p", "/cluster/bench"})
          .exit_code != 0) {
    fprintf(stderr, "process_bench: mkdir /cluster/bench through A failed\n");
    return 1;
  }
  auto run_on = [&](const std::string& node, const std::vector<std::string>& cmd) {
    std::vector<std::string> argv{onebox, "--socket", a->socket(), "run", "--node", node, "--cwd", "/cluster/bench", "--"};
    argv.insert(argv.end(), cmd.begin(), cmd.end());
    return argv;
  };
  // Until A knows B and B's view has the directory; the program must run
  // under B's shim (its ONEBOX_SOCKET is B's).
  onebox::testing::RunResult where;
  if (!onebox::testing::WaitUntil(
          [&] {
            where = onebox::testing::RunCommand(run_on("b", {"sh", "-c", "echo $ONEBOX_SOCKET"}));
            return where.exit_code == 0;
          },
          std::chrono::seconds(30), "a run on B works")) {
    fprintf(stderr, "process_bench: a run on B never worked: %s\n", where.err.c_str());
    return 1;
  }
  if (where.out != b->socket() + "\n") {
    fprintf(stderr, "process_bench: the run did not run under B's agent: %s\n", where.out.c_str());
    return 1;
  }

  // P7: starts, alternating so that drift in the machine's load hits each alike.
  const std::vector<std::string> local_true{"/bin/true"}, onebox_true = run_on("b", {"true"});
  const std::vector<std::string> cli_alone{onebox, "--version"}, self_run = run_on("a", {"true"});
  const std::map<std::string, std::string> under_b_shim{{"LD_PRELOAD", onebox::testing::ShimLib()},
                                                         {"ONEBOX_SOCKET", b->socket()}};
  std::vector<double> local_ms, onebox_ms, ssh_ms, cli_ms, shim_ms, self_ms;
  for (int i = 0; i < 5; ++i) {  // warm: page cache, gRPC channel A -> B
    TimedStart(onebox_true, {}, errors);
    TimedStart(self_run, {}, errors);
  }
  for (int i = 0; i < runs; ++i) {
    local_ms.push_back(TimedStart(local_true, {}, errors));
    onebox_ms.push_back(TimedStart(onebox_true, {}, errors));
    if (have_ssh) ssh_ms.push_back(TimedStart(sshd.Ssh({"true"}), {}, errors));
    cli_ms.push_back(TimedStart(cli_alone, {}, errors));
    shim_ms.push_back(TimedStart(local_true, under_b_shim, errors));
    self_ms.push_back(TimedStart(self_run, {}, errors));
  }
  printf("process_bench: agents A and B on loopback; %d starts of each, alternating; ", runs);
  if (have_ssh) printf("sshd of its own on 127.0.0.1:%d (%s)\n", sshd.port(), sshd.algorithms().c_str());
  else printf("no ssh: %s\n", ssh_missing.c_str());
  printf("%-60s %8s %8s   %s\n", "benchmark", "p50 ms", "p99 ms", "goal");
  StartRow("P7 local start: posix_spawn + waitpid of true", local_ms, "");
  StartRow("P7 onebox run --node b -- true (CLI -> A -> B)", onebox_ms, "p50 <= 5 ms");
  if (have_ssh) StartRow("P7 ssh root@127.0.0.1 true", ssh_ms, "");
  else printf("%-60s   (no ssh: %s)\n", "P7 ssh root@127.0.0.1 true", ssh_missing.c_str());
  double onebox_p50 = Pct(onebox_ms, 0.5);
  printf("%-60s %7.1fx slower than a local start\n", "P7 onebox p50 / local p50", onebox_p50 / Pct(local_ms, 0.5));
  if (have_ssh)
    printf("%-60s %7.1fx faster   goal >= 10x\n", "P7 ssh p50 / onebox p50", Pct(ssh_ms, 0.5) / onebox_p50);
  printf("where onebox's start goes (the same alternation):\n");
  StartRow("  onebox --version (front, then onebox-core: gRPC loaded)", cli_ms, "");
  StartRow("  true under B's shim, started here (B's fork + exec)", shim_ms, "");
  StartRow("  onebox run --node a -- true (A runs it: no hop to B)", self_ms, "");

  // P7b: one file, read three ways, best of 3, alternating.
  uint64_t bytes = mib << 20;
  std::string file = fmt::format("{}/process-bench-{}.bin", file_dir, getpid());
  struct Unlink {
    std::string path;
    ~Unlink() { unlink(path.c_str()); }
  } remove_file{file};
  if (!WriteBig(file, bytes)) {
    fprintf(stderr, "process_bench: cannot write %s\n", file.c_str());
    return 1;
  }
  const std::vector<std::string> cat_plain{"cat", file}, cat_onebox = run_on("b", {"cat", file});
  double plain_s = 1e300, onebox_s = 1e300, ssh_s = 1e300;
  for (int i = 0; i < 3; ++i) {
    plain_s = std::min(plain_s, TimedDrain(cat_plain, bytes, errors));
    onebox_s = std::min(onebox_s, TimedDrain(cat_onebox, bytes, errors));
    if (have_ssh) ssh_s = std::min(ssh_s, TimedDrain(sshd.Ssh({"cat", file}), bytes, errors));
  }
  double mb = static_cast<double>(bytes) / 1e6;
  printf("\n%-60s %8s %8s   %s\n",
         fmt::format("benchmark ({} MiB in {}, read from a pipe; best of 3)", mib, file_dir).c_str(), "MB/s",
         "vs cat", "goal");
  printf("%-60s %8.0f %7.2fx\n", "P7b cat FILE", mb / plain_s, 1.0);
  printf("%-60s %8.0f %7.2fx   >= ssh\n", "P7b onebox run --node b -- cat FILE", mb / onebox_s, plain_s / onebox_s);
  if (have_ssh) {
    printf("%-60s %8.0f %7.2fx\n", "P7b ssh root@127.0.0.1 cat FILE", mb / ssh_s, plain_s / ssh_s);
    printf("%-60s %7.2fx        goal >= 1x\n", "P7b onebox MB/s / ssh MB/s", ssh_s / onebox_s);
  } else {
    printf("%-60s   (no ssh: %s)\n", "P7b ssh root@127.0.0.1 cat FILE", ssh_missing.c_str());
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return Bench(argc, argv);
  } catch (const std::exception& e) {
    fprintf(stderr, "process_bench: %s\n", e.what());
    return 1;
  }
}
