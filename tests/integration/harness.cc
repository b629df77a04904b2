#include "tests/integration/harness.h"
#include "proto/shim_frame.h"
#include "tests/integration/node_spaces.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <cstring>
#include <filesystem>
#include <random>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/generic/generic_stub.h>

#include "grpc/health/v1/health.grpc.pb.h"
#include "nodeagent/api/access.h"
#include "nodeagent/api/status_codes.h"
#include "nodeagent/cli/client.h"
#include "nodeagent/daemon/listen_address.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/peer.grpc.pb.h"
#include "consistency/record.h"
#include "tests/test_util.h"

namespace onebox::testing {

std::string OneboxBin() { return ONEBOX_BIN; }
std::string ShimLib() { return ONEBOX_SHIM; }

std::string BinutilsTarball() {
  glob_t found{};
  std::string path;
  if (glob("/usr/src/binutils/binutils-*.tar.xz", 0, nullptr, &found) == 0 && found.gl_pathc > 0)
    path = found.gl_pathv[0];
  globfree(&found);
  return path;
}

std::string PrepareLibiberty(const std::string& tarball) {
  std::string top = tarball.substr(tarball.rfind('/') + 1);
  top = top.substr(0, top.find(".tar"));
  return fmt::format(
      "tar --strip-components=1 -xJf {0} {1}/libiberty {1}/include {1}/install-sh {1}/config.guess "
      "{1}/config.sub {1}/move-if-change && cd libiberty && CC=gcc ./configure >configure.out 2>&1 && "
      "make stamp-h >/dev/null",
      tarball, top);
}

int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

pid_t WaitFor(pid_t pid, int* status, int flags) {
  pid_t r;
  do {
    r = waitpid(pid, status, flags);
  } while (r < 0 && errno == EINTR);
  if (r < 0) *status = 0;
  return r;
}

ExecSpec::ExecSpec(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env)
    : args_(argv) {
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    if (!env.count(std::string(kv.substr(0, kv.find('='))))) vars_.emplace_back(kv);
  }
  for (const auto& [k, v] : env) vars_.push_back(k + "=" + v);
  for (auto& a : args_) argv_.push_back(a.data());
  argv_.push_back(nullptr);
  for (auto& v : vars_) envp_.push_back(v.data());
  envp_.push_back(nullptr);
}

void ExecSpec::Exec() const {
  execvpe(argv_[0], argv_.data(), envp_.data());
  static const char kMsg[] = "exec failed\n";
  [[maybe_unused]] ssize_t n = write(2, kMsg, sizeof kMsg - 1);
  _exit(127);
}

namespace {

// Starts a program with the given stdin, stdout and stderr; its pid, or -1
// with *error set.
using Spawner = std::function<pid_t(int in, int out, int err, std::string* error)>;

// Runs what spawn starts to completion, feeding it stdin_data and capturing
// its output.
RunResult RunToCompletion(const Spawner& spawn, const std::string& stdin_data) {
  RunResult r;
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    r.err = std::string("pipe: ") + strerror(errno);
    return r;
  }
  auto start = std::chrono::steady_clock::now();
  std::string spawn_error;
  pid_t pid = spawn(in[0], out[1], err[1], &spawn_error);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (pid < 0) {
    for (int fd : {in[1], out[0], err[0]}) close(fd);
    r.err = spawn_error;
    return r;
  }
  signal(SIGPIPE, SIG_IGN);
  // stdin is fed inside the same poll loop, so a child that writes before it
  // reads all its input cannot deadlock against us.
  fcntl(in[1], F_SETFL, O_NONBLOCK);
  size_t fed = 0;
  if (stdin_data.empty()) {
    close(in[1]);
    in[1] = -1;
  }
  pollfd fds[3] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
  std::string* sinks[2] = {&r.out, &r.err};
  while (fds[0].fd >= 0 || fds[1].fd >= 0) {
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
      }
    }
    if (fds[2].fd >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = write(fds[2].fd, stdin_data.data() + fed, stdin_data.size() - fed);
      if (n > 0) fed += static_cast<size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || fed == stdin_data.size()) {
        close(fds[2].fd);
        fds[2].fd = -1;
      }
    }
  }
  if (fds[2].fd >= 0) close(fds[2].fd);
  int status = 0;
  r.exit_code = WaitFor(pid, &status, 0) == pid ? ExitCodeOf(status) : -1;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace

