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
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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

#include <fmt/format.h>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

extern char** environ;

namespace {
using Clock = std::chrono::steady_clock;
using onebox::testing::AgentProcess;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string Tail(const std::string& path, size_t bytes = 2000) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  std::string all = s.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

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

int Reap(pid_t pid) {
  int status = 0;
  if (onebox::testing::WaitFor(pid, &status, 0) != pid) return -1;
  return onebox::testing::ExitCodeOf(status);
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

int FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

// A sshd of the bench's own on 127.0.0.1: host and client keys, config and
// pid file in dir; stopped by its pid.
class LoopbackSshd {
 public:
  explicit LoopbackSshd(std::string dir) : dir_(std::move(dir)) {}
  ~LoopbackSshd() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      Reap(pid_);
    }
  }
  // Installs openssh-server if need be, starts sshd, and waits until `ssh
  // true` works. False, with why, if it cannot.
  bool Start(std::string* why);
  std::vector<std::string> Ssh(const std::vector<std::string>& remote) const {
    std::vector<std::string> argv{"ssh", "-p", std::to_string(port_), "-i", dir_ + "/client_key", "-o",
                                  "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
                                  "BatchMode=yes", "-o", "LogLevel=ERROR", "root@127.0.0.1"};
    argv.insert(argv.end(), remote.begin(), remote.end());
    return argv;
  }
  int port() const { return port_; }
  // Key exchange and cipher, as `ssh -v` names them.
  const std::string& algorithms() const { return algorithms_; }

 private:
  std::string dir_, algorithms_;
  int port_ = -1;
  pid_t pid_ = -1;
};

bool LoopbackSshd::Start(std::string* why) {
  using onebox::testing::RunCommand;
  if (access("/usr/sbin/sshd", X_OK) != 0) {
    printf("process_bench: /usr/sbin/sshd is missing: apt-get update, then apt-get install openssh-server\n");
    fflush(stdout);
    if (system("apt-get update -qq >/dev/null 2>&1") != 0 ||
        system("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server "
               ">/dev/null 2>&1") != 0 ||
        access("/usr/sbin/sshd", X_OK) != 0) {
      *why = "apt-get could not install openssh-server (no network?)";
      return false;
    }
  }
  if (access("/usr/bin/ssh", X_OK) != 0 || access("/usr/bin/ssh-keygen", X_OK) != 0) {
    *why = "no ssh or ssh-keygen in /usr/bin";
    return false;
  }
  for (const char* key : {"host_key", "client_key"}) {
    auto r = RunCommand({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "process_bench", "-f", dir_ + "/" + key});
    if (r.exit_code != 0) {
      *why = "ssh-keygen: " + r.err;
      return false;
    }
  }
  if (RunCommand({"cp", dir_ + "/client_key.pub", dir_ + "/authorized_keys"}).exit_code != 0) {
    *why = "cannot write authorized_keys";
    return false;
  }
  port_ = FreeLoopbackPort();
  std::string config = dir_ + "/sshd_config";
  std::ofstream(config) << fmt::format(
      "ListenAddress 127.0.0.1\nPort {}\nHostKey {}/host_key\nAuthorizedKeysFile {}/authorized_keys\n"
      "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
      "UsePAM no\nStrictModes no\nPidFile {}/sshd.pid\nSetEnv HOME={}/ssh-home\n",
      port_, dir_, dir_, dir_, dir_);
  // The session's HOME is an empty directory: the command still runs
  // through root's shell (bash -c), but without root's own ~/.bashrc, which
  // on a developer's machine may start anything (on this VM, pyenv init:
  // about 100 ms and more per session), and is no part of what ssh costs.
  mkdir((dir_ + "/ssh-home").c_str(), 0700);
  mkdir("/run/sshd", 0755);  // sshd's privilege separation directory
  std::string log = dir_ + "/sshd.log";
  int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  onebox::testing::ExecSpec spec({"/usr/sbin/sshd", "-D", "-f", config, "-e"}, {});
  pid_t parent = getpid();
  pid_ = fork();
  if (pid_ == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // gone with the bench, even one that crashed
    if (getppid() != parent) _exit(1);
    dup2(log_fd, 2);
    spec.Exec();
  }
  close(log_fd);
  onebox::testing::RunResult last;
  auto works = [&] {
    last = RunCommand(Ssh({"true"}));
    return last.exit_code == 0;
  };
  if (!onebox::testing::WaitUntil(works, std::chrono::seconds(15), "ssh works")) {
    *why = fmt::format("ssh to the bench's sshd failed: {}; sshd said: {}", last.err, Tail(log, 600));
    return false;
  }
  std::vector<std::string> verbose = Ssh({"true"});
  verbose.insert(verbose.begin() + 1, "-v");
  std::string err = RunCommand(verbose).err;
  auto after = [&](const std::string& label) {  // "debug1: kex: algorithm: sntrup761x25519-sha512"
    size_t at = err.find(label);
    if (at == std::string::npos) return std::string("?");
    at += label.size();
    return err.substr(at, err.find_first_of(" \r\n", at) - at);
  };
  algorithms_ = after("kex: algorithm: ") + ", " + after("server->client cipher: ");
  return true;
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
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--runs") runs = std::stoi(argv[i + 1]);
    else if (a == "--mib") mib = std::stoull(argv[i + 1]);
    else if (a == "--dir") file_dir = argv[i + 1];
    else {
      fprintf(stderr, "usage: process_bench [--runs N] [--mib M] [--dir DIR]\n");
      return 2;
    }
  }
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
