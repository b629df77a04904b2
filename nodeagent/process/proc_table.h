// This node's processes as /proc shows them, for the cluster's process table
// (Process/List). Nothing is recorded when a process starts: a process is
// "under onebox" when the shim is in its LD_PRELOAD (/proc/PID/environ, as it
// was at exec) or an ancestor's is, so process start costs nothing (P2). An
// agent that is not root reads the environment of its own user's processes
// only; the others' are listed with --all.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "onebox/v1/process.pb.h"

namespace onebox {

struct ProcScanOptions {
  bool all = false;              // every process, not only those under onebox
  std::optional<uint32_t> uid;   // only this effective uid
};

// Where the node's processes are: /proc (tests give another root).
struct ProcSource {
  std::string proc = "/proc";
};

// The processes of this node, by pid, with gpids made from node_index
// (proto/gpid.h) and node named node_name.
std::vector<v1::ProcessInfo> ScanProcesses(const ProcScanOptions& options, uint32_t node_index,
                                           const std::string& node_name, const ProcSource& source = {});

// The libraries an LD_PRELOAD value names (separated by spaces or colons).
std::vector<std::string> PreloadLibraries(const std::string& preload);
// Whether a library is the shim (named libonebox*.so).
bool IsShimLibrary(const std::string& library);
// Whether an LD_PRELOAD value names the shim.
bool PreloadNamesShim(const std::string& preload);
// When process pid started, in clock ticks since boot (field 22 of
// /proc/PID/stat): with the pid, it names one process even after the pid is
// reused. 0 when the process is gone.
uint64_t StartTicksOf(pid_t pid);
// Whether process pid is gone, a zombie, or on its way out (the kernel set
// PF_EXITING: its descriptors are closed or about to be).
bool IsExiting(pid_t pid);
// Process pid's effective uid (/proc/PID/status); -1 when it is gone.
int64_t EffectiveUidOf(pid_t pid);

}  // namespace onebox