::testing::AssertionResult OneboxSucceeds(const std::vector<std::string>& args) {
  std::vector<std::string> argv{OneboxBin()};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r = RunCommand(argv);
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << fmt::format("onebox {} exited {}: {}", fmt::join(args, " "), r.exit_code, r.err);
}

RunResult RunCommand(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                     const std::string& stdin_data) {
  ExecSpec spec(argv, env);
  auto fork_exec = [&spec](int in, int out, int err, std::string* error) {
    pid_t pid = fork();
    if (pid == 0) {
      dup2(in, 0);
      dup2(out, 1);
      dup2(err, 2);
      spec.Exec();
    }
    if (pid < 0) *error = std::string("fork: ") + strerror(errno);
    return pid;
  };
  return RunToCompletion(fork_exec, stdin_data);
}

RunResult RunInNode(const NodeSpaces& node, const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env, const std::string& stdin_data) {
  auto spawn_in_node = [&](int in, int out, int err, std::string* error) {
    return node.Spawn(argv, env, {in, out, err}, error);
  };
  return RunToCompletion(spawn_in_node, stdin_data);
}

bool ShimPing(const std::string& socket_path, v1::ShimResponse* resp, std::string* err) {
  v1::ShimRequest req;
  req.set_id(77);
  req.mutable_ping()->set_client("integration-test");
  return ShimCall(socket_path, req, resp, err);
}

double ProcessMemoryMiB(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == field) {
      double kib;
      status >> kib;
      return kib / 1024;
    }
    status.ignore(1 << 20, '\n');
  }
  return -1;
}

namespace {
// /proc/PID/stat past the command's closing parenthesis (the command may
// hold spaces and parentheses): " S ppid ..."; empty if pid is gone.
std::string StatAfterCommand(pid_t pid) {
  FILE* f = fopen(fmt::format("/proc/{}/stat", pid).c_str(), "r");
  if (f == nullptr) return "";
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char* p = strrchr(buf, ')');
  return p == nullptr ? "" : std::string(p + 1);
}
}  // namespace

double CpuSeconds(pid_t pid) {
  // Its CPU clock, in ns: /proc/PID/stat says the same in 10 ms ticks, a
  // sixth of an idle agent's whole goal (0.2% of a core) over 30 s.
  clockid_t clock;
  timespec now{};
  if (clock_getcpuclockid(pid, &clock) != 0 || clock_gettime(clock, &now) != 0) return 0;
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

BusyCores::BusyCores() {
  const pid_t parent = getpid();
  for (long i = 0; i < sysconf(_SC_NPROCESSORS_ONLN); ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      // Only system calls after fork. Gone with the test, even one killed
      // before its destructors run, and holding none of its descriptors
      // (ctest's pipe among them); in any case for at most 5 minutes.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      close_range(3, ~0U, 0);
      alarm(300);
      volatile uint64_t spins = 0;
      for (;;) spins = spins + 1;
    }
    if (pid > 0) pids_.push_back(pid);
  }
}

void BusyCores::End() {
  for (pid_t pid : pids_) kill(pid, SIGKILL);
  int status;
  for (pid_t pid : pids_) WaitFor(pid, &status, 0);
  pids_.clear();
}

bool ProcessEnded(pid_t pid) {
  const std::string fields = StatAfterCommand(pid);  // " S ppid ...": the state letter first
  const char state = fields.size() >= 2 ? fields[1] : '\0';
  return state == '\0' || state == 'Z' || state == 'X';
}

bool ShimCall(const std::string& socket_path, const v1::ShimRequest& req, v1::ShimResponse* resp, std::string* err,
              int timeout_seconds) {
  int fd = ConnectShimSocket(socket_path, timeout_seconds);
  if (fd < 0) {
    *err = std::string("connect: ") + strerror(errno);
    return false;
  }
  if (!SendShimFrame(fd, req.SerializeAsString())) {
    *err = "send failed";
    close(fd);
    return false;
  }
  std::string answer;
  bool answered = RecvShimFrame(fd, &answer);
  close(fd);
  if (!answered) {
    *err = "no answer";
    return false;
  }
  if (!resp->ParseFromString(answer)) {
    *err = "unparsable answer";
    return false;
  }
  return true;
}

