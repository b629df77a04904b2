// This machine's load as members report it in gossip: load average, CPUs,
// memory (from /proc).
#pragma once

#include "onebox/v1/cluster.pb.h"

namespace onebox {

v1::NodeLoad ReadLoad();

}  // namespace onebox
