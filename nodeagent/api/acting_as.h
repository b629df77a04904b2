// Doing a check with the caller's rights: for as long as an ActingAs lives,
// this thread's file-system uid, gid and supplementary groups are the
// caller's (setfsuid, setfsgid and setgroups, made as raw system calls:
// glibc's setgroups would change every thread of the agent), so the kernel
// decides what the caller may do to a path (permission bits, ACLs, every
// directory of the walk) exactly as for the caller's own open(). The agent
// itself then acts; the other threads keep the agent's rights throughout.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "consistency/status.h"
#include "nodeagent/api/access.h"

namespace onebox {

class ActingAs {
 public:
  // Takes caller's rights on this thread. PermissionDenied when the agent
  // cannot (it runs as another user than the caller, and not as root).
  static Result<ActingAs> Take(const Caller& caller);
  ActingAs(ActingAs&& other) noexcept;
  ActingAs& operator=(ActingAs&&) = delete;
  ~ActingAs();  // gives the agent's rights back

  // Whether the caller may do `mode` (W_OK, X_OK...) to name in dir (to dir
  // itself when name is empty), as the kernel decides it (faccessat2 with
  // AT_EACCESS: the file-system ids, not the real ones; no symlink followed).
  Status MayAccess(int dir, const std::string& name, int mode, const std::string& what) const;

 private:
  ActingAs() = default;
  bool switched_ = false;
  uid_t saved_uid_ = 0;
  gid_t saved_gid_ = 0;
  std::vector<gid_t> saved_groups_;
};

}  // namespace onebox
