// The walk behind a proof that the view holds no symlink (view/symlink_guard.h,
// (3)): every directory listed whole, nothing followed, each subdirectory
// opened by name and checked to be the inode the listing named (a directory
// renamed meanwhile is not followed elsewhere) on the same mount.
#pragma once

#include <string>

namespace onebox {

enum class Walk {
  kClean,     // no symlink below
  kFailed,    // a symlink, or a change while we walked: try again soon
  kObstacle,  // what the walk cannot pass (*obstacle): try again when it may be gone
};

// Walks below dir_fd (an open directory of the view, at path; closed here).
// The view root's own entries (".onebox-*") are not walked. *obstacle names
// a mount point, a directory we may not list, or one too deep.
Walk NoSymlinkBelow(int dir_fd, const std::string& path, std::string* obstacle);

}  // namespace onebox
