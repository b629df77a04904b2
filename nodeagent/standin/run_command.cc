// onebox run: the stand-in. It is the real local child its caller (a shell,
// make) waits for, and it starts fast: it links neither gRPC nor the full
// protobuf runtime (the lite copy of process.proto, the shim protocol): it asks its agent to start the program on a node
// (process/run_relay.h), relays standard input to it and its output back,
// forwards the signals it receives to the program's gpid (Process/Signal,
// with the kernel's rule as for any kill), and ends as the program ended:
// its exit code, or death by the same signal. A node lost during the run
// is one line and exit 255, as ssh says it.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string_view>
#include <thread>

#include "nodeagent/standin/standin.h"
#include "onebox/v1/process_lite.pb.h"
#include "onebox/v1/shim.pb.h"
#include "proto/shim_frame.h"

extern char** environ;

namespace onebox {

namespace v1lite = v1::lite;

namespace {

constexpr int kExitOk = 0, kExitError = 1, kExitLost = 255;
constexpr size_t kChunk = 64 << 10;
// Beyond --timeout, how long the start of a run may take (the waits of
// exit-to-wait before it: nodeagent/process/run_relay.h).
constexpr time_t kStartWaitSeconds = 30;

// The signals a terminal or a parent sends a job, passed on to the program.
constexpr int kForwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGTSTP, SIGCONT};

// The local terminal, in raw mode while a run with a terminal lasts (its
// keys, ^C and ^Z included, go to the program's terminal there), and put back
// as it was on every way out: return, exit, death by the program's signal,
// and while the stand-in is stopped.
class LocalTerminal {
 public:
  static bool MakeRaw() {
    if (!saved_ && tcgetattr(STDIN_FILENO, &before_) != 0) return false;
    saved_ = true;
    termios raw = before_;
    cfmakeraw(&raw);
    return tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) == 0;
  }
  static void Restore() {
    if (saved_) tcsetattr(STDIN_FILENO, TCSADRAIN, &before_);
  }

 private:
  static inline termios before_{};
  static inline bool saved_ = false;
};

// One request on a connection of its own to the agent at socket, and its
// answer; false (errno set) when the agent could not be asked.
bool AskAgent(const std::string& socket, double timeout_seconds, const v1::ShimRequest& req,
              v1::ShimResponse* answer) {
  std::string frame;
  int fd = ConnectShimSocket(socket, timeout_seconds);
  bool asked = fd >= 0 && SendShimFrame(fd, req.SerializeAsString()) && RecvShimFrame(fd, &frame) &&
               answer->ParseFromString(frame);
  int err = errno;
  if (fd >= 0) close(fd);
  errno = err;
  return asked;
}

