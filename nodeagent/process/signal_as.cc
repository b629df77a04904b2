#include "nodeagent/process/signal_as.h"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace onebox {

namespace {

int Send(pid_t pid, int sig, std::optional<int64_t> value, uid_t as_uid) {
  if (!value) return kill(pid, sig);
  if (pid <= 0) {
    errno = EINVAL;  // sigqueue names one process
    return -1;
  }
  siginfo_t info;
  memset(&info, 0, sizeof(info));
  info.si_signo = sig;
  info.si_code = SI_QUEUE;
  info.si_pid = getpid();
  info.si_uid = as_uid;
  info.si_value.sival_ptr = reinterpret_cast<void*>(static_cast<intptr_t>(*value));
  return static_cast<int>(syscall(SYS_rt_sigqueueinfo, pid, sig, &info));
}

Status FromErrno(int err, pid_t pid, int sig) {
  std::string what = fmt::format("signal {} to {} {}", sig, pid < 0 ? "process group" : "pid", pid < 0 ? -pid : pid);
  if (err == EPERM) return Status::PermissionDenied(what + ": operation not permitted");
  if (err == ESRCH) return Status::NotFound(what + ": no such process");
  if (err == EINVAL) return Status::InvalidArgument(what + ": invalid argument");
  return Status::IOError(fmt::format("{}: {}", what, strerror(err)));
}

}  // namespace

Status SignalAs(const v1::CallerCredentials& caller, pid_t pid, int sig, std::optional<int64_t> value) {
  if (sig < 0 || sig >= NSIG) return FromErrno(EINVAL, pid, sig);
  // 0 and -1 name the sender's own group and every process: never through the agent.
  if (pid == 0 || pid == -1) return FromErrno(EINVAL, pid, sig);
  const uid_t uid = caller.uid();
  if (uid == static_cast<uid_t>(-1)) return Status::InvalidArgument("no caller uid");
  const uid_t agent = geteuid();
  if (uid == agent || uid == 0) {
    // The agent's own user (root for root): the agent's rights are the caller's.
    if (uid == 0 && agent != 0) return Status::PermissionDenied("the agent does not run as root: it cannot act for root");
    return Send(pid, sig, value, uid) == 0 ? Status::Ok() : FromErrno(errno, pid, sig);
  }
  if (agent != 0)
    return Status::PermissionDenied(
        fmt::format("the agent runs as uid {}, not root, and cannot signal for uid {}", agent, uid));
  // The kill is made by a short-lived child with the caller's uid, never by
  // a thread of the agent: a thread whose real uid were the caller's could be
  // stopped or killed by the caller (tgkill), and the whole agent with it.
  // The caller may stop the child too: it gets 2 s, then it is killed.
  // (The child makes only system calls: the agent has threads.)
  pid_t child = fork();
  if (child == 0) {
    if (syscall(SYS_setresuid, uid, uid, uid) != 0) _exit(EPERM);
    _exit(Send(pid, sig, value, uid) == 0 ? 0 : errno);
  }
  if (child < 0) return Status::IOError(fmt::format("signal: fork: {}", strerror(errno)));
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  std::chrono::microseconds pause{50};
  pid_t done = 0;
  while ((done = waitpid(child, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(20));
  }
  if (done == 0) {
    kill(child, SIGKILL);
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    return Status::IOError("signal: its sender was held up (stopped?) and was killed");
  }
  if (done < 0 || !WIFEXITED(status)) return Status::IOError("signal: its sender did not finish");
  return WEXITSTATUS(status) == 0 ? Status::Ok() : FromErrno(WEXITSTATUS(status), pid, sig);
}

int SignalErrno(const Status& s) {
  switch (s.code()) {
    case Code::kOk: return 0;
    case Code::kPermissionDenied: return EPERM;
    case Code::kNotFound: return ESRCH;
    case Code::kInvalidArgument: return EINVAL;
    default: return EIO;
  }
}

}  // namespace onebox
