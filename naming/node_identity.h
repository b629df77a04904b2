// Node identity: a node's name and its 64-bit node id, chosen once when the data
// dir is made and kept in DATA_DIR/node.json, so a node is the same node after a
// restart. Node ids stamp every record version (consistency/record.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "consistency/status.h"

namespace onebox {

struct NodeIdentity {
  std::string name;
  uint64_t node_id = 0;
};

// A fresh random non-zero node id (getrandom).
uint64_t NewNodeId();
// 16 lower-case hex digits.
std::string NodeIdHex(uint64_t id);
Result<uint64_t> ParseNodeId(std::string_view hex);
// Names are 1 to 63 characters of [A-Za-z0-9._-], starting with a letter or digit.
Status ValidateNodeName(std::string_view name);

// Reads DATA_DIR/node.json, or creates it (atomically) when absent. A data dir
// made for another name is refused: one data dir is one node.
Result<NodeIdentity> LoadOrCreateIdentity(const std::string& data_dir, const std::string& name);

}  // namespace onebox
