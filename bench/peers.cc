#include "bench/peers.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include <fmt/format.h>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace onebox::bench {

using onebox::testing::RunCommand;

std::string Tail(const std::string& path, size_t bytes) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  std::string all = s.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
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

int Reap(pid_t pid) {
  int status = 0;
  if (onebox::testing::WaitFor(pid, &status, 0) != pid) return -1;
  return onebox::testing::ExitCodeOf(status);
}

bool InstallIfMissing(const std::string& binary, const std::string& package, std::string* why) {
  if (access(binary.c_str(), X_OK) == 0) return true;
  printf("%s is missing: apt-get update, then apt-get install %s\n", binary.c_str(), package.c_str());
  fflush(stdout);
  if (system("apt-get update -qq >/dev/null 2>&1") != 0 ||
      system(fmt::format("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends {} "
                         ">/dev/null 2>&1",
                         package)
                 .c_str()) != 0 ||
      access(binary.c_str(), X_OK) != 0) {
    *why = fmt::format("apt-get could not install {} (no network?)", package);
    return false;
  }
  return true;
}

pid_t StartDaemon(const std::vector<std::string>& argv, const std::string& log,
                  const std::map<std::string, std::string>& env, bool own_group) {
  int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return -1;
  onebox::testing::ExecSpec spec(argv, env);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // gone with the bench, even one that crashed
    if (getppid() != parent) _exit(1);
    if (own_group) setpgid(0, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    spec.Exec();
  }
  close(log_fd);
  return pid;
}

void StopDaemon(pid_t* pid) {
  if (*pid <= 0) return;
  kill(*pid, SIGTERM);
  Reap(*pid);
  *pid = -1;
}

namespace {

// The handler's list: written before the handler may read an entry, never
// freed (a handler on another thread may be reading it).
constexpr int kMaxUndos = 32;
char** undo_argv[kMaxUndos];
std::atomic<bool> undo_live[kMaxUndos];
std::atomic<int> undo_count{0};

std::atomic<bool> undoing{false};

extern "C" void RunUndosThenDie(int sig) {
  // (The mask blocks a second signal only on this thread: one on another
  // thread waits here, and dies of the first's raise.)
  if (undoing.exchange(true))
    for (;;) pause();
  const int saved = errno;
  for (int i = undo_count.load() - 1; i >= 0; --i) {
    if (!undo_live[i].exchange(false)) continue;
    const pid_t pid = _Fork();  // (fork is not async-signal-safe in glibc: its atfork handlers, malloc's locks)
    if (pid == 0) {
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);  // the handler's mask is no undo's
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      execve(undo_argv[i][0], undo_argv[i], environ);
      _exit(127);
    }
    int status;
    while (pid > 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR) continue;
  }
  signal(sig, SIG_DFL);
  errno = saved;
  raise(sig);
}

// argv[0] as execve takes it: a path, found on PATH (not in the handler: execvp may allocate).
std::string OnPath(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');)
    if (std::string at = dir + "/" + program; access(at.c_str(), X_OK) == 0) return at;
  return "";
}

}  // namespace

int UndoOnSignal(const std::vector<std::string>& argv) {
  static std::once_flag handlers;
  std::call_once(handlers, [] {
    struct sigaction sa {};
    sa.sa_handler = RunUndosThenDie;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, sig);  // (on this thread)
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  });
  const int at = undo_count.load();
  const std::string program = argv.empty() ? "" : OnPath(argv[0]);
  if (at >= kMaxUndos || program.empty()) return -1;
  char** copy = new char*[argv.size() + 1];
  copy[0] = strdup(program.c_str());
  for (size_t i = 1; i < argv.size(); ++i) copy[i] = strdup(argv[i].c_str());
  copy[argv.size()] = nullptr;
  undo_argv[at] = copy;
  undo_live[at] = true;
  undo_count = at + 1;  // (after the entry: the handler reads up to the count)
  return at;
}

void UndoneAlready(int handle) {
  if (handle >= 0 && handle < kMaxUndos) undo_live[handle] = false;
}

