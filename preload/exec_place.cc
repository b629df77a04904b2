// Which execs ONEBOX_PLACE places (preload/exec_place.h): the policy and the
// program names, read from the environment the exec passes on.
#include "preload/exec_place.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "preload/shim.h"

namespace onebox::shim {

namespace {

// The programs placed when ONEBOX_PLACE_PROGRAMS does not say: the C and C++
// compiler drivers. Each also matches its versioned and target-prefixed
// names (gcc-12, x86_64-linux-gnu-gcc-12).
constexpr const char* kDefaultPlaced = "cc,c++,gcc,g++,clang,clang++";

// NAME's value in envp; nullptr when it is not there.
const char* EnvIn(char* const envp[], const char* name) {
  if (envp == nullptr) return nullptr;
  size_t len = strlen(name);
  for (char* const* e = envp; *e != nullptr; ++e)
    if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') return *e + len + 1;
  return nullptr;
}

// "-12", "-14.0": a version suffix.
bool IsVersion(const char* s, size_t n) {
  if (n < 2 || s[0] != '-' || s[1] < '0' || s[1] > '9') return false;
  for (size_t i = 1; i < n; ++i)
    if ((s[i] < '0' || s[i] > '9') && s[i] != '.') return false;
  return true;
}

// name is entry, optionally after a "TARGET-" prefix and before a version suffix.
bool NameIs(const char* name, const char* entry, size_t entry_len) {
  for (const char* at = name;;) {
    if (strncmp(at, entry, entry_len) == 0) {
      const char* rest = at + entry_len;
      if (*rest == '\0' || IsVersion(rest, strlen(rest))) return true;
    }
    const char* dash = strchr(at, '-');
    if (dash == nullptr) return false;
    at = dash + 1;  // past a "TARGET-" prefix's dash
  }
}

bool ListNames(const char* list, const char* name) {
  for (const char* p = list; *p != '\0';) {
    const char* end = strchrnul(p, ',');
    size_t n = static_cast<size_t>(end - p);
    if (n > 0 && NameIs(name, p, n)) return true;
    p = *end == ',' ? end + 1 : end;
  }
  return false;
}

bool PolicyOn(char* const envp[]) {
  const char* policy = EnvIn(envp, "ONEBOX_PLACE");
  // (A value that starts with '-' would be taken for an option of the stand-in's.)
  return policy != nullptr && *policy != '\0' && *policy != '-' && strcmp(policy, "off") != 0;
}

// The rest of WantsPlacement, for a bare program name.
bool Placed(const char* name, char* const envp[]) {
  const char* list = EnvIn(envp, "ONEBOX_PLACE_PROGRAMS");
  if (!ListNames(list != nullptr ? list : kDefaultPlaced, name)) return false;
  // A job whose directory is outside the cluster means nothing on another node.
  return CwdInCluster() && StandInProgram()[0] == '/';
}

}  // namespace

const char* PlacePolicy(char* const envp[]) { return EnvIn(envp, "ONEBOX_PLACE"); }

bool WantsPlacement(const char* program, char* const argv[], char* const envp[]) {
  if (!PolicyOn(envp) || argv == nullptr || argv[0] == nullptr || program == nullptr || program[0] != '/')
    return false;
  const char* base = strrchr(program, '/') + 1;
  // A PATH candidate that is not there fails here, and the search goes on.
  return Placed(base, envp) && RealSyscall(SYS_faccessat, AT_FDCWD, program, X_OK) == 0;
}

bool NameWantsPlacement(const char* file, char* const envp[]) {
  return PolicyOn(envp) && file != nullptr && strchr(file, '/') == nullptr && Placed(file, envp);
}

}  // namespace onebox::shim
