// Interposed: fsync and fdatasync. For a file in the agent's view (whatever
// opened it: the program, a parent shell, an exec'd predecessor) the kernel's
// fsync comes first, then the agent records the file's version with a synced
// store write, and only then does the call return: fsync is a durability point
// for the namespace too. An fd outside the view costs one readlink more.
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "naming/cluster_path.h"
#include "preload/link.h"
#include "preload/shim.h"

using namespace onebox;
using namespace onebox::shim;

namespace onebox::shim {

const char* ViewRelPathOf(int fd, char* real, size_t cap, bool deleted_ok) {
  ssize_t n = ViewLinkOf(fd, real, cap);
  if (n <= 0) return nullptr;
  static constexpr std::string_view kDeleted = " (deleted)";
  if (static_cast<size_t>(n) > kDeleted.size() && std::string_view(real + n - kDeleted.size()) == kDeleted) {
    if (!deleted_ok) return nullptr;  // unlinked (or O_TMPFILE): no name left to record
    n -= static_cast<ssize_t>(kDeleted.size());
    real[n] = '\0';
  }
  DiscoverViewRoot(real);  // an fd inherited into a process that never spoke to the agent
  if (ViewRoot().empty() && Root().Holds(real) && InOwnerProcess()) {
    // The kernel names an fd in a detached view (a pod's) by its cluster
    // name: this process learns that view from the agent, then asks again.
    const int saved = errno;
    const bool connected = ViewFd() >= 0;
    errno = saved;
    if (connected && (n = ViewLinkOf(fd, real, cap)) <= 0) return nullptr;
  }
  std::string_view view = ViewRoot();
  std::string_view path(real, static_cast<size_t>(n));
  if (view.empty() || path.size() <= view.size() + 1 || path.compare(0, view.size(), view) != 0 ||
      path[view.size()] != '/')
    return nullptr;  // not a cluster file
  return real + view.size() + 1;
}

int PublishIfInView(int fd, bool* in_view) {
  if (in_view) *in_view = false;
  char real[kMaxPathBytes];
  const char* rel = ViewRelPathOf(fd, real, sizeof real, /*deleted_ok=*/false);
  if (rel == nullptr) return 0;
  if (in_view) *in_view = true;
  int err = Publish(rel);
  return err == 0 ? 0 : Fail(err == ENOTCONN ? ENOTCONN : EIO);
}

}  // namespace onebox::shim

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

int fsync(int fd) {
  ONEBOX_REAL(fsync);
  int r = real_fsync(fd);
  return r == 0 ? PublishIfInView(fd) : r;
}

int fdatasync(int fd) {
  ONEBOX_REAL(fdatasync);
  int r = real_fdatasync(fd);
  return r == 0 ? PublishIfInView(fd) : r;
}

#pragma GCC visibility pop
}  // extern "C"
