#include "nodeagent/api/acting_as.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace onebox {

namespace {

// The raw calls: per thread, as the kernel makes them.
uid_t SetFsUid(uid_t uid) { return static_cast<uid_t>(syscall(SYS_setfsuid, uid)); }
gid_t SetFsGid(gid_t gid) { return static_cast<gid_t>(syscall(SYS_setfsgid, gid)); }
int SetGroups(const std::vector<gid_t>& groups) { return static_cast<int>(syscall(SYS_setgroups, groups.size(), groups.data())); }

std::vector<gid_t> CurrentGroups() {
  int n = getgroups(0, nullptr);
  std::vector<gid_t> groups(n > 0 ? static_cast<size_t>(n) : 0);
  if (n > 0 && getgroups(n, groups.data()) != n) groups.clear();
  return groups;
}

}  // namespace

Result<ActingAs> ActingAs::Take(const Caller& caller) {
  if (!caller.Identified()) return Status::PermissionDenied("only a caller the kernel or a certificate named can be acted for");
  ActingAs as;
  // The agent's own user (root included): its rights are the agent's already.
  if (caller.uid == geteuid()) return as;
  if (geteuid() != 0)
    return Status::PermissionDenied(fmt::format(
        "the agent runs as uid {}, not root, and cannot act for uid {}", geteuid(), caller.uid));
  as.saved_groups_ = CurrentGroups();
  as.saved_gid_ = SetFsGid(caller.gid);
  as.saved_uid_ = SetFsUid(caller.uid);
  as.switched_ = true;  // from here on the destructor puts everything back
  if (SetGroups(caller.groups) != 0)
    return Status::PermissionDenied(fmt::format("cannot take the groups of uid {}: {}", caller.uid, strerror(errno)));
  // setfsuid says nothing of failure: read the ids back.
  if (SetFsUid(static_cast<uid_t>(-1)) != caller.uid || SetFsGid(static_cast<gid_t>(-1)) != caller.gid)
    return Status::PermissionDenied(fmt::format("cannot take the file-system ids of uid {}", caller.uid));
  return as;
}

ActingAs::ActingAs(ActingAs&& other) noexcept
    : switched_(other.switched_),
      saved_uid_(other.saved_uid_),
      saved_gid_(other.saved_gid_),
      saved_groups_(std::move(other.saved_groups_)) {
  other.switched_ = false;
}

ActingAs::~ActingAs() {
  if (!switched_) return;
  SetFsUid(saved_uid_);
  SetFsGid(saved_gid_);
  SetGroups(saved_groups_);
}

Status ActingAs::MayAccess(int dir, const std::string& name, int mode, const std::string& what) const {
  int flags = AT_EACCESS | AT_SYMLINK_NOFOLLOW | (name.empty() ? AT_EMPTY_PATH : 0);
  if (syscall(SYS_faccessat2, dir, name.c_str(), mode, flags) == 0) return Status::Ok();
  int err = errno;
  if (err == ENOENT) return Status::NotFound(fmt::format("{}: no such file or directory", what));
  if (err == EACCES || err == EPERM) return Status::PermissionDenied(fmt::format("{}: permission denied", what));
  return Status::IOError(fmt::format("{}: {}", what, strerror(err)));
}

}  // namespace onebox
