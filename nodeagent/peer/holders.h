// Which nodes keep a copy of a path's content: rendezvous hashing (highest
// random weight) of the path and each node id, so that every node that knows
// the same members picks the same ones, and a member that comes or goes
// moves only the paths it held. Each candidate is weighed once.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "nodeagent/peer/peer_link.h"

namespace onebox {

// The n candidates that weigh most for path, heaviest first.
std::vector<PeerAddress> HeaviestFor(std::string_view path, std::vector<PeerAddress> candidates, size_t n);
std::vector<std::string> HeaviestFor(std::string_view path, std::vector<std::string> node_ids, size_t n);

}  // namespace onebox
