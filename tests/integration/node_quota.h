// A test or bench node's share of this machine: a cgroup with a CPU quota
// (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us where the cpu controller is a
// v1 one, as on these VMs), made by the test and removed when it is done, so
// that three nodes on one 2-core machine each have, say, 0.6 of a CPU, and a
// build spread over them can be compared with the same build on one node
// (bench/build_bench.cc), or an agent confined to part of a CPU.
// Everything started through Wrap() runs inside it, with its children; CPU
// time is read from the cgroup (cpu.stat on v2, cpuacct.usage on v1).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace onebox::testing {

class NodeQuota {
 public:
  // name: unique on this machine (the bench's pid in it); cpus: the quota.
  NodeQuota(std::string name, double cpus) : name_(std::move(name)), cpus_(cpus) {}
  ~NodeQuota();  // moves what is left to the root cgroup, then removes it
  NodeQuota(const NodeQuota&) = delete;
  NodeQuota& operator=(const NodeQuota&) = delete;

  // Makes the cgroup. False, with why, when this machine cannot (no cpu
  // controller, not root).
  bool Make(std::string* why);
  // argv run inside the cgroup: a shell that enters it, then execs argv (so
  // that a pid taken of it stays argv's).
  std::vector<std::string> Wrap(const std::vector<std::string>& argv) const;
  // A shell command's prefix that moves that shell into the cgroup.
  std::string EnterCommand() const;
  // Moves a running process (all its threads) into the cgroup.
  bool Move(pid_t pid) const;
  // A shell command that mounts the cgroup hierarchy holding the quota at
  // /sys/fs/cgroup, as this machine has it, for a process whose /sys has
  // none (`ip netns exec` mounts a sysfs of its own, without cgroups).
  std::string MountCommand() const;
  // CPU seconds used inside it so far (all its processes, ended ones too).
  double CpuSeconds() const;
  double cpus() const { return cpus_; }

 private:
  std::string name_;
  double cpus_;
  std::vector<std::string> dirs_;  // the cgroup in each hierarchy it is in
  std::string cpu_hierarchy_;      // v1: "cpu" or "cpu,cpuacct"; v2: ""
  std::string usage_file_;         // where its CPU time is counted
  bool usage_in_ns_ = false;       // v1 cpuacct.usage (ns); v2 usage_usec
};

}  // namespace onebox::testing