bool AskWithDescriptor(int conn, const v1::ShimRequest& req, v1::ShimResponse* resp, int* passed) {
  *passed = -1;
  if (!SendShimFrame(conn, req.SerializeAsString())) return false;
  char buf[4096];
  iovec iov{buf, sizeof buf};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  if (cmsghdr* cm = CMSG_FIRSTHDR(&msg); n > 0 && cm != nullptr && cm->cmsg_type == SCM_RIGHTS)
    memcpy(passed, CMSG_DATA(cm), sizeof *passed);
  return n >= static_cast<ssize_t>(kShimFrameHeaderBytes) &&
         DecodeShimFrameHeader(buf) == static_cast<uint32_t>(n) - kShimFrameHeaderBytes &&
         resp->ParseFromArray(buf + kShimFrameHeaderBytes, static_cast<int>(n - kShimFrameHeaderBytes));
}

MappedStatePage::MappedStatePage(const std::string& socket_path) {
  int fd = ConnectShimSocket(socket_path, 2);
  if (fd < 0) return;
  v1::ShimRequest req;
  req.set_id(1);
  req.mutable_hello()->set_root("/cluster");
  v1::ShimResponse resp;
  int page_fd = -1;
  AskWithDescriptor(fd, req, &resp, &page_fd);
  if (page_fd < 0) {
    close(fd);
    return;
  }
  void* map = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, page_fd, 0);
  close(page_fd);
  if (map == MAP_FAILED) {
    close(fd);
    return;
  }
  page_ = static_cast<const StatePage*>(map);
  connection_ = fd;
}

MappedStatePage::~MappedStatePage() {
  if (page_ != nullptr) munmap(const_cast<StatePage*>(page_), 4096);
  if (connection_ >= 0) close(connection_);
}

int64_t PeersAliveOnPage(AgentProcess& agent) {
  MappedStatePage page(agent.socket());
  if (!page) return -1;
  return static_cast<int64_t>(page->peers_alive.load());
}

::testing::AssertionResult WaitForPagesCounting(const std::vector<AgentProcess*>& agents, int64_t peers) {
  return WaitUntil(
      [&] {
        std::vector<int64_t> seen;
        for (AgentProcess* agent : agents) seen.push_back(PeersAliveOnPage(*agent));
        return Observed(std::all_of(seen.begin(), seen.end(), [&](int64_t n) { return n == peers; }), seen);
      },
      std::chrono::seconds(10), "every state page counts " + std::to_string(peers) + " peers alive");
}

const std::string& TestJoinTokenFile() {
  static const std::string path = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string file = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/onebox-test-token-XXXXXX";
    int fd = mkstemp(file.data());  // mode 0600
    if (fd < 0) return std::string("/nonexistent/onebox-test-token");  // the agents then say why they cannot start
    std::string token = fmt::format("test-token-{}-{}\n", getpid(), std::random_device()());
    if (write(fd, token.data(), token.size()) != static_cast<ssize_t>(token.size())) unlink(file.c_str());
    close(fd);
    static std::string removed_at_exit = file;
    std::atexit([] { unlink(removed_at_exit.c_str()); });
    return file;
  }();
  return path;
}

void AddTestJoinToken(grpc::ClientContext* ctx) {
  std::ifstream in(TestJoinTokenFile());
  std::string token;
  std::getline(in, token);
  ctx->AddMetadata(kJoinTokenHeader, token);
}

grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                          const std::string& bytes, const std::string& join_token) {
  grpc::GenericStub generic(channel);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer req(&slice, 1), resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!join_token.empty()) ctx.AddMetadata(kJoinTokenHeader, join_token);
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status result;
  generic.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp, [&](grpc::Status s) {
    std::lock_guard lock(mu);
    result = s;
    done = true;
    cv.notify_one();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return done; });
  return result;
}

grpc::Status ReadNsRecord(AgentProcess& agent, const std::string& path, v1::ReadRecordResponse* r) {
  v1::ReadRecordRequest q;
  q.set_family("ns");
  q.set_key(path.substr(1));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  AddTestJoinToken(&ctx);
  return v1::Peer::NewStub(agent.channel())->ReadRecord(&ctx, q, r);
}

