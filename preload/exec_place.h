// Placement at exec, the shim's half (ONEBOX_PLACE; docs/architecture.md,
// "Placement at exec"). An exec of a program ONEBOX_PLACE_PROGRAMS names
// (by default the C and C++ compiler drivers), from a working directory
// under the cluster, with ONEBOX_PLACE set to anything but "off", becomes an
// exec of the agent's stand-in instead:
//   onebox run --place POLICY --program PATH -- ARGV...
// in the same process, so the caller's child is still its child (make's
// wait, SIGCHLD and jobserver see nothing new). The stand-in asks the agent
// for a node (nodeagent/process/placement.h) and execs the program here, or
// runs it there and relays it; either way with ONEBOX_PLACE=off, so a placed
// program's own children run where it runs.
#pragma once

#include <alloca.h>

#include <cstddef>

#include "preload/link.h"  // StandInProgram

namespace onebox::shim {

// Whether the exec of program (an absolute native path) with argv and envp
// is one ONEBOX_PLACE places (never one without arguments). Cheap when
// ONEBOX_PLACE is not set (one look at envp).
bool WantsPlacement(const char* program, char* const argv[], char* const envp[]);
// As WantsPlacement, for a name an exec*p call will search PATH for.
bool NameWantsPlacement(const char* file, char* const envp[]);
// ONEBOX_PLACE's value in envp (WantsPlacement said yes).
const char* PlacePolicy(char* const envp[]);

// Runs exec(stand_in, args) with the stand-in's arguments for program and
// argv (on this frame's stack: these run in vfork children, no malloc).
template <class Exec>
int ExecPlaced(const char* program, char* const argv[], char* const envp[], Exec exec) {
  size_t argc = 0;
  while (argv != nullptr && argv[argc] != nullptr) ++argc;
  constexpr size_t kOwn = 7;  // onebox run --place POLICY --program PATH --
  char** args = static_cast<char**>(alloca((kOwn + argc + 1) * sizeof(char*)));
  const char* own[kOwn] = {"onebox", "run", "--place", PlacePolicy(envp), "--program", program, "--"};
  for (size_t i = 0; i < kOwn; ++i) args[i] = const_cast<char*>(own[i]);
  for (size_t i = 0; i < argc; ++i) args[kOwn + i] = argv[i];
  args[kOwn + argc] = nullptr;
  return exec(StandInProgram(), args);
}

}  // namespace onebox::shim
