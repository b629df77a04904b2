// Interposed: the exec family, posix_spawn and dlopen, for programs and
// libraries stored in the cluster (glibc's execvp and posix_spawnp search PATH
// through internal entries, so a PATH with cluster directories is searched
// here). The file is resolved in the agent's view to a descriptor and run
// with execveat; a script's interpreter is run here as the kernel would, with
// the script's path as the program named it (so $0 means what it means
// natively); posix_spawn and dlopen use /proc/self/fd/N (SeenFdLink). The view's real
// location is not handed to the program.
#include <alloca.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "naming/cluster_path.h"
#include "preload/exec_place.h"
#include "preload/link.h"
#include "preload/shim.h"

extern char** environ;

using namespace onebox;
using namespace onebox::shim;

namespace {

// Opens the cluster program t for exec; writes its /proc path to proc (SeenFdLink).
int OpenForExec(const Target& t, char (&proc)[64]) {
  int fd = OpenProgramInView(t, 0);  // no O_CLOEXEC: a script's interpreter reopens it
  if (fd >= 0) SeenFdLink(proc, fd);
  return fd;
}

// The kernel takes at most this much of a script's "#!" line (BINPRM_BUF_SIZE - 1).
constexpr ssize_t kMaxShebangBytes = 255;

// The kernel runs at most 4 interpreters deep, then says ELOOP.
constexpr int kMaxInterpreterDepth = 4;

int ExecvePath(const char* path, char* const argv[], char* const envp[], int depth = 0) {
  ONEBOX_REAL(execve);
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  if (!t.cluster && WantsPlacement(path, argv, envp)) {
    // The stand-in, in this process; if it cannot start, the program runs here.
    ExecPlaced(path, argv, envp, [&](const char* stand_in, char** args) { return real_execve(stand_in, args, envp); });
  }
  if (!t.cluster) return real_execve(t.NativePath(path), argv, envp);
  if (t.err) return Fail(t.err);
  // A binary runs from a close-on-exec fd (nothing of the view left open in
  // the new program); a script needs its fd open for the interpreter, which
  // the kernel says with ENOENT.
  int fd = OpenProgramInView(t, O_CLOEXEC);
  if (fd < 0) return -1;
  RealSyscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
  int err = errno;
  if (err != ENOENT) {
    close(fd);
    return Fail(err);
  }
  // A script: its interpreter is run here, as the kernel would run it, with
  // the script's path as the program gave it (configure and many scripts
  // find their own directory from $0; /proc/self/fd/N would tell them nothing).
  char line[kMaxShebangBytes + 1];
  char link[kFdLinkBytes];
  FdLink(link, fd);  // the O_PATH descriptor, opened for reading
  int readable = static_cast<int>(RealSyscall(SYS_openat, AT_FDCWD, link, O_RDONLY | O_CLOEXEC, 0));
  close(fd);
  ssize_t n = readable < 0 ? -1 : pread(readable, line, kMaxShebangBytes, 0);
  if (readable >= 0) close(readable);
  if (n < 2 || line[0] != '#' || line[1] != '!') {
    // Not a script (or not readable): a binfmt_misc handler or an ELF file
    // whose loader is missing also says ENOENT. Run it as /proc/.../fd/N,
    // an fd left open for the handler, and let the kernel say what it says.
    char proc[64];
    fd = OpenForExec(t, proc);
    if (fd < 0) return -1;
    real_execve(proc, argv, envp);
    err = errno;
    close(fd);
    return Fail(err);
  }
  if (depth >= kMaxInterpreterDepth) return Fail(ELOOP);
  line[n] = '\0';
  char* end = strchrnul(line, '\n');
  const bool cut = *end != '\n' && n == kMaxShebangBytes;  // the kernel takes no more of it
  *end = '\0';
  char* interp = line + 2;
  while (*interp == ' ' || *interp == '\t') ++interp;
  char* arg = interp + strcspn(interp, " \t");
  if (cut && *arg == '\0') return Fail(ENOEXEC);  // the interpreter's name itself was cut
  if (*arg != '\0') *arg++ = '\0';
  while (*arg == ' ' || *arg == '\t') ++arg;
  for (char* tail = arg + strlen(arg); tail > arg && (tail[-1] == ' ' || tail[-1] == '\t'); --tail) tail[-1] = '\0';
  if (*interp == '\0') return Fail(ENOEXEC);
  size_t argc = 0;
  while (argv != nullptr && argv[argc] != nullptr) ++argc;
  char** args = static_cast<char**>(alloca((argc + 4) * sizeof(char*)));
  size_t i = 0;
  args[i++] = interp;
  if (*arg != '\0') args[i++] = arg;
  args[i++] = const_cast<char*>(path);
  for (size_t a = 1; a < argc; ++a) args[i++] = argv[a];
  args[i] = nullptr;
  return ExecvePath(interp, args, envp, depth + 1);
}

// Whether some PATH entry (or a relative one from a cwd in the cluster) is a cluster path.
bool PathHasClusterDirs(const char* path_env) {
  char buf[kMaxPathBytes];
  for (const char* p = path_env; *p != '\0';) {
    const char* end = strchr(p, ':');
    size_t len = end ? static_cast<size_t>(end - p) : strlen(p);
    char dir[kMaxPathBytes];
    if (len == 0) {
      dir[0] = '.';
      len = 1;
    } else if (len < sizeof dir) {
      memcpy(dir, p, len);
    } else {
      len = 0;
    }
    dir[len] = '\0';
    if (len > 0) {
      Target t = Resolve(dir, buf, sizeof buf);
      if (t.cluster) return true;
    }
    if (!end) break;
    p = end + 1;
  }
  return false;
}

// PATH searched here, as glibc does it: attempt(candidate) for each entry (an
// empty one is the cwd) returns 0 or an errno; a missing file moves on, a
// permission error is remembered (EACCES), anything else ends the search.
template <class Attempt>
int SearchPath(const char* path_env, const char* file, Attempt attempt) {
  bool saw_eacces = false;
  size_t flen = strlen(file);
  for (const char* p = path_env;;) {
    const char* end = strchr(p, ':');
    size_t len = end ? static_cast<size_t>(end - p) : strlen(p);
    char cand[kMaxPathBytes];
    if (len + 1 + flen + 1 <= sizeof cand) {
      if (len == 0) {
        memcpy(cand, file, flen + 1);
      } else {
        memcpy(cand, p, len);
        cand[len] = '/';
        memcpy(cand + len + 1, file, flen + 1);
      }
      int r = attempt(cand);
      if (r == EACCES) saw_eacces = true;
      else if (r != ENOENT && r != ENOTDIR && r != ESTALE && r != ENODEV && r != ETIMEDOUT) return r;
    }
    if (!end) break;
    p = end + 1;
  }
  return saw_eacces ? EACCES : ENOENT;
}

// execvpe with PATH searched here (a file of no known format runs under /bin/sh).
int ExecvpeSearch(const char* file, char* const argv[], char* const envp[], const char* path_env) {
  return Fail(SearchPath(path_env, file, [&](char* cand) {
    ExecvePath(cand, argv, envp);  // returns only on failure
    if (errno == ENOEXEC) {
      size_t argc = 0;
      while (argv[argc]) ++argc;
      char** sh_argv = static_cast<char**>(alloca((argc + 2) * sizeof(char*)));
      sh_argv[0] = const_cast<char*>("/bin/sh");
      sh_argv[1] = cand;
      for (size_t i = 1; i <= argc; ++i) sh_argv[i + 1] = argv[i];
      ExecvePath("/bin/sh", sh_argv, envp);
      return errno == ENOENT || errno == ENOTDIR ? ENOEXEC : errno;  // the search ends here
    }
    return errno;
  }));
}

int ExecvpeImpl(const char* file, char* const argv[], char* const envp[]) {
  if (file == nullptr || *file == '\0') return Fail(ENOENT);
  if (strchr(file, '/') != nullptr) return ExecvePath(file, argv, envp);
  const char* path_env = getenv("PATH");
  if (path_env == nullptr) path_env = "/bin:/usr/bin";
  // A name ONEBOX_PLACE places is searched here: ExecvePath places it.
  if (!PathHasClusterDirs(path_env) && !NameWantsPlacement(file, envp)) {
    ONEBOX_REAL(execvpe);
    return real_execvpe(file, argv, envp);
  }
  return ExecvpeSearch(file, argv, envp, path_env);
}

// The variadic execl* arguments as an argv array on the stack (no malloc:
// these run in vfork children).
#define ONEBOX_COLLECT_ARGS(arg0, argv, extra)                       \
  size_t argc = 1;                                                  \
  {                                                                 \
    va_list count;                                                  \
    va_start(count, arg0);                                          \
    while (va_arg(count, char*) != nullptr) ++argc;                 \
    va_end(count);                                                  \
  }                                                                 \
  char** argv = static_cast<char**>(alloca((argc + 1) * sizeof(char*))); \
  va_list ap;                                                       \
  va_start(ap, arg0);                                               \
  argv[0] = const_cast<char*>(arg0);                                \
  for (size_t i = 1; i <= argc; ++i) argv[i] = va_arg(ap, char*);   \
  extra;                                                            \
  va_end(ap)

int SpawnPath(pid_t* pid, const char* path, const posix_spawn_file_actions_t* actions,
              const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
  ONEBOX_REAL(posix_spawn);
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  if (!t.cluster && WantsPlacement(path, argv, envp)) {
    int placed = ExecPlaced(path, argv, envp, [&](const char* stand_in, char** args) {
      return real_posix_spawn(pid, stand_in, actions, attr, args, envp);
    });
    if (placed == 0) return 0;  // else the program runs here
  }
  if (!t.cluster) return real_posix_spawn(pid, t.NativePath(path), actions, attr, argv, envp);
  if (t.err) return t.err;
  char proc[64];
  int fd = OpenForExec(t, proc);
  if (fd < 0) return errno;
  int r = real_posix_spawn(pid, proc, actions, attr, argv, envp);
  close(fd);
  return r;
}

}  // namespace

