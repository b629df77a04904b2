// Interposed: kill, killpg and sigqueue. A pid above 2^22 is a gpid
// (proto/gpid.h), a process of some node of the cluster: the agent sends
// the signal on its node, with this process's credentials as the kernel
// names them on the agent's socket, and the answer is kill's own (EPERM,
// ESRCH). Every local pid goes straight to libc: two compares on the way.
#include <errno.h>
#include <signal.h>

#include "preload/link.h"
#include "preload/shim.h"
#include "proto/gpid.h"

using namespace onebox::shim;

namespace {

int SignalCluster(long long gpid, int sig, bool has_value, long long value) {
  int err = SignalGpid(gpid, sig, has_value, value);
  return err == 0 ? 0 : Fail(err);
}

bool IsGpid(long long pid) { return onebox::gpid::IsGlobal(pid < 0 ? -pid : pid); }

}  // namespace

extern "C" {
#pragma GCC visibility push(default)

int kill(pid_t pid, int sig) {
  if (__builtin_expect(IsGpid(pid), 0)) return SignalCluster(pid, sig, false, 0);
  ONEBOX_REAL(kill);
  return real_kill(pid, sig);
}

// glibc's killpg calls its own kill, not ours.
int killpg(pid_t pgrp, int sig) {
  if (__builtin_expect(pgrp > 0 && IsGpid(pgrp), 0)) return SignalCluster(-static_cast<long long>(pgrp), sig, false, 0);
  ONEBOX_REAL(killpg);
  return real_killpg(pgrp, sig);
}

int sigqueue(pid_t pid, int sig, const union sigval value) {
  if (__builtin_expect(pid > 0 && IsGpid(pid), 0))
    return SignalCluster(pid, sig, true, reinterpret_cast<long long>(value.sival_ptr));
  ONEBOX_REAL(sigqueue);
  return real_sigqueue(pid, sig, value);
}

#pragma GCC visibility pop
}
