// The libc functions libonebox.so interposes, declared once: the export map
// (exports.map, generated at build time), docs/compatibility.md and the test
// that checks the library's dynamic symbols all come from this list.
// Entries are X(<family>, <function>): the family is the preload/ file implementing it.
#pragma once

#define ONEBOX_INTERPOSED(X)                                                           \
  X(file_open, open) X(file_open, open64) X(file_open, openat) X(file_open, openat64) \
  X(file_open, creat) X(file_open, creat64) X(file_open, __open_2)                     \
  X(file_open, __open64_2) X(file_open, __openat_2) X(file_open, __openat64_2)         \
  X(file_open, fopen) X(file_open, fopen64) X(file_open, freopen)                      \
  X(file_open, freopen64) X(file_open, opendir)                                        \
  X(file_open, mkstemp) X(file_open, mkstemp64) X(file_open, mkostemp)                 \
  X(file_open, mkostemp64) X(file_open, mkstemps) X(file_open, mkstemps64)             \
  X(file_open, mkostemps) X(file_open, mkostemps64) X(file_open, mkdtemp)              \
  X(exec, execve) X(exec, execv) X(exec, execvp) X(exec, execvpe) X(exec, execl)       \
  X(exec, execlp) X(exec, execle) X(exec, posix_spawn) X(exec, posix_spawnp)           \
  X(exec, dlopen)                                                                       \
  X(file_walk, scandir) X(file_walk, scandir64) X(file_walk, glob) X(file_walk, glob64) \
  X(file_walk, nftw) X(file_walk, nftw64) X(file_walk, ftw) X(file_walk, ftw64)         \
  X(file_stat, stat) X(file_stat, stat64) X(file_stat, lstat) X(file_stat, lstat64)    \
  X(file_stat, fstatat) X(file_stat, fstatat64) X(file_stat, statx)                    \
  X(file_stat, __xstat) X(file_stat, __xstat64) X(file_stat, __lxstat)                 \
  X(file_stat, __lxstat64) X(file_stat, __fxstatat) X(file_stat, __fxstatat64)         \
  X(file_stat, access) X(file_stat, faccessat) X(file_stat, euidaccess)                \
  X(file_stat, eaccess) X(file_stat, readlink) X(file_stat, readlinkat)                \
  X(file_stat, statfs) X(file_stat, statfs64) X(file_stat, statvfs)                    \
  X(file_stat, statvfs64) X(file_stat, realpath) X(file_stat, canonicalize_file_name)  \
  X(file_stat, __realpath_chk) X(file_stat, __readlink_chk) X(file_stat, __readlinkat_chk) \
  X(file_dir, mkdir) X(file_dir, mkdirat) X(file_dir, rmdir) X(file_dir, unlink)       \
  X(file_dir, unlinkat) X(file_dir, rename) X(file_dir, renameat)                      \
  X(file_dir, renameat2) X(file_dir, link) X(file_dir, linkat) X(file_dir, symlink)    \
  X(file_dir, symlinkat) X(file_dir, chmod) X(file_dir, fchmodat) X(file_dir, chown)   \
  X(file_dir, lchown) X(file_dir, fchownat) X(file_dir, truncate)                      \
  X(file_dir, truncate64) X(file_dir, utimensat) X(file_dir, utimes) X(file_dir, utime) \
  X(file_dir, futimesat) X(file_dir, mknod) X(file_dir, mknodat) X(file_dir, mkfifo)   \
  X(file_dir, mkfifoat) X(file_dir, chdir) X(file_dir, fchdir)                         \
  X(file_dir, getcwd) X(file_dir, __getcwd_chk) X(file_dir, get_current_dir_name)      \
  X(file_xattr, getxattr) X(file_xattr, lgetxattr) X(file_xattr, setxattr)              \
  X(file_xattr, lsetxattr) X(file_xattr, listxattr) X(file_xattr, llistxattr)           \
  X(file_xattr, removexattr) X(file_xattr, lremovexattr)                                \
  X(file_sync, fsync) X(file_sync, fdatasync)                                           \
  X(file_write, write) X(file_write, pwrite) X(file_write, pwrite64)                    \
  X(file_write, writev) X(file_write, pwritev) X(file_write, pwritev64)                 \
  X(file_write, pwritev2) X(file_write, pwritev64v2)                                    \
  X(raw_syscall, syscall)                                                               \
  X(fd_guard, close) X(fd_guard, dup) X(fd_guard, dup2) X(fd_guard, dup3)               \
  X(fd_guard, fcntl) X(fd_guard, fcntl64) X(fd_guard, close_range) X(fd_guard, closefrom)