v1::Inode RecordedInode(AgentProcess& agent, const std::string& path, bool* found) {
  v1::ReadRecordResponse r;
  v1::Inode inode;
  bool live = false;
  if (ReadNsRecord(agent, path, &r).ok() && r.found()) {
    Result<Record> rec = DecodeRecord(r.record());
    live = rec.ok() && !rec->tombstone && inode.ParseFromString(rec->value);
  }
  if (found != nullptr) *found = live;
  return inode;
}

::testing::AssertionResult WaitForRecord(AgentProcess& agent, const std::string& path,
                                         std::chrono::steady_clock::duration timeout) {
  return WaitUntil(
      [&] {
        bool found = false;
        RecordedInode(agent, path, &found);
        return found;
      },
      timeout, agent.address() + "'s store has " + path);
}

v1::StatusResponse AgentStatus(AgentProcess& agent) {
  v1::StatusResponse st;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::Status s = v1::Cluster::NewStub(agent.channel())->Status(&ctx, {}, &st);
  EXPECT_TRUE(s.ok()) << agent.address() << ": " << s.error_message();
  return st;
}

grpc::Status CallOverSocket(AgentProcess& agent, const std::string& method, const google::protobuf::Message& req,
                            google::protobuf::Message* resp) {
  return ToGrpc(onebox::CallOverSocket(agent.socket(), 10, method, req, resp));
}

AgentProcess::AgentProcess(std::string name, std::string data_dir, std::string socket_path, std::string listen)
    : args_{"--name", std::move(name), "--data-dir", data_dir, "--listen", std::move(listen), "--socket",
            socket_path, "--log-level", "debug"},
      data_dir_(std::move(data_dir)),
      socket_(std::move(socket_path)),
      log_path_(data_dir_ + ".log") {}

std::unique_ptr<AgentProcess> QuietLoopbackAgent(const std::string& dir, const std::string& name,
                                                 const std::string& join, const std::vector<std::string>& extra) {
  std::string base = dir + "/" + name;
  std::vector<std::string> args{"--name",   name, "--data-dir", base + "-data", "--listen", "127.0.0.1:0",
                                "--socket", base + ".sock", "--log-level", "warn"};
  if (!join.empty()) {
    args.push_back("--join");
    args.push_back(join);
  }
  args.insert(args.end(), extra.begin(), extra.end());
  return AgentProcess::WithArgs(args, base + ".sock", base + ".log");
}

std::unique_ptr<AgentProcess> AgentProcess::WithArgs(std::vector<std::string> args, std::string socket_path,
                                                     std::string log_path) {
  std::unique_ptr<AgentProcess> a(new AgentProcess());
  a->args_ = std::move(args);
  a->socket_ = std::move(socket_path);
  a->log_path_ = std::move(log_path);
  return a;
}

AgentProcess::~AgentProcess() {
  if (pid_ > 0) Stop(SIGKILL);
}

std::shared_ptr<grpc::Channel> AgentProcess::NewChannel(grpc::ChannelArguments args) const {
  auto cacert = std::find(args_.begin(), args_.end(), "--cacert");
  if (cacert == args_.end() || cacert + 1 == args_.end())
    return grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  TlsFiles files;
  files.ca = *(cacert + 1);
  Result<TlsMaterial> tls = LoadTls(files, /*need_cert=*/false);
  if (!tls.ok()) ADD_FAILURE() << tls.status().message();
  SetTlsChannelArgs(&args);
  return grpc::CreateCustomChannel(address_, tls.ok() ? ChannelCredentials(*tls) : grpc::InsecureChannelCredentials(),
                                   args);
}

