// What one look at an entry of the view saw (fstat), and the comparisons the
// view's parts make between two looks, or between a look and a recorded
// version: written once here. Times are kept in nanoseconds, as the store's
// inodes keep them.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <ctime>

#include "onebox/v1/namespace.pb.h"

namespace onebox {

inline int64_t Ns(const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec; }
inline timespec Ts(int64_t ns) {
  return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

// The agent's own user, read once (it never changes it): only as root does
// it give files their owners.
inline uid_t AgentUid() {
  static const uid_t uid = geteuid();
  return uid;
}
inline int64_t MtimeNs(const struct stat& st) { return Ns(st.st_mtim); }

struct FileLook {
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;  // moves with any change, content or metadata
  mode_t mode = 0;       // permission bits
  uid_t uid = 0;
  gid_t gid = 0;
  nlink_t nlink = 0;
  bool regular = false;  // a regular file

  static FileLook Of(const struct stat& st) {
    return {st.st_ino, st.st_size, Ns(st.st_mtim), Ns(st.st_ctim), static_cast<mode_t>(st.st_mode & 07777),
            st.st_uid, st.st_gid, st.st_nlink, S_ISREG(st.st_mode)};
  }
  // The same file, and nothing about it changed in between. For a regular
  // file of several names (a hard link, now or at the other look) the ctime
  // does not count: a name made or removed elsewhere moves it alone, with no
  // event in this name's directory (and names made and removed may bring the
  // count back to what it was). What else moves only the ctime (an
  // attribute set through another name) has its own event there.
  bool Unchanged(const FileLook& o) const { return SameButCtime(o) && (ctime_ns == o.ctime_ns || Linked(o)); }
  // All but the ctime and link count alike.
  bool SameButCtime(const FileLook& o) const {
    return ino == o.ino && size == o.size && mtime_ns == o.mtime_ns && mode == o.mode && uid == o.uid && gid == o.gid;
  }
  // A regular file of several names, at this look or at o.
  bool Linked(const FileLook& o) const { return regular && o.regular && (nlink > 1 || o.nlink > 1); }
  // The same file with the same content, as far as size and mtime tell.
  bool SameContent(const FileLook& o) const { return ino == o.ino && size == o.size && mtime_ns == o.mtime_ns; }
  // The same directory with the same mode and owner: its ctime and mtime
  // move with its entries (made or removed by anyone), so they say nothing
  // of the directory itself.
  bool SameDirectory(const FileLook& o) const { return ino == o.ino && mode == o.mode && uid == o.uid && gid == o.gid; }
};

// Whether a file that st shows holds the version inode records: its size and
// mtime (what a record of its content keeps).
inline bool ShowsVersion(const struct stat& st, const v1::Inode& inode) {
  return static_cast<uint64_t>(st.st_size) == inode.size() && MtimeNs(st) == inode.mtime_ns();
}

// Whether an entry st shows has inode's mode and owner as the materializer
// gives them (view_materializer.cc, SetOwnerAndMode): the owner only when the
// agent runs as root, and the mode without setuid and setgid bits when it
// could not give the owner. (Symlinks have no mode of their own.)
inline bool ShowsMetadata(const struct stat& st, const v1::Inode& inode) {
  const mode_t mode = st.st_mode & 07777;
  return (S_ISLNK(st.st_mode) || mode == inode.mode() || mode == (inode.mode() & 01777)) &&
         (AgentUid() != 0 || (st.st_uid == inode.uid() && st.st_gid == inode.gid()));
}

}  // namespace onebox
