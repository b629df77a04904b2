// This machine's load as members report it in gossip: load average, CPUs
// (those its affinity allows, and its cgroup's quota: peer/cpu_quota.h),
// memory (from /proc). Each is read at most every 5 s (every gossip round
// and answer asks for them; the kernel moves the load average every 5 s).
#pragma once

#include "onebox/v1/cluster.pb.h"

namespace onebox {

v1::NodeLoad ReadLoad();

}  // namespace onebox
