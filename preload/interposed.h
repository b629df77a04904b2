// The libc functions libonebox.so interposes, declared once, in the manner of
// gVisor's syscall table: X(family, function, support, note), where family is
// the preload/ file that implements it (family.cc), support what a program
// can rely on for a cluster path (Support below) and note one line on what
// happens there. Everything else about the list comes from it:
// - the shim includes it (preload/libc_decls.h): every function must have a
//   libc declaration, and its wrapper's definition must match it;
// - exports.map, the shim's export map, is written from it at build time by
//   interposed_table.cc, and the link fails when a listed function has no
//   wrapper (--no-undefined-version);
// - the per-function table of docs/compatibility.md is written from it
//   (`cmake --build build --target compat_doc`), and a test checks the page;
// - the tests check the library exports exactly these, each from its
//   family's file, and that calls_probe calls every one of them.
// A function listed twice does not compile (Interposed below).
#pragma once

#include <cstddef>
#include <string_view>

// X(enumerator, name in the doc, what a program can rely on for a cluster path).
#define ONEBOX_SUPPORT_LEVELS(X)                                                                                        \
  X(kFull, "full", "behaves as on a local file system (results and errno as natively); the note says what the cluster adds") \
  X(kPartial, "partial", "works, with the difference or the gap the note names")                                        \
  X(kPassthrough, "passthrough", "libc's own call, unchanged; the shim only watches it, for the reason the note gives")

