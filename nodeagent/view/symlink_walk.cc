#include "nodeagent/view/symlink_walk.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "naming/ns_key.h"

namespace onebox {

namespace {

constexpr int kMaxDepth = 512;

// Where a directory is: its inode and mount (the device where the kernel
// cannot say the mount).
struct DirId {
  uint64_t ino = 0, mount = 0;
};
bool IdentifyDir(int fd, DirId* id) {
  struct statx stx;
  if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_MNT_ID, &stx) != 0) return false;
  id->ino = stx.stx_ino;
  id->mount = (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : (uint64_t{stx.stx_dev_major} << 32 | stx.stx_dev_minor);
  return true;
}

// Lists d whole: kFailed at a symlink (or an error), else kClean with the
// subdirectories (name, inode as listed) in *subdirs.
Walk ListDir(DIR* d, int depth, std::vector<std::pair<std::string, ino_t>>* subdirs) {
  errno = 0;
  while (dirent* e = readdir(d)) {
    std::string_view name(e->d_name);
    if (name == "." || name == "..") continue;
    if (depth == 0 && IsAgentEntry(name)) continue;  // never a cluster path
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st;
      if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) return Walk::kFailed;
      type = IFTODT(st.st_mode);
    }
    if (type == DT_LNK) return Walk::kFailed;
    if (type == DT_DIR) subdirs->emplace_back(std::string(name), e->d_ino);
  }
  return errno != 0 ? Walk::kFailed : Walk::kClean;
}

Walk Below(int dir_fd, const std::string& path, int depth, std::string* obstacle) {
  if (depth >= kMaxDepth) {  // deeper than we go: until it changes
    close(dir_fd);
    *obstacle = path;
    return Walk::kObstacle;
  }
  DirId self;
  DIR* d = IdentifyDir(dir_fd, &self) ? fdopendir(dir_fd) : nullptr;
  if (d == nullptr) {
    close(dir_fd);
    return Walk::kFailed;
  }
  std::vector<std::pair<std::string, ino_t>> subdirs;
  Walk result = ListDir(d, depth, &subdirs);
  for (size_t i = 0; result == Walk::kClean && i < subdirs.size(); ++i) {
    std::string sub_path = JoinKey(path, subdirs[i].first);
    int sub = openat(dirfd(d), subdirs[i].first.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DirId id;
    if (sub < 0 || !IdentifyDir(sub, &id)) {
      // One we may not list stays so until its mode, owner or place changes.
      bool denied = sub < 0 && (errno == EACCES || errno == EPERM);
      if (sub >= 0) close(sub);
      if (denied) *obstacle = sub_path;
      result = denied ? Walk::kObstacle : Walk::kFailed;
      break;
    }
    if (id.mount != self.mount || id.ino != subdirs[i].second) {
      // A mount point (its listing named the directory below it) stays one
      // until the mount table changes; another inode was renamed there meanwhile.
      close(sub);
      if (id.mount != self.mount) *obstacle = sub_path;
      result = id.mount != self.mount ? Walk::kObstacle : Walk::kFailed;
      break;
    }
    result = Below(sub, sub_path, depth + 1, obstacle);
  }
  closedir(d);
  return result;
}

}  // namespace

Walk NoSymlinkBelow(int dir_fd, const std::string& path, std::string* obstacle) {
  return Below(dir_fd, path, 0, obstacle);
}

}  // namespace onebox
