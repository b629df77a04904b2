#include "nodeagent/process/run_executor.h"

#include <fcntl.h>
#include <stdlib.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/process/proc_table.h"
#include "proto/gpid.h"

namespace onebox {

namespace {

constexpr size_t kChunk = 64 << 10;

void Say(const std::string& text) { [[maybe_unused]] ssize_t n = write(2, text.data(), text.size()); }

[[noreturn]] void RunChild(const Launch& l, int in, int out, int err, bool tty) {
  setsid();
  dup2(in, 0);
  dup2(out, 1);
  dup2(err, 2);
  if (tty) ioctl(0, TIOCSCTTY, 0);  // the terminal is the session's: ^C and ^Z reach its foreground job
  if (rlimit files; l.files_soft_limit != 0 && getrlimit(RLIMIT_NOFILE, &files) == 0) {
    files.rlim_cur = l.files_soft_limit;
    setrlimit(RLIMIT_NOFILE, &files);
  }
  if (syscall(SYS_close_range, 3, ~0U, 0) != 0) {
    // A kernel before 5.9, or a filter that refuses it: close them one by one.
    for (int fd = 3; fd < 65536; ++fd) close(fd);
  }
  // The agent blocks its stop signals and ignores SIGPIPE: the program starts as a shell would start it.
  // Handlers first, then the mask: a signal must never run one of the agent's handlers here.
  for (int s = 1; s < NSIG; ++s) signal(s, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  if (l.switch_ids &&
      (syscall(SYS_setgroups, l.groups.size(), l.groups.data()) != 0 ||
       syscall(SYS_setresgid, l.gid, l.gid, l.gid) != 0 || syscall(SYS_setresuid, l.uid, l.uid, l.uid) != 0)) {
    Say(l.no_ids);
    _exit(126);
  }
  umask(l.umask);
  if (chdir(l.cwd.c_str()) != 0) {
    Say(errno == EACCES ? l.cwd_denied : l.no_cwd);
    _exit(1);
  }
  int failure = ENOENT;
  for (const std::string& c : l.candidates) {
    execve(c.c_str(), l.argv.data(), l.env.data());
    if (errno != ENOENT && errno != ENOTDIR) failure = errno;
  }
  Say(failure == ENOENT ? l.not_found : l.cannot_run);
  _exit(failure == ENOENT ? 127 : 126);
}

// The program's standard streams and our ends of them: three pipes, or a
// pseudo-terminal (its stdin, stdout and stderr; its output comes as stdout).
struct ProgramIo {
  bool tty = false;
  int child_in = -1, child_out = -1, child_err = -1;  // the program's, closed here once it has them
  int to_program = -1;                              // its input: a pipe, or the terminal's master
  int from_out = -1, from_err = -1;                 // its output (from_err: -1 with a terminal)
  void CloseChildEnds() {
    for (int* fd : {&child_in, &child_out, &child_err}) {
      if (*fd >= 0 && (fd == &child_in || *fd != child_in)) close(*fd);
    }
    child_in = child_out = child_err = -1;
  }
  void CloseAll() {
    CloseChildEnds();
    for (int fd : {to_program, from_out, from_err})
      if (fd >= 0) close(fd);
  }
};

void SetWindow(int master, const v1::WindowSize& size) {
  winsize w{};
  w.ws_row = static_cast<unsigned short>(size.rows());
  w.ws_col = static_cast<unsigned short>(size.cols());
  ioctl(master, TIOCSWINSZ, &w);  // the kernel tells the foreground job (SIGWINCH)
}

Result<ProgramIo> MakeIo(const v1::RunStart& start) {
  ProgramIo io;
  if (start.tty()) {
    io.tty = true;
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    char name[128];
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0 || ptsname_r(master, name, sizeof name) != 0) {
      if (master >= 0) close(master);
      return Status::IOError(fmt::format("run: no pseudo-terminal: {}", strerror(errno)));
    }
    int slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) {
      close(master);
      return Status::IOError(fmt::format("run: cannot open {}: {}", name, strerror(errno)));
    }
    // The caller's terminal, as login and sshd give it.
    if (fchown(slave, start.caller().uid(), static_cast<gid_t>(-1)) != 0 || fchmod(slave, 0620) != 0)
      spdlog::warn("run: cannot give {} to uid {}: {}", name, start.caller().uid(), strerror(errno));
    SetWindow(master, start.window());
    io.child_in = io.child_out = io.child_err = slave;
    io.to_program = master;
    io.from_out = fcntl(master, F_DUPFD_CLOEXEC, 0);  // read by the output thread, closed by it
    if (io.from_out < 0) {
      int err = errno;
      io.CloseAll();
      return Status::IOError(fmt::format("run: dup: {}", strerror(err)));
    }
    return io;
  }
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0) return Status::IOError(fmt::format("run: pipe: {}", strerror(errno)));
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
    return Status::IOError(fmt::format("run: pipe: {}", strerror(errno)));  // (the agent has fds to spare)
  io.child_in = in[0];
  io.child_out = out[1];
  io.child_err = err[1];
  io.to_program = in[1];
  io.from_out = out[0];
  io.from_err = err[0];
  return io;
}

