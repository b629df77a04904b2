// How the agent opens entries of its view: below the view root, never through
// a symlink on the way (any local user may have arranged the view's entries,
// and the agent may run as root); and reads them. Shared by the recorder, the
// prehasher and the materializer.
#pragma once

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

namespace onebox {

// openat2(root_fd, path, flags | O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);
// "" is the root itself.
inline int OpenBeneath(int root_fd, const std::string& path, int flags) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(syscall(SYS_openat2, root_fd, path.empty() ? "." : path.c_str(), &how, sizeof how));
}

// The /proc/self/fd link of fd, by which calls that take a path (xattrs,
// inotify, chmod) reach the very entry fd holds, an O_PATH descriptor too.
inline std::string ProcPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// Reads up to n bytes at offset `at` (fewer only at the end of the file, as
// when it shrank, or on an error: then *failed, if given, is set). Returns
// how many it read.
inline size_t ReadFullAt(int fd, char* buf, size_t n, uint64_t at, bool* failed = nullptr) {
  size_t have = 0;
  while (have < n) {
    ssize_t got = pread(fd, buf + have, n - have, static_cast<off_t>(at + have));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && failed) *failed = true;
    if (got <= 0) break;
    have += static_cast<size_t>(got);
  }
  return have;
}

}  // namespace onebox