extern "C" {
// Interposed functions are the shim's only exports (the version script names them).
#pragma GCC visibility push(default)

int execve(const char* path, char* const argv[], char* const envp[]) { return ExecvePath(path, argv, envp); }
int execv(const char* path, char* const argv[]) { return ExecvePath(path, argv, environ); }
int execvpe(const char* file, char* const argv[], char* const envp[]) { return ExecvpeImpl(file, argv, envp); }
int execvp(const char* file, char* const argv[]) { return ExecvpeImpl(file, argv, environ); }

int execl(const char* path, const char* arg, ...) {
  ONEBOX_COLLECT_ARGS(arg, argv, (void)0);
  return ExecvePath(path, argv, environ);
}
int execlp(const char* file, const char* arg, ...) {
  ONEBOX_COLLECT_ARGS(arg, argv, (void)0);
  return ExecvpeImpl(file, argv, environ);
}
int execle(const char* path, const char* arg, ...) {
  char** envp = nullptr;
  ONEBOX_COLLECT_ARGS(arg, argv, envp = va_arg(ap, char**));
  return ExecvePath(path, argv, envp);
}

int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* actions,
                const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
  return SpawnPath(pid, path, actions, attr, argv, envp);
}

int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* actions,
                 const posix_spawnattr_t* attr, char* const argv[], char* const envp[]) {
  ONEBOX_REAL(posix_spawnp);
  if (strchr(file, '/') != nullptr) return SpawnPath(pid, file, actions, attr, argv, envp);
  const char* path_env = getenv("PATH");
  if (path_env == nullptr) path_env = "/bin:/usr/bin";
  if (!PathHasClusterDirs(path_env) && !NameWantsPlacement(file, envp))
    return real_posix_spawnp(pid, file, actions, attr, argv, envp);
  return SearchPath(path_env, file,
                    [&](char* cand) { return SpawnPath(pid, cand, actions, attr, argv, envp); });
}

// dlopen of a path with a "/" (kept out of line: dlopen itself must stay a
// tail call, since glibc finds the caller, whose RUNPATH applies to plain
// names, from the return address).
__attribute__((noinline)) void* DlopenPath(const char* path, int flags) {
  ONEBOX_REAL(dlopen);
  char buf[kMaxPathBytes];
  Target t = Resolve(path, buf, sizeof buf);
  if (!t.cluster) return real_dlopen(t.NativePath(path), flags);
  if (t.err) {
    errno = t.err;
    return nullptr;
  }
  char proc[64];
  int fd = OpenForExec(t, proc);
  if (fd < 0) return real_dlopen(path, flags);  // fails as a missing file does, and says so in dlerror()
  void* h = real_dlopen(proc, flags);
  close(fd);  // the mapping stays
  return h;
}

void* dlopen(const char* path, int flags) {
  ONEBOX_REAL(dlopen);
  if (path == nullptr || strchr(path, '/') == nullptr) return real_dlopen(path, flags);
  return DlopenPath(path, flags);
}

#pragma GCC visibility pop
}  // extern "C"
