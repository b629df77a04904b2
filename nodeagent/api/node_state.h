// A member's state as people read it ("alive", "suspect", "dead"): the
// CLI's `onebox nodes` and status, and the agent's metrics label.
#pragma once

#include "onebox/v1/cluster.pb.h"

namespace onebox {

inline const char* NodeStateName(v1::NodeState s) {
  switch (s) {
    case v1::NODE_STATE_ALIVE: return "alive";
    case v1::NODE_STATE_SUSPECT: return "suspect";
    case v1::NODE_STATE_DEAD: return "dead";
    default: return "unknown";
  }
}

}  // namespace onebox
