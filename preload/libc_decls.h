// libc's declaration of every function in preload/interposed.h, so that the
// compiler checks each wrapper against the call it stands in for. The shim's
// sources include this (through shim.h): a wrapper whose definition differs
// from libc's declaration is a conflicting declaration of a C function, and a
// listed name libc does not declare (a misspelling) fails the static_assert
// below. glibc's headers leave out a few entries that programs still call:
// they are declared here, as glibc declared them. Plain C too, for
// tests/tools/calls_probe.c, which calls them all.
#pragma once

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <utime.h>

#ifdef __cplusplus
extern "C" {
#endif

// _FORTIFY_SOURCE entries (declared by glibc only when fortifying, which the
// shim does not): what a program built with it calls.
int __open_2(const char* path, int flags);
int __open64_2(const char* path, int flags);
int __openat_2(int dirfd, const char* path, int flags);
int __openat64_2(int dirfd, const char* path, int flags);
char* __realpath_chk(const char* path, char* resolved, size_t resolvedlen);
ssize_t __readlink_chk(const char* path, char* out, size_t size, size_t outlen);
ssize_t __readlinkat_chk(int dirfd, const char* path, char* out, size_t size, size_t outlen);
char* __getcwd_chk(char* out, size_t size, size_t outlen);

// What stat() and friends compiled to before glibc 2.33 (the first argument
// is the struct's version); programs built then still call them.
int __xstat(int version, const char* path, struct stat* st);
int __xstat64(int version, const char* path, struct stat64* st);
int __lxstat(int version, const char* path, struct stat* st);
int __lxstat64(int version, const char* path, struct stat64* st);
int __fxstatat(int version, int dirfd, const char* path, struct stat* st, int flags);
int __fxstatat64(int version, int dirfd, const char* path, struct stat64* st, int flags);

#ifdef __cplusplus
}  // extern "C"

#include "preload/interposed.h"

// libc's type of each listed function: a name without a declaration (a
// misspelling, a prototype missing above) fails here.
namespace onebox::shim::libc {
#define ONEBOX_LIBC_TYPE(family, function, support, note) using function = decltype(::function);
ONEBOX_INTERPOSED(ONEBOX_LIBC_TYPE)
#undef ONEBOX_LIBC_TYPE
}  // namespace onebox::shim::libc

namespace onebox::shim {

// The type of a wrapper that takes the optional argument of variadic libc
// function F as a named parameter of type Arg (open's mode, fcntl's argument:
// the x86-64 calling convention passes both alike), to check it against F:
// WithNamedArg<&::open, mode_t> is int(const char*, int, mode_t).
template <class R, class... Params>
struct Variadic {
  template <class Arg>
  using Named = R(Params..., Arg);
};
template <class R, class... Params>
Variadic<R, Params...> VariadicOf(R (*)(Params..., ...));
template <auto F, class Arg>
using WithNamedArg = typename decltype(VariadicOf(F))::template Named<Arg>;

}  // namespace onebox::shim
#endif