#define ONEBOX_INTERPOSED(X)                                                                                            \
  X(file_open, open, kFull, "a real kernel fd on the view file; flags and mode as given, permissions checked by the kernel") \
  X(file_open, open64, kFull, "as open, with O_LARGEFILE")                                                              \
  X(file_open, openat, kFull, "as open; relative to a dirfd the shim opened in the cluster, a cluster path")            \
  X(file_open, openat64, kFull, "as openat, with O_LARGEFILE")                                                          \
  X(file_open, creat, kFull, "open with O_CREAT, O_WRONLY and O_TRUNC")                                                 \
  X(file_open, creat64, kFull, "as creat, with O_LARGEFILE")                                                            \
  X(file_open, __open_2, kFull, "_FORTIFY_SOURCE entry: open without a mode")                                           \
  X(file_open, __open64_2, kFull, "_FORTIFY_SOURCE entry: open64 without a mode")                                       \
  X(file_open, __openat_2, kFull, "_FORTIFY_SOURCE entry: openat without a mode")                                       \
  X(file_open, __openat64_2, kFull, "_FORTIFY_SOURCE entry: openat64 without a mode")                                   \
  X(file_open, fopen, kFull, "opened here and wrapped with fdopen (glibc's fopen does not call the interposable open)") \
  X(file_open, fopen64, kFull, "as fopen")                                                                              \
  X(file_open, freopen, kFull, "opened here, then the stream is reopened on /proc/thread-self/fd/N")                    \
  X(file_open, freopen64, kFull, "as freopen")                                                                          \
  X(file_open, opendir, kFull, "fdopendir on the view directory; readdir, rewinddir and closedir are libc's own")       \
  X(file_open, mkstemp, kFull, "the template is filled here (glibc's uses an internal open): O_EXCL, mode 0600")        \
  X(file_open, mkstemp64, kFull, "as mkstemp, with O_LARGEFILE")                                                        \
  X(file_open, mkostemp, kFull, "as mkstemp, with the given flags")                                                     \
  X(file_open, mkostemp64, kFull, "as mkostemp, with O_LARGEFILE")                                                      \
  X(file_open, mkstemps, kFull, "as mkstemp, with a suffix")                                                            \
  X(file_open, mkstemps64, kFull, "as mkstemps, with O_LARGEFILE")                                                      \
  X(file_open, mkostemps, kFull, "as mkstemps, with the given flags")                                                   \
  X(file_open, mkostemps64, kFull, "as mkostemps, with O_LARGEFILE")                                                    \
  X(file_open, mkdtemp, kFull, "the template is filled here: an exclusive mkdir, mode 0700")                            \
  X(exec, execve, kPartial, "a cluster program runs from an O_PATH fd (execveat); a script's interpreter is run here with the script's path; ONEBOX_PLACE may place it") \
  X(exec, execv, kPartial, "as execve")                                                                                 \
  X(exec, execvp, kPartial, "as execve; PATH is searched here when it names cluster directories")                       \
  X(exec, execvpe, kPartial, "as execvp")                                                                               \
  X(exec, execl, kPartial, "as execv")                                                                                  \
  X(exec, execlp, kPartial, "as execvp")                                                                                \
  X(exec, execle, kPartial, "as execve")                                                                                \
  X(exec, posix_spawn, kPartial, "a cluster program runs as /proc/self/fd/N (thread-self in a thread with its own fd table), whose O_PATH fd stays open in it; ONEBOX_PLACE may place it") \
  X(exec, posix_spawnp, kPartial, "as posix_spawn; PATH is searched here when it names cluster directories")            \
  X(exec, dlopen, kPartial, "a cluster library is opened as /proc/self/fd/N (its name in the link map; thread-self as for posix_spawn)") \
  X(file_walk, scandir, kFull, "done here, over the view directory")                                                    \
  X(file_walk, scandir64, kFull, "as scandir")                                                                          \
  X(file_walk, glob, kFull, "glibc's glob, with GLOB_ALTDIRFUNC hooks on the shim's functions")                         \
  X(file_walk, glob64, kFull, "as glob")                                                                                \
  X(file_walk, nftw, kPartial, "runs over the view, the callback gets cluster paths; physical: FTW_PHYS is forced")     \
  X(file_walk, nftw64, kPartial, "as nftw")                                                                             \
  X(file_walk, ftw, kPartial, "as nftw (symlinks are reported, not followed)")                                          \
  X(file_walk, ftw64, kPartial, "as ftw")                                                                               \
  X(file_stat, stat, kFull, "the view file's metadata; st_dev and st_ino are those of the view's file system")          \
  X(file_stat, stat64, kFull, "as stat")                                                                                \
  X(file_stat, lstat, kFull, "as stat, of the link itself")                                                             \
  X(file_stat, lstat64, kFull, "as lstat")                                                                              \
  X(file_stat, fstatat, kFull, "as stat or lstat (AT_SYMLINK_NOFOLLOW)")                                                \
  X(file_stat, fstatat64, kFull, "as fstatat")                                                                          \
  X(file_stat, statx, kFull, "as stat, with the fields asked for")                                                      \
  X(file_stat, __xstat, kFull, "entry of programs built against glibc before 2.33: as stat")                            \
  X(file_stat, __xstat64, kFull, "entry of programs built against glibc before 2.33: as stat64")                        \
  X(file_stat, __lxstat, kFull, "entry of programs built against glibc before 2.33: as lstat")                          \
  X(file_stat, __lxstat64, kFull, "entry of programs built against glibc before 2.33: as lstat64")                      \
  X(file_stat, __fxstatat, kFull, "entry of programs built against glibc before 2.33: as fstatat")                      \
  X(file_stat, __fxstatat64, kFull, "entry of programs built against glibc before 2.33: as fstatat64")                  \
  X(file_stat, access, kFull, "the kernel's check for the caller's real ids")                                           \
  X(file_stat, faccessat, kFull, "the kernel's check, with real or effective ids as asked")                             \
  X(file_stat, euidaccess, kFull, "the kernel's check for the caller's effective ids")                                  \
  X(file_stat, eaccess, kFull, "as euidaccess")                                                                         \
  X(file_stat, readlink, kFull, "the target as written; a non-link gives EINVAL")                                       \
  X(file_stat, readlinkat, kFull, "as readlink")                                                                        \
  X(file_stat, statfs, kFull, "the file system holding the view")                                                       \
  X(file_stat, statfs64, kFull, "as statfs")                                                                            \
  X(file_stat, statvfs, kFull, "the file system holding the view")                                                      \
  X(file_stat, statvfs64, kFull, "as statvfs")                                                                          \
  X(file_stat, realpath, kFull, "ROOT/..., never the view's real location")                                             \
  X(file_stat, canonicalize_file_name, kFull, "realpath into a new buffer")                                             \
  X(file_stat, __realpath_chk, kFull, "_FORTIFY_SOURCE entry: realpath")                                                \
  X(file_stat, __readlink_chk, kFull, "_FORTIFY_SOURCE entry: readlink")                                                \
  X(file_stat, __readlinkat_chk, kFull, "_FORTIFY_SOURCE entry: readlinkat")                                            \
  X(file_dir, mkdir, kFull, "in the view, with the caller's credentials; exclusive across the live nodes (under a directory lease: a vote round for the first in a directory this node holds no lease over)") \
  X(file_dir, mkdirat, kFull, "as mkdir")                                                                               \
  X(file_dir, rmdir, kFull, "in the view; the cluster root itself gives EBUSY")                                         \
  X(file_dir, unlink, kFull, "in the view, with the caller's credentials")                                              \
  X(file_dir, unlinkat, kFull, "as unlink, or rmdir with AT_REMOVEDIR")                                                 \
  X(file_dir, rename, kFull, "in the view; between the cluster and a native path EXDEV, as between file systems")       \
  X(file_dir, renameat, kFull, "as rename")                                                                             \
  X(file_dir, renameat2, kFull, "as rename, with the given flags")                                                      \
  X(file_dir, link, kPartial, "in the view, EXDEV across; the names are one file (inode, link count) on every node")     \
  X(file_dir, linkat, kPartial, "as link; an O_TMPFILE fd cannot be linked into the cluster (EXDEV)")                   \
  X(file_dir, symlink, kPartial, "announced to the agent first (0.1 ms); a target out of the cluster does not resolve (ENOENT)") \
  X(file_dir, symlinkat, kPartial, "as symlink")                                                                        \
  X(file_dir, chmod, kFull, "on the view file; the mode travels to the other nodes")                                    \
  X(file_dir, fchmodat, kFull, "as chmod")                                                                              \
  X(file_dir, lchmod, kFull, "as fchmodat with AT_SYMLINK_NOFOLLOW (mkfifo -m, mknod -m use it)")                        \
  X(file_dir, chown, kPartial, "on the view file; the owner travels only when the agents run as root")                  \
  X(file_dir, lchown, kPartial, "as chown, of the link itself")                                                         \
  X(file_dir, fchownat, kPartial, "as chown or lchown")                                                                 \
  X(file_dir, truncate, kFull, "on the view file; the agent records the new content")                                   \
  X(file_dir, truncate64, kFull, "as truncate")                                                                         \
  X(file_dir, utimensat, kFull, "on the view file; a file's mtime travels, a directory's is each node's own")           \
  X(file_dir, utimes, kFull, "as utimensat")                                                                            \
  X(file_dir, utime, kFull, "as utimensat")                                                                             \
  X(file_dir, futimesat, kFull, "as utimensat")                                                                         \
  X(file_dir, mknod, kPartial, "in the view, node-local: the namespace records a device node or fifo as FILE_TYPE_OTHER") \
  X(file_dir, mknodat, kPartial, "as mknod")                                                                            \
  X(file_dir, mkfifo, kPartial, "as mknod")                                                                             \
  X(file_dir, mkfifoat, kPartial, "as mknod")                                                                           \
  X(file_dir, chdir, kFull, "a real chdir into the view, which children inherit")                                       \
  X(file_dir, fchdir, kFull, "libc's own; the shim notes whether the cwd is now in the cluster")                        \
  X(file_dir, getcwd, kFull, "ROOT/... in the cluster, never the view's real location")                                 \
  X(file_dir, __getcwd_chk, kFull, "_FORTIFY_SOURCE entry: getcwd")                                                     \
  X(file_dir, get_current_dir_name, kFull, "as getcwd")                                                                 \
  X(file_xattr, getxattr, kFull, "on the view file, whose attributes replicate (regular files and directories); the agent's marks (user.onebox.*) give ENODATA") \
  X(file_xattr, lgetxattr, kPartial, "as getxattr; on a symlink none (ENODATA, as Linux for user.*)")                   \
  X(file_xattr, fgetxattr, kFull, "as getxattr, on any fd")                                                             \
  X(file_xattr, setxattr, kFull, "as getxattr; setting an agent's mark gives EPERM")                                    \
  X(file_xattr, lsetxattr, kPartial, "as setxattr; on a symlink EPERM whatever the name (Linux: user.*)")               \
  X(file_xattr, fsetxattr, kFull, "as setxattr, on any fd")                                                             \
  X(file_xattr, listxattr, kFull, "as getxattr; the agent's marks are left out of the list")                            \
  X(file_xattr, llistxattr, kPartial, "as listxattr; on a symlink an empty list")                                       \
  X(file_xattr, flistxattr, kFull, "as listxattr, on any fd")                                                           \
  X(file_xattr, removexattr, kFull, "as setxattr")                                                                      \
  X(file_xattr, lremovexattr, kPartial, "as setxattr; on a symlink EPERM whatever the name (Linux: user.*)")            \
  X(file_xattr, fremovexattr, kFull, "as setxattr, on any fd")                                                          \
  X(file_sync, fsync, kFull, "the kernel's sync, then the file's version is synced on the write quorum; EIO without one") \
  X(file_sync, fdatasync, kFull, "as fsync")                                                                            \
  X(file_write, write, kPartial, "libc's own; on an O_SYNC/O_DSYNC cluster fd, published as by fsync (SCM_RIGHTS fds excepted)") \
  X(file_write, pwrite, kPartial, "as write")                                                                           \
  X(file_write, pwrite64, kPartial, "as write")                                                                         \
  X(file_write, writev, kPartial, "as write")                                                                           \
  X(file_write, pwritev, kPartial, "as write")                                                                          \
  X(file_write, pwritev64, kPartial, "as write")                                                                        \
  X(file_write, pwritev2, kPartial, "as write, and RWF_DSYNC or RWF_SYNC on any cluster fd publishes too")              \
  X(file_write, pwritev64v2, kPartial, "as pwritev2")                                                                   \
  X(socket, bind, kPartial, "a TCP port on the any address or loopback, or a Unix stream socket under the cluster root, is claimed across the cluster first (EADDRINUSE when another node's program holds it); port 0 and other addresses are libc's") \
  X(socket, sendmsg, kPartial, "SCM_RIGHTS on a Unix socket connected to another node's gives EOPNOTSUPP (descriptors cannot cross nodes); otherwise libc's") \
  X(socket, connect, kPartial, "a Unix socket under the cluster root: in the view, else the socket another node's program bound there (through the agents); TCP to a loopback port another node's program holds: the socket becomes a link to that node (no relay here); every other address is libc's") \
  X(socket, accept, kPartial, "a connection the agent made for another node's client is replaced by the link from that node (no relay; the same loopback addresses answered); every other is libc's") \
  X(socket, accept4, kPartial, "as accept") \
  X(socket, getpeername, kPartial, "a socket connect() made a link to another node's port answers the loopback address and port connected to; every other socket is libc's") \
  X(socket, getsockname, kPartial, "as getpeername: loopback, with the link's own port") \
  X(process_signal, kill, kFull, "a gpid of another node (onebox ps) is signalled there, with the caller's rights; a local pid is libc's") \
  X(process_signal, killpg, kFull, "as kill, for the process group of a gpid")                                          \
  X(process_signal, sigqueue, kFull, "as kill, with the value; the receiver's si_pid is its node agent's pid")           \
  X(raw_syscall, syscall, kPartial, "path-taking numbers go through the functions above; other numbers (openat2) pass through") \
  X(file_lock, flock, kPartial, "on a cluster file: excludes programs on every node (the file's lock home decides), shared and exclusive, LOCK_NB gives EWOULDBLOCK, a wait ends with EINTR on a signal without SA_RESTART; ends at the last close of the open file, as natively; the kernel's own call while its node holds a lease on the file, else a node-agent round trip (see docs/consistency.md for leases, partitions and node deaths); ENOLCK when no home answers") \
  X(file_lock, lockf, kPartial, "as fcntl's POSIX locks (F_LOCK, F_TLOCK, F_ULOCK, F_TEST)")                             \
  X(file_lock, lockf64, kPartial, "as lockf")                                                                          \
  X(fd_guard, close, kPassthrough, "closing one of the shim's fds (agent socket, view root) takes it; the shim reconnects; a close of a file the process holds cluster POSIX locks on ends them (fcntl)") \
  X(fd_guard, dup, kPassthrough, "the copy takes over the O_SYNC state of the fd it copies")                            \
  X(fd_guard, dup2, kPassthrough, "as dup; a copy onto one of the shim's fds takes it from the shim")                   \
  X(fd_guard, dup3, kPassthrough, "as dup2")                                                                            \
  X(fd_guard, fcntl, kPartial, "F_DUPFD and F_DUPFD_CLOEXEC copy as dup does; F_GETLK, F_SETLK, F_SETLKW and the F_OFD_ forms on a cluster file lock across nodes as flock does, with byte ranges (split and merged as the kernel does), F_GETLK naming the holder's pid (a gpid on another node, -1 for an OFD lock); a POSIX lock ends at its process's exit and at close, dup2 or dup3 over a descriptor of the file (not at close_range, closefrom or an exec closing it: there at exit); other commands go straight to libc")  \
  X(fd_guard, fcntl64, kPassthrough, "as fcntl")                                                                        \
  X(fd_guard, close_range, kPassthrough, "as close, for each fd in the range")                                          \
  X(fd_guard, closefrom, kPassthrough, "as close, for each fd from the first")

