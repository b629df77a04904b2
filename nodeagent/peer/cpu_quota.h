// How many CPUs this agent, and what it starts, may use: the CPUs its
// affinity allows, and the CPU quota of its cgroup and of every cgroup above
// it (cgroup v2 cpu.max; v1 cpu.cfs_quota_us over cpu.cfs_period_us), the
// smallest of them. Placement (process/placement.h) weighs a node's jobs by
// it, so that a node confined to 0.6 of a CPU (a container's limit, a
// bench's node) takes the jobs 0.6 of a CPU can run, not those of the
// machine's every core.
#pragma once

#include <optional>
#include <string>

namespace onebox {

// The quota in CPUs (0.6 for "60000 100000") of the cgroup at path (as
// /proc/PID/cgroup names it, "/a/b") and its ancestors under the hierarchy
// mounted at mount_dir: the smallest, or nullopt when none has one. v2 reads
// cpu.max, v1 cpu.cfs_quota_us and cpu.cfs_period_us.
std::optional<double> CgroupCpuQuota(const std::string& mount_dir, const std::string& path, bool v2);

// This process's CPU limit by its cgroup (from /proc/self/cgroup and the
// hierarchies under cgroup_root, normally /sys/fs/cgroup): nullopt when it
// has no quota. The hierarchies are looked for where systemd, Docker and
// Kubernetes mount them (v2 at the root or at unified/, v1 cpu at cpu/ or
// at the directory named by its controllers); in a container that sees
// only its own cgroup at the mount's top, that top's quota counts.
// Hierarchies mounted elsewhere are not found (mountinfo is not read).
std::optional<double> OwnCpuQuota(const std::string& cgroup_root = "/sys/fs/cgroup",
                                  const std::string& proc_cgroup = "/proc/self/cgroup");

}  // namespace onebox
