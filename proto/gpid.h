// Global pids: a node's cluster-unique index (peer/membership.h) above the
// 22 bits of a Linux pid (pid_max is at most 2^22), so that every gpid is
// larger than any local pid and kill(2) can tell one from the other. Shared
// by the agent and the shim. Indices up to 511 keep a gpid inside pid_t.
#pragma once

#include <cstdint>

namespace onebox::gpid {

constexpr int kPidBits = 22;
constexpr int64_t kPidMask = (int64_t{1} << kPidBits) - 1;
constexpr uint32_t kMaxIndex = (uint32_t{1} << (31 - kPidBits)) - 1;

constexpr int64_t Make(uint32_t node_index, int64_t pid) { return (int64_t{node_index} << kPidBits) | pid; }
constexpr uint32_t NodeIndex(int64_t gpid) { return static_cast<uint32_t>(gpid >> kPidBits); }
constexpr int64_t LocalPid(int64_t gpid) { return gpid & kPidMask; }
// A pid that names a process of some node (not a local pid): index >= 1.
constexpr bool IsGlobal(int64_t pid) { return pid > kPidMask; }

}  // namespace onebox::gpid
