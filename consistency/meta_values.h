// Values the agent keeps in its store's meta family, written and parsed in
// one place: comma-joined lists (the members' addresses, the peers pushed to)
// and decimal numbers (the node index, acknowledged log positions). A stored
// value that does not parse is a Corruption error naming it, never an
// exception.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "consistency/status.h"

namespace onebox {

std::string JoinList(const std::vector<std::string>& items);
// The items of a joined list; empty items are dropped.
std::vector<std::string> SplitList(std::string_view joined);
// A decimal number kept under `what` (named in the error).
Result<uint64_t> ParseDecimal(std::string_view value, std::string_view what);

}  // namespace onebox
