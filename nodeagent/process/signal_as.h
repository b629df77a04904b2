// Sending a signal with a caller's rights: the kill(2) (or sigqueue) is made
// by a short-lived child process whose uids are the caller's, and the kernel
// applies its own rule: the sender's real or effective uid is the target's
// real or saved uid, or the sender is root. EPERM and ESRCH are then the
// kernel's own answers. (Not by a thread of the agent with the caller's
// uid: the caller could stop or kill that thread, and the agent with it.)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

#include "consistency/status.h"
#include "onebox/v1/process.pb.h"

namespace onebox {

// pid > 0: that process; pid < 0: the process group -pid. value: sigqueue's
// (a single process only). PermissionDenied (EPERM), NotFound (ESRCH) or
// InvalidArgument (EINVAL) as the kernel answered. An agent that is not root
// signals only for its own user.
Status SignalAs(const v1::CallerCredentials& caller, pid_t pid, int sig, std::optional<int64_t> value);

// The errno a signal call's Status stands for (EPERM, ESRCH, EINVAL; EIO
// for what the kernel does not say: a node that could not be reached).
int SignalErrno(const Status& s);

}  // namespace onebox