namespace onebox::shim {

// What a program can rely on for a cluster path (ONEBOX_SUPPORT_LEVELS).
enum class Support {
#define ONEBOX_SUPPORT_ENUM(e, name, meaning) e,
  ONEBOX_SUPPORT_LEVELS(ONEBOX_SUPPORT_ENUM)
#undef ONEBOX_SUPPORT_ENUM
};

// One enumerator per interposed function: a function listed twice is a
// redeclared enumerator, which does not compile.
enum class Interposed : size_t {
#define ONEBOX_INTERPOSED_ENUM(family, function, support, note) function,
  ONEBOX_INTERPOSED(ONEBOX_INTERPOSED_ENUM)
#undef ONEBOX_INTERPOSED_ENUM
  kCount
};

// The list as data, for the tools and tests (the shim itself does not use it).
struct InterposedEntry {
  std::string_view family;  // "file_open": preload/file_open.cc
  std::string_view function;
  Support support;
  std::string_view note;
};
inline constexpr InterposedEntry kInterposed[] = {
#define ONEBOX_INTERPOSED_ENTRY(family, function, support, note) {#family, #function, Support::support, note},
    ONEBOX_INTERPOSED(ONEBOX_INTERPOSED_ENTRY)
#undef ONEBOX_INTERPOSED_ENTRY
};
static_assert(std::size(kInterposed) == static_cast<size_t>(Interposed::kCount));

}  // namespace onebox::shim