v1lite::WindowSize LocalWindow() {
  v1lite::WindowSize size;
  winsize w{};
  if (ioctl(STDIN_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_row > 0) {
    size.set_rows(w.ws_row);
    size.set_cols(w.ws_col);
  } else {
    size.set_rows(24);
    size.set_cols(80);
  }
  return size;
}

int Lost(const std::string& why) {
  LocalTerminal::Restore();
  std::cerr << "onebox: " << why << "\n";
  return kExitLost;
}

bool WriteAll(int fd, const std::string& bytes) {
  for (size_t done = 0; done < bytes.size();) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Ends this process as the program ended: by the same signal (no core
// file here: the program's was written, or not, on its node).
[[noreturn]] void DieBy(int sig) {
  LocalTerminal::Restore();
  rlimit none{0, 0};
  setrlimit(RLIMIT_CORE, &none);
  signal(sig, SIG_DFL);
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, sig);
  sigprocmask(SIG_UNBLOCK, &only, nullptr);
  raise(sig);
  _exit(128 + sig);  // a signal whose default is not to end the process
}

v1lite::RunStart MakeStart(const RunOptions& o) {
  v1lite::RunStart start;
  start.set_node(o.node);
  for (const std::string& a : o.argv) start.add_argv(a);
  for (char** e = environ; *e != nullptr; ++e) start.add_env(*e);
  if (!o.cwd.empty()) {
    start.set_cwd(o.cwd);
  } else {
    char here[4096];
    if (getcwd(here, sizeof here) != nullptr) start.set_cwd(here);
  }
  mode_t mask = umask(0);
  umask(mask);
  start.set_umask(mask);
  start.set_placed(o.placed);
  start.set_program(o.program);
  // A terminal for the program: -t, or by default when both our input and
  // output are one (a redirected run keeps its bytes as they are: no CRLF;
  // never for a placed job).
  if (o.tty || (!o.no_tty && !o.placed && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO))) {
    start.set_tty(true);
    *start.mutable_window() = LocalWindow();
  }
  return start;
}

class StandIn {
 public:
  StandIn(std::string socket, double timeout_seconds, int fd, int signals, int64_t gpid, bool tty)
      : socket_(std::move(socket)), timeout_seconds_(timeout_seconds), fd_(fd), signals_(signals), gpid_(gpid),
        tty_(tty) {}
  // relay_stdin: false sends the program an end of input at once.
  int Relay(bool relay_stdin);

 private:
  void Forward(int sig);
  // Input and window sizes come from two threads: one frame at a time.
  bool SendInput(const v1lite::RunInput& in) {
    std::lock_guard lock(send_mu_);
    bool sent = SendShimFrame(fd_, in.SerializeAsString());
    if (sent && window_changed_.exchange(false)) sent = SendShimFrame(fd_, WindowInput().SerializeAsString());
    return sent;
  }
  static v1lite::RunInput WindowInput() {
    v1lite::RunInput in;
    *in.mutable_window() = LocalWindow();
    return in;
  }

  const std::string socket_;
  const double timeout_seconds_;
  const int fd_, signals_;
  const int64_t gpid_;
  const bool tty_;
  std::mutex send_mu_;
  std::atomic<bool> window_changed_{false};  // for the input thread to send, when it holds the lock
};

void StandIn::Forward(int sig) {
  if (tty_ && sig == SIGWINCH) {  // the terminal's new size, to the program's terminal
    // Never wait here for the input thread's send: output must keep flowing.
    std::unique_lock lock(send_mu_, std::try_to_lock);
    if (lock.owns_lock()) SendShimFrame(fd_, WindowInput().SerializeAsString());
    else window_changed_ = true;
    return;
  }
  // As kill(2) of the gpid under the shim would send it (the shim request
  // Signal: Process/Signal as the caller). The program runs in a session of
  // its own, an orphaned process group in which the kernel drops SIGTSTP: it
  // is stopped with SIGSTOP instead.
  v1::ShimRequest req;
  req.set_id(1);
  req.mutable_signal()->set_gpid(gpid_);
  req.mutable_signal()->set_signal(sig == SIGTSTP ? SIGSTOP : sig);
  v1::ShimResponse answer;
  if (!AskAgent(socket_, timeout_seconds_, req, &answer))
    std::cerr << "onebox: run: signal " << sig << ": the agent did not answer (" << strerror(errno) << ")\n";
  else if (answer.err() != 0 && answer.err() != ESRCH)
    std::cerr << "onebox: run: signal " << sig << ": " << answer.message() << "\n";
  if (sig == SIGTSTP) {  // the job stops here too, so the shell sees it stopped, with its terminal back
    LocalTerminal::Restore();
    raise(SIGSTOP);
    if (tty_) LocalTerminal::MakeRaw();
  }
}

int StandIn::Relay(bool relay_stdin) {
  if (!relay_stdin) {
    v1lite::RunInput eof;
    eof.set_stdin_eof(true);
    SendInput(eof);
  }
  // Standard input goes on a thread of its own: a program that is not
  // reading its input must never keep us from reading its output.
  if (relay_stdin) std::thread([this] {
    std::string buf(kChunk, '\0');
    for (;;) {
      ssize_t n = read(STDIN_FILENO, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {  // a non-blocking stdin we were given: wait for it
        pollfd p{STDIN_FILENO, POLLIN, 0};
        poll(&p, 1, -1);
        continue;
      }
      v1lite::RunInput in;
      if (n > 0) in.set_stdin(buf.data(), static_cast<size_t>(n));
      else in.set_stdin_eof(true);
      // A run that ended already reads no more: its exit is still to be read.
      if (!SendInput(in) || n <= 0) return;
    }
  }).detach();  // blocked in read(stdin) at our exit, which ends it
  pollfd fds[2] = {{fd_, POLLIN, 0}, {signals_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Lost(std::string("run: poll: ") + strerror(errno));
    }
    if (fds[1].revents & POLLIN) {
      signalfd_siginfo info;
      if (read(signals_, &info, sizeof info) == sizeof info) Forward(static_cast<int>(info.ssi_signo));
    }
    if (fds[0].revents) {
      std::string frame;
      v1lite::RunOutput out;
      if (!RecvShimFrame(fd_, &frame) || !out.ParseFromString(frame))
        return Lost("run: the agent closed the connection during the run");
      if (out.has_stdout() && !WriteAll(STDOUT_FILENO, out.stdout())) DieBy(SIGPIPE);
      if (out.has_stderr()) WriteAll(STDERR_FILENO, out.stderr());
      if (out.has_exit()) {
        const v1lite::RunExit& exit = out.exit();
        if (!exit.error().empty()) return Lost("run: " + exit.error());
        if (exit.signal() != 0) DieBy(exit.signal());
        return exit.code();
      }
    }
  }
}

int Fail(const std::string& why) {
  std::cerr << "onebox: " << why << "\n";
  return kExitError;
}

// This process becomes o.program, as the exec the shim replaced would have
// made it; a failed exec ends it as a shell says it (127: not found, 126:
// cannot run).
[[noreturn]] void ExecHere(const RunOptions& o) {
  std::vector<char*> argv;
  for (const std::string& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(o.program.c_str(), argv.data());
  int err = errno;
  std::cerr << o.argv[0] << ": " << strerror(err) << "\n";
  _exit(err == ENOENT ? 127 : 126);
}

// make's jobserver, when MAKEFLAGS offers one this process can reach: the
// last --jobserver-auth= (or older --jobserver-fds=) word before "--",
// naming a fifo (make 4.4) or two descriptors open here that are pipes
// (make passes them to a "+" recipe line only).
bool JobserverOffered() {
  const char* flags = getenv("MAKEFLAGS");
  if (flags == nullptr) return false;
  std::istringstream words(flags);
  std::string auth;
  for (std::string word; words >> word && word != "--";)
    for (std::string_view option : {"--jobserver-auth=", "--jobserver-fds="})
      if (word.starts_with(option)) auth = word.substr(option.size());
  struct stat st;
  if (auth.starts_with("fifo:")) return stat(auth.c_str() + 5, &st) == 0 && S_ISFIFO(st.st_mode);
  auto pipe_at = [&](const char* text, char** end) {
    errno = 0;
    long fd = strtol(text, end, 10);
    return errno == 0 && *end != text && fd >= 0 && fd <= INT_MAX && fstat(static_cast<int>(fd), &st) == 0 &&
           S_ISFIFO(st.st_mode);
  };
  char* end = nullptr;
  return !auth.empty() && pipe_at(auth.c_str(), &end) && *end == ',' && pipe_at(end + 1, &end) && *end == '\0';
}

// Whether the job is a link that wants make's jobserver: gcc's link-time
// optimizer with -flto=jobserver, or with -flto or -flto=auto (which use a
// jobserver when offered). The jobserver is a pipe on this node: elsewhere
// -flto=jobserver would run the link's parts one at a time, and -flto=auto
// would use every CPU there, beyond make's -j and the node's share. A
// compile (-c, -S, -E, -M, -MM) runs no optimizer and is placed as any job.
bool WantsMakesJobserver(const std::vector<std::string>& argv) {
  bool lto = false, lto_if_offered = false;
  for (size_t i = 1; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "-c" || a == "-S" || a == "-E" || a == "-M" || a == "-MM") return false;
    lto = lto || a == "-flto=jobserver";
    lto_if_offered = lto_if_offered || a == "-flto" || a == "-flto=auto";
  }
  return lto || (lto_if_offered && JobserverOffered());
}

// --place: asks the agent where the program should run (it counts this
// process as the job until it ends). Returns the node's name when it is
// another node; here (or with no agent to ask, or for a job that wants
// make's jobserver) this process becomes the program (ExecHere).
std::string PlaceOrExecHere(const RunOptions& o) {
  setenv("ONEBOX_PLACE", "off", 1);  // the job and its children run where it runs
  v1::ShimRequest req;
  req.set_id(1);
  req.mutable_place()->set_program(o.program);
  req.mutable_place()->set_policy(o.place);
  if (WantsMakesJobserver(o.argv)) {  // here, and counted here
    req.mutable_place()->set_here(true);
    v1::ShimResponse unused;
    AskAgent(AgentSocketPath(o.socket), o.timeout_seconds, req, &unused);
    ExecHere(o);
  }
  v1::ShimResponse answer;
  const bool asked = AskAgent(AgentSocketPath(o.socket), o.timeout_seconds, req, &answer);
  if (asked && answer.err() == 0 && !answer.place().node().empty()) return answer.place().node();
  if (asked && answer.err() != 0) std::cerr << "onebox: placement: " << answer.message() << "; running it here\n";
  ExecHere(o);
}

}  // namespace

int RunStandIn(const RunOptions& o) {
  if (o.argv.empty()) return Fail("usage: onebox run [--node NODE] [--cwd DIR] [-t|-T] -- CMD ARGS...");
  if (!o.place.empty()) {
    if (o.program.empty() || o.program[0] != '/') return Fail("run --place needs --program, an absolute path");
    RunOptions placed = o;
    placed.node = PlaceOrExecHere(o);  // returns only for another node
    placed.placed = true;  // (and program: what the agent compared there)
    placed.place.clear();
    return RunStandIn(placed);
  }
  // The forwarded signals come through a signalfd, from before the run starts.
  sigset_t forwarded, mask_before;
  sigemptyset(&forwarded);
  for (int sig : kForwarded) sigaddset(&forwarded, sig);
  sigprocmask(SIG_BLOCK, &forwarded, &mask_before);
  auto pipe_before = signal(SIGPIPE, SIG_IGN);
  // Missing standard descriptors would be taken by the socket or the signalfd.
  for (int fd = 0; fd <= 2; ++fd)
    if (fcntl(fd, F_GETFD) < 0) open("/dev/null", O_RDWR);
  int signals = signalfd(-1, &forwarded, SFD_CLOEXEC);
  const std::string socket = AgentSocketPath(o.socket);
  int fd = ConnectShimSocket(socket, o.timeout_seconds);
  // A placed job that cannot go where it was sent runs here instead, as the
  // caller's exec would have run it, and is counted here.
  auto run_here = [&](const std::string& why) {
    std::cerr << "onebox: placement: node " << o.node << " did not start " << o.argv[0] << " (" << why
              << "); running it here\n";
    if (fd >= 0) close(fd);
    if (signals >= 0) close(signals);
    v1::ShimRequest kept;
    kept.set_id(2);
    kept.mutable_place()->set_kept_here(true);
    v1::ShimResponse unused;
    AskAgent(socket, o.timeout_seconds, kept, &unused);
    signal(SIGPIPE, pipe_before);
    sigprocmask(SIG_SETMASK, &mask_before, nullptr);
    ExecHere(o);
  };
  const bool may_run_here = o.placed && !o.program.empty();
  if ((fd < 0 || signals < 0) && may_run_here) run_here("the agent is not reachable");
  if (fd < 0 || signals < 0) return Fail("cannot reach the agent at " + socket + ": " + strerror(errno));
  v1::ShimRequest req;
  req.set_id(1);
  const v1lite::RunStart start = MakeStart(o);
  req.mutable_run()->set_start(start.SerializeAsString());
  std::string frame;
  v1::ShimResponse answer;
  bool sent = SendShimFrame(fd, req.SerializeAsString());
  // The answer comes once the program runs there: after the target has what
  // this node wrote (exit-to-wait: the recorder's sync and the target's
  // acknowledgement, up to 10 s each), so later than a plain answer may.
  timeval start_wait{static_cast<time_t>(o.timeout_seconds) + kStartWaitSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &start_wait, sizeof start_wait);
  bool answered = sent && RecvShimFrame(fd, &frame) && answer.ParseFromString(frame);
  if (may_run_here && (!answered || answer.err() != 0)) run_here(answered ? answer.message() : "no answer");
  if (!answered) return Fail("the agent at " + socket + " gave no answer to the run");
  if (answer.err() != 0) {
    std::cerr << "onebox: run: " << answer.message() << "\n";
    return answer.err() == EHOSTUNREACH ? kExitLost : kExitError;
  }
  v1lite::RunStarted started;
  started.ParseFromString(answer.run().started());
  const bool tty = start.tty();
  if (tty && isatty(STDIN_FILENO)) {
    LocalTerminal::MakeRaw();
    atexit(LocalTerminal::Restore);
  }
  // The run lasts as long as the program: no timeout from here on.
  timeval none{};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
  // Not freed: its input thread may still be in a read of stdin when we exit.
  auto* stand_in = new StandIn(socket, o.timeout_seconds, fd, signals, started.gpid(), tty);
  // A placed compiler reads its input only when told to by "-".
  bool relay_stdin = !o.placed;
  for (const std::string& a : o.argv) relay_stdin = relay_stdin || a == "-";
  int code = stand_in->Relay(relay_stdin);
  LocalTerminal::Restore();
  return code;
}

}  // namespace onebox