::testing::AssertionResult AgentProcess::Start(std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = prefix_;
  argv.push_back(OneboxBin());
  argv.push_back("agent");
  argv.insert(argv.end(), args_.begin(), args_.end());
  auto has = [&](const char* flag) { return std::find(args_.begin(), args_.end(), flag) != args_.end(); };
  const bool insecure = has("--insecure");
  // An agent with TLS proves itself by its certificate: no token unless the test names one.
  if (!has("--join-token-file") && !insecure && !has("--cacert")) argv.insert(argv.end(), {"--join-token-file", TestJoinTokenFile()});
  // An agent in the test's own node namespaces listens on their bridge,
  // which only the test's nodes reach: without TLS it takes --insecure
  // (and keeps the token, which its peers' calls still carry).
  auto listen = std::find(args_.begin(), args_.end(), "--listen");
  if (!insecure && !has("--cacert") && listen != args_.end() && listen + 1 != args_.end()) {
    Result<ListenAddress> address = ParseListenAddress(*(listen + 1));
    if (address.ok() && !OnlyLoopback(address->host)) argv.push_back("--insecure");
  }
  int log_fd = open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return ::testing::AssertionFailure() << "open " << log_path_ << ": " << strerror(errno);
  if (spaces_ != nullptr) {
    // It dies with its node, whose holder dies with the test (NodeSpaces).
    std::string error;
    pid_ = spaces_->Spawn(argv, {}, {-1, log_fd, log_fd}, &error);
    close(log_fd);
    if (pid_ < 0)
      return ::testing::AssertionFailure() << "cannot start the agent in node " << spaces_->node() << ": " << error;
  } else {
    ExecSpec spec(argv, {});
    pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      // The agent dies with the test (or bench) that started it, even one that
      // aborts or is killed before its destructors run.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      dup2(log_fd, 2);
      dup2(log_fd, 1);
      spec.Exec();
    }
    close(log_fd);
    if (pid_ < 0) return ::testing::AssertionFailure() << "fork: " << strerror(errno);
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  // The socket answers once the gRPC server is up; it names the bound port.
  v1::ShimResponse ping;
  std::string err;
  int status = 0;
  bool exited = false;
  ::testing::AssertionResult answered = WaitUntil(
      [&] {
        if (ShimPing(socket_, &ping, &err)) return true;
        exited = WaitFor(pid_, &status, WNOHANG) == pid_;
        return exited;  // then it never will
      },
      timeout, "the agent's socket answers", std::chrono::milliseconds(20));
  if (exited) {
    pid_ = -1;
    return ::testing::AssertionFailure() << "agent exited with " << ExitCodeOf(status) << ": " << log();
  }
  if (!answered) return ::testing::AssertionFailure() << "agent socket never answered (" << err << "): " << log();
  address_ = ping.ping().grpc_address();
  grpc::ChannelArguments channel_args;  // an agent cut off and back is reached again within a second
  channel_args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  channel_args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  channel_args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  channel_ = NewChannel(channel_args);
  auto health = grpc::health::v1::Health::NewStub(channel_);
  auto serving = [&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc::health::v1::HealthCheckRequest q;
    grpc::health::v1::HealthCheckResponse r;
    return health->Check(&ctx, q, &r).ok() && r.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  };
  if (WaitUntil(serving, deadline - std::chrono::steady_clock::now(), "the agent reports SERVING",
                std::chrono::milliseconds(20)))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "agent never reported SERVING: " << log();
}

int AgentProcess::Stop(int sig) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  int status = 0;
  pid_t r = 0;
  // An agent that does not stop within 15 s is killed (and the test sees -9).
  if (!WaitUntil([&] { return (r = WaitFor(pid_, &status, WNOHANG)) != 0; }, std::chrono::seconds(15),
                 "the agent exits", std::chrono::milliseconds(10))) {
    kill(pid_, SIGKILL);
    r = WaitFor(pid_, &status, 0);
  }
  pid_ = -1;
  if (r < 0) return -1000;  // could not learn how it ended: never a clean exit
  channel_.reset();
  return ExitCodeOf(status);
}

void KeepLogsIfFailed(const std::string& dir, const std::vector<AgentProcess*>& agents) {
  if (!::testing::Test::HasFailure()) return;
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path keep =
      std::filesystem::temp_directory_path() / (std::string("onebox-failed-") + info->name() + "-" + std::to_string(getpid()));
  std::error_code ec;
  std::filesystem::create_directories(keep, ec);
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (entry.path().extension() == ".log") std::filesystem::copy_file(entry.path(), keep / entry.path().filename(), ec);
  for (AgentProcess* agent : agents) {
    if (!agent) continue;
    std::string log = agent->log();
    size_t from = log.size();
    for (int lines = 0; from > 0 && lines < 25; --from)
      if (log[from - 1] == '\n') ++lines;
    fprintf(stderr, "--- the last lines of the log of the agent at %s:\n%s", agent->address().c_str(),
            log.substr(from).c_str());
  }
  fprintf(stderr, "--- the agents' whole logs are kept in %s\n", keep.c_str());
}