std::vector<std::string> LoopbackSshd::Ssh(const std::vector<std::string>& remote) const {
  std::vector<std::string> argv{"ssh", "-p", std::to_string(port_), "-i", client_key_, "-o",
                                "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o",
                                "BatchMode=yes", "-o", "LogLevel=ERROR", "root@127.0.0.1"};
  argv.insert(argv.end(), remote.begin(), remote.end());
  return argv;
}

bool LoopbackSshd::Start(std::string* why) {
  if (!InstallIfMissing("/usr/sbin/sshd", "openssh-server", why)) return false;
  if (access("/usr/bin/ssh", X_OK) != 0 || access("/usr/bin/ssh-keygen", X_OK) != 0) {
    *why = "no ssh or ssh-keygen in /usr/bin";
    return false;
  }
  for (const char* key : {"host_key", "client_key"}) {
    auto r = RunCommand({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "onebox-bench", "-f", dir_ + "/" + key});
    if (r.exit_code != 0) {
      *why = "ssh-keygen: " + r.err;
      return false;
    }
  }
  client_key_ = dir_ + "/client_key";
  if (RunCommand({"cp", dir_ + "/client_key.pub", dir_ + "/authorized_keys"}).exit_code != 0) {
    *why = "cannot write authorized_keys";
    return false;
  }
  port_ = FreeLoopbackPort();
  std::string config = dir_ + "/sshd_config";
  std::ofstream(config) << fmt::format(
      "ListenAddress 127.0.0.1\nPort {}\nHostKey {}/host_key\nAuthorizedKeysFile {}/authorized_keys\n"
      "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
      "UsePAM no\nStrictModes no\nPidFile {}/sshd.pid\nSetEnv HOME={}/ssh-home\n"
      "Subsystem sftp internal-sftp\n",
      port_, dir_, dir_, dir_, dir_);
  // The session's HOME is an empty directory: the command still runs
  // through root's shell (bash -c), but without root's own ~/.bashrc, which
  // on a developer's machine may start anything (on this VM, pyenv init:
  // about 100 ms and more per session), and is no part of what ssh costs.
  mkdir((dir_ + "/ssh-home").c_str(), 0700);
  mkdir("/run/sshd", 0755);  // sshd's privilege separation directory
  std::string log = dir_ + "/sshd.log";
  pid_ = StartDaemon({"/usr/sbin/sshd", "-D", "-f", config, "-e"}, log);
  if (pid_ < 0) {
    *why = "cannot start sshd";
    return false;
  }
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

bool SshfsMount::Mount(std::string* why) {
  if (!InstallIfMissing("/usr/bin/sshfs", "sshfs", why)) return false;
  std::error_code ec;
  std::filesystem::create_directories(at_, ec);
  undo_ = UndoOnSignal({"fusermount3", "-u", "-z", at_});
  auto r = RunCommand({"sshfs", "-p", std::to_string(sshd_.port()), "-o",
                       "IdentityFile=" + sshd_.client_key() +
                           ",StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes",
                       "root@127.0.0.1:" + remote_, at_});
  if (r.exit_code != 0) {
    *why = fmt::format("sshfs exited {}: {}", r.exit_code, r.err);
    return false;
  }
  mounted_ = true;
  return true;
}

SshfsMount::~SshfsMount() {
  if (mounted_) RunCommand({"fusermount3", "-u", "-z", at_});
  UndoneAlready(undo_);
}

GlusterVolume::GlusterVolume(std::string dir) : dir_(std::move(dir)), name_(fmt::format("onebox-bench-{}", getpid())) {}

bool GlusterVolume::Start(std::string* why) {
  if (!InstallIfMissing("/usr/sbin/glusterd", "glusterfs-server", why)) return false;
  if (RunCommand({"pgrep", "-x", "glusterd"}).exit_code == 0) {
    *why = "a glusterd the bench did not start is running: not touched";
    return false;
  }
  std::string log = dir_ + "/glusterd.log";
  // (Its own process group: a ^C must leave it to stop the volume, UndoOnSignal.)
  glusterd_ = StartDaemon({"/usr/sbin/glusterd", "-N", "--log-file", log}, dir_ + "/glusterd.out", {}, true);
  auto gluster = [](std::vector<std::string> args) {
    args.insert(args.begin(), {"gluster", "--mode=script"});
    return RunCommand(args);
  };
  onebox::testing::RunResult last;
  if (glusterd_ < 0 || !onebox::testing::WaitUntil(
                           [&] { return (last = gluster({"volume", "list"})).exit_code == 0; }, std::chrono::seconds(20),
                           "glusterd answers")) {
    *why = fmt::format("glusterd did not answer: {}{}", last.err, Tail(log, 600));
    return false;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir_ + "/brick1", ec);
  std::filesystem::create_directories(dir_ + "/brick2", ec);
  // (Run last first: the volume stopped, with its brick processes, then deleted.)
  undos_.push_back(UndoOnSignal({"gluster", "--mode=script", "volume", "delete", name_}));
  undos_.push_back(UndoOnSignal({"gluster", "--mode=script", "volume", "stop", name_, "force"}));
  last = gluster({"volume", "create", name_, "replica", "2", "127.0.0.2:" + dir_ + "/brick1",
                  "127.0.0.2:" + dir_ + "/brick2", "force"});
  if (last.exit_code != 0) {
    *why = "gluster volume create: " + last.out + last.err;
    return false;
  }
  created_ = true;
  last = gluster({"volume", "start", name_});
  if (last.exit_code != 0) {
    *why = "gluster volume start: " + last.out + last.err;
    return false;
  }
  return true;
}

bool GlusterVolume::Mount(const std::string& at, std::string* why) {
  std::error_code ec;
  std::filesystem::create_directories(at, ec);
  undos_.push_back(UndoOnSignal({"umount", "-l", at}));
  auto r = RunCommand({"mount", "-t", "glusterfs", "127.0.0.2:/" + name_, at});
  if (r.exit_code != 0) {
    *why = fmt::format("mount -t glusterfs exited {}: {}{}", r.exit_code, r.out, r.err);
    return false;
  }
  mounts_.push_back(at);
  return true;
}

GlusterVolume::~GlusterVolume() {
  for (const std::string& at : mounts_) RunCommand({"umount", "-l", at});
  if (created_) {
    RunCommand({"gluster", "--mode=script", "volume", "stop", name_, "force"});  // its brick processes too
    RunCommand({"gluster", "--mode=script", "volume", "delete", name_});
  }
  for (int undo : undos_) UndoneAlready(undo);
  StopDaemon(&glusterd_);
}

std::string EtcdMember::endpoint() const { return fmt::format("127.0.0.1:{}", client_port_); }

bool EtcdMember::Start(std::string* why) {
  if (!InstallIfMissing("/usr/bin/etcd", "etcd-server", why) || !InstallIfMissing("/usr/bin/etcdctl", "etcd-client", why))
    return false;
  client_port_ = FreeLoopbackPort();
  int peer_port = FreeLoopbackPort();
  std::string client = fmt::format("http://127.0.0.1:{}", client_port_);
  std::string peer = fmt::format("http://127.0.0.1:{}", peer_port);
  std::string log = dir_ + "/etcd.log";
  // Defaults otherwise: every put is in the raft log, fsynced, before it is answered.
  pid_ = StartDaemon({"/usr/bin/etcd", "--name", "bench", "--data-dir", dir_ + "/etcd-data", "--listen-client-urls",
                      client, "--advertise-client-urls", client, "--listen-peer-urls", peer,
                      "--initial-advertise-peer-urls", peer, "--initial-cluster", "bench=" + peer,
                      "--log-level", "warn"},
                     log);
  onebox::testing::RunResult last;
  auto answers = [&] {
    last = RunCommand({"etcdctl", "--endpoints", endpoint(), "endpoint", "health"}, {{"ETCDCTL_API", "3"}});
    return last.exit_code == 0;
  };
  if (pid_ <= 0 || !onebox::testing::WaitUntil(answers, std::chrono::seconds(20), "etcd answers")) {
    *why = fmt::format("etcd did not answer: {}; etcd said: {}", last.err, Tail(log, 600));
    return false;
  }
  std::string v = RunCommand({"/usr/bin/etcd", "--version"}).out;  // "etcd Version: 3.4.23\n..."
  size_t at = v.find("Version: ");
  version_ = at == std::string::npos ? "?" : v.substr(at + 9, v.find('\n', at) - at - 9);
  return true;
}

}  // namespace onebox::bench
