// This machine's load as members report it in gossip: load average, CPUs
// (those its affinity allows, and its cgroup's quota: peer/cpu_quota.h),
// memory (from /proc), read at most once a second (every gossip round and
// answer asks for it; the load average itself moves every 5 s).
#pragma once

#include "onebox/v1/cluster.pb.h"

namespace onebox {

v1::NodeLoad ReadLoad();

}  // namespace onebox