std::string AgentProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::shared_ptr<grpc::Channel> AgentProcess::channel() { return channel_; }

RunResult Shell(AgentProcess& agent, const std::string& cmd) {
  const std::map<std::string, std::string> env{{"LD_PRELOAD", ShimLib()}, {"ONEBOX_SOCKET", agent.socket()}};
  if (agent.spaces() != nullptr) return RunInNode(*agent.spaces(), {"bash", "-c", cmd}, env);
  return RunCommand({"bash", "-c", cmd}, env);
}

::testing::AssertionResult Eventually(AgentProcess& agent, const std::string& cmd, const std::string& want,
                                      std::chrono::seconds timeout) {
  return WaitUntil(
      [&] {
        RunResult r = Shell(agent, cmd);
        return ::testing::AssertionResult(r.exit_code == 0 && r.out == want)
               << "exit " << r.exit_code << ", out '" << r.out << "', err '" << r.err << "'";
      },
      timeout, "`" + cmd + "` prints '" + want + "'");
}

::testing::AssertionResult Converge(const std::vector<AgentProcess*>& agents, std::chrono::seconds timeout,
                                    Unanswered unanswered) {
  std::string silent;  // an agent that did not answer, when that fails the wait
  auto agree = [&] {
    std::set<std::string> digests;
    std::string seen;
    bool all_answered = true;
    for (AgentProcess* agent : agents) {
      v1::StatusResponse r;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       (unanswered == Unanswered::kFails ? std::chrono::seconds(5) : std::chrono::seconds(2)));
      grpc::Status st = v1::Cluster::NewStub(agent->NewChannel())
                            ->Status(&ctx, {}, &r);
      if (!st.ok()) {
        all_answered = false;
        seen += agent->address() + " did not answer (" + st.error_message() + ") ";
        if (unanswered == Unanswered::kFails) silent = agent->address() + ": " + st.error_message();
        continue;
      }
      // The stores, and what programs see in the views, both the same.
      digests.insert(r.state_digest() + "/" + r.view_digest());
      seen += agent->address() + "=" + r.state_digest().substr(0, 8) + "/" + r.view_digest().substr(0, 8) + " ";
    }
    if (!silent.empty()) return ::testing::AssertionSuccess();  // ends the wait: it failed
    return ::testing::AssertionResult(all_answered && digests.size() == 1) << seen;
  };
  ::testing::AssertionResult agreed =
      WaitUntil(agree, timeout, "every agent reports the same state digest and the same view digest");
  if (!silent.empty()) return ::testing::AssertionFailure() << "Cluster/Status unanswered by " << silent;
  return agreed;
}

std::map<pid_t, ThreadNice> ThreadNices(pid_t pid) {
  std::map<pid_t, ThreadNice> threads;
  std::error_code ec;
  for (const auto& task : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    // The name is in parentheses, and nice is the 17th field after them.
    std::string stat = ReadFile(task.path() / "stat");
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;  // the thread ended meanwhile
    std::istringstream after(stat.substr(close + 2));
    std::string field;
    for (int i = 0; i < 17; ++i) after >> field;
    threads[std::stoi(task.path().filename())] = {stat.substr(open + 1, close - open - 1), std::stoi(field)};
  }
  return threads;
}

PriorityLooks LookAtPrioritiesWhile(const std::vector<pid_t>& agents, const std::function<void()>& work) {
  PriorityLooks looks;
  {
    // Stopped and joined at the block's end, whatever work() does.
    std::jthread looker([&](std::stop_token stop) {
      while (!stop.stop_requested()) {
        for (pid_t agent : agents) {
          std::map<pid_t, ThreadNice> threads = ThreadNices(agent);
          if (!threads.count(agent)) continue;
          const int own = threads[agent].nice;
          for (const auto& [tid, thread] : threads) {
            if (thread.name == "onebox-fetch" || thread.nice == own) continue;
            std::string& off = looks.others_off[agent];
            if (thread.name == "onebox-place" && thread.nice == std::min(own + 10, 19))
              ++looks.placing_lowered[agent];
            else if (off.find("(" + thread.name + ")") == std::string::npos)
              off += fmt::format("{} ({}) at {} (agent at {}); ", tid, thread.name, thread.nice, own);
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    work();
  }
  return looks;
}

}  // namespace onebox::testing
