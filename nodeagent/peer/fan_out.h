// One question to many peers at once, answered once enough have said yes: a
// Store write at level QUORUM or ALL, a QUORUM read. Each call runs on a
// thread of its own with a Cancellation; once `want` succeeded (or all have
// ended) the calls still out are cancelled and waited for, so nothing
// outlives the return.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "consistency/status.h"
#include "nodeagent/peer/peer_link.h"

namespace onebox {

struct FanOutResult {
  size_t succeeded = 0;
  std::string why;  // "; NODE: what it said" for each call that failed, in the order they ended
};

// call(i, cancellation) for every i < n; label(i) names call i in `why`.
FanOutResult FanOut(size_t n, size_t want, const std::function<Status(size_t, Cancellation&)>& call,
                    const std::function<std::string(size_t)>& label);

}  // namespace onebox
