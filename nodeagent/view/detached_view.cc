#include "nodeagent/view/detached_view.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace onebox {

DetachedView::DetachedView(std::string view_root) : view_root_(std::move(view_root)) {
  struct stat st;
  if (stat(view_root_.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
}

Result<int> DetachedView::Make(uint64_t connection) {
  std::lock_guard lock(mu_);
  if (served_.count(connection) != 0)
    return Status::FailedPrecondition("this connection has its copy of the view already");
  int fd = open_tree(AT_FDCWD, view_root_.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  const char* step = "open_tree";
  if (fd >= 0) {
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    attr.propagation = MS_PRIVATE;
    if (mount_setattr(fd, "", AT_EMPTY_PATH, &attr, sizeof attr) == 0) {
      served_.insert(connection);
      if (!std::exchange(told_made_, true))
        spdlog::info("the view is handed to programs in other mount namespaces (detached copies of {})", view_root_);
      return fd;
    }
    step = "mount_setattr";
    const int err = errno;
    close(fd);
    errno = err;
  }
  const int err = errno;
  std::string why = fmt::format(
      "programs in another mount namespace cannot reach the view: the detached copy of {} failed ({}: {}){}",
      view_root_, step, strerror(err), err == EPERM ? "; it needs CAP_SYS_ADMIN (an agent running as root)" : "");
  if (told_errors_.insert(err).second) spdlog::warn("{}", why);
  return err == EPERM ? Status::PermissionDenied(why) : Status::Unavailable(why);
}

void DetachedView::ConnectionClosed(uint64_t connection) {
  std::lock_guard lock(mu_);
  served_.erase(connection);
}

}  // namespace onebox