bool WriteAll(int fd, const std::string& bytes, RunPeerStream& stream) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      // The program is not reading its input: wait, but not past the stand-in's end.
      pollfd p{fd, POLLOUT, 0};
      if (stream.Cancelled()) return false;
      poll(&p, 1, 200);
      continue;
    }
    return false;  // EPIPE: the program closed its input
  }
  return true;
}

}  // namespace

std::map<pid_t, RunExecutor::Home> RunExecutor::Homes() const {
  std::lock_guard lock(mu_);
  return homes_;
}

Status RunExecutor::Serve(RunPeerStream& stream) {
  v1::RunInput first;
  if (!stream.Read(&first) || !first.has_start()) return Status::InvalidArgument("a run begins with its start");
  const v1::RunStart& start = first.start();
  if (node_index_() == 0) return Status::Unavailable("this node has no index yet: its runs would have no gpid");
  Result<Launch> launch = PrepareLaunch(start, place_, node_name_);
  if (!launch.ok()) return launch.status();
  if (place_.settle_view) place_.settle_view();
  Result<ProgramIo> made = MakeIo(start);
  if (!made.ok()) return made.status();
  ProgramIo io = *made;
  int stop[2];
  if (pipe2(stop, O_CLOEXEC) != 0) {
    io.CloseAll();
    return Status::IOError(fmt::format("run: pipe: {}", strerror(errno)));
  }
  // Homes() waits while a run is between its fork and its entry: a listing
  // that saw the program (it scans first) then sees where it came from.
  std::unique_lock registering(mu_);
  // For the agent's own user's runs (root's, for a root agent), vfork: the agent's threads and memory are not copied
  // (a fork of it cost 1 to 1.5 ms), and this thread waits until the child
  // has exec'd. The child makes only system calls, with every signal blocked
  // until it has reset their handlers (it shares our memory, not our
  // handlers). Another user's runs fork: a child that takes that user's ids
  // may be stopped by them (or its exec held on a file system of theirs)
  // before it execs, and must never hold this thread and mu_; and the ids it
  // takes would make the memory it shares, the agent's, undumpable.
  sigset_t all, before;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &before);
  pid_t pid = launch->agents_ids ? vfork() : fork();
  if (pid == 0) RunChild(*launch, io.child_in, io.child_out, io.child_err, io.tty);
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
  io.CloseChildEnds();
  if (pid < 0) {
    io.CloseAll();
    close(stop[0]);
    close(stop[1]);
    return Status::Unavailable(fmt::format("run: fork: {}", strerror(errno)));
  }
  homes_[pid] = {start.home_node(), start.home_gpid()};
  registering.unlock();
  if (start.placed()) {
    ++taken_in_;
    ++in_now_;
  }
  // Input is written without blocking (WriteAll waits in poll, watching for
  // the stand-in's end); the output thread retries a terminal master's EAGAIN.
  fcntl(io.to_program, F_SETFL, O_NONBLOCK);
  if (start.placed())
    spdlog::debug("run: pid {} for uid {} of node {}, placed: {}", pid, start.caller().uid(), start.home_node(),
                  start.argv(0));
  else
    spdlog::info("run: pid {} for uid {} of node {}{}: {}", pid, start.caller().uid(), start.home_node(),
                 io.tty ? ", on a terminal" : "", start.argv(0));
  v1::RunOutput started;
  started.mutable_started()->set_gpid(gpid::Make(node_index_(), pid));
  started.mutable_started()->set_node(node_name_);
  stream.Write(started);

  std::atomic<bool> reaped{false};
  // Output, then the exit: on a thread of its own, so that input keeps flowing meanwhile.
  std::thread output([&] {
    pollfd fds[3] = {{io.from_out, POLLIN, 0}, {io.from_err, POLLIN, 0}, {stop[0], POLLIN, 0}};
    int open_pipes = io.from_err >= 0 ? 2 : 1;
    bool writable = true;
    std::string buf(kChunk, '\0');
    while (open_pipes > 0 && fds[2].revents == 0) {
      if (poll(fds, 3, -1) < 0 && errno != EINTR) break;
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        ssize_t n = read(fds[i].fd, buf.data(), buf.size());
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) {  // EOF; EIO from a terminal whose every program is gone
          close(fds[i].fd);
          fds[i].fd = -1;
          --open_pipes;
          continue;
        }
        v1::RunOutput chunk;
        if (i == 0) chunk.set_stdout(buf.data(), static_cast<size_t>(n));
        else chunk.set_stderr(buf.data(), static_cast<size_t>(n));
        if (writable && !stream.Write(chunk)) writable = false;  // keep draining: the program must not block
      }
    }
    for (int i = 0; i < 2; ++i)
      if (fds[i].fd >= 0) close(fds[i].fd);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    reaped = true;
    if (start.placed()) --in_now_;
    // Exit-to-wait: what the program wrote is on its home before its stand-in exits.
    if (writable && place_.settle_peers && start.home_node() != node_name_)
      if (Status settled = place_.settle_peers(); !settled.ok())
        spdlog::warn("run: pid {} of node {} exited, and what it wrote may not be everywhere yet: {}", pid,
                     start.home_node(), settled.message());
    v1::RunOutput exit;
    if (WIFSIGNALED(status)) exit.mutable_exit()->set_signal(WTERMSIG(status));
    else exit.mutable_exit()->set_code(WEXITSTATUS(status));
    if (writable) stream.Write(exit);
  });

  int stdin_fd = io.to_program;
  v1::RunInput input;
  while (stream.Read(&input)) {
    if (input.has_stdin() && stdin_fd >= 0 && !WriteAll(stdin_fd, input.stdin(), stream)) {
      close(stdin_fd);
      stdin_fd = -1;
    } else if (input.has_stdin_eof() && stdin_fd >= 0 && io.tty) {
      // A terminal stays open: its end of input is the EOF character (^D),
      // which a program reading a line in canonical mode takes as the end.
      termios t;
      if (tcgetattr(stdin_fd, &t) == 0) WriteAll(stdin_fd, std::string(1, static_cast<char>(t.c_cc[VEOF])), stream);
    } else if (input.has_stdin_eof() && stdin_fd >= 0) {
      close(stdin_fd);
      stdin_fd = -1;
    } else if (input.has_window() && io.tty && stdin_fd >= 0) {
      SetWindow(stdin_fd, input.window());
    }
  }
  if (stdin_fd >= 0) close(stdin_fd);
  // The stream is over: after the exit, or because the stand-in or its node is gone.
  if (!reaped) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);  // before its setsid, it was in no group of its own
    [[maybe_unused]] ssize_t n = write(stop[1], "x", 1);
    spdlog::info("run: pid {} killed: its stand-in on node {} is gone", pid, start.home_node());
  }
  output.join();
  close(stop[0]);
  close(stop[1]);
  std::lock_guard lock(mu_);
  homes_.erase(pid);
  return Status::Ok();
}

}  // namespace onebox
