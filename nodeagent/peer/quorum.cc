#include "nodeagent/peer/quorum.h"

#include <algorithm>

namespace onebox {

size_t PublishAcksNeeded(size_t replication_factor, size_t write_quorum, size_t known_members) {
  size_t replicas = std::min(replication_factor, known_members);
  size_t quorum = write_quorum > 0 ? write_quorum : Majority(replicas);
  quorum = std::min(quorum, known_members);
  return quorum > 0 ? quorum - 1 : 0;
}

size_t OthersNeeded(Agreement level, size_t known_members) {
  if (known_members == 0) return 0;
  switch (level) {
    case Agreement::kThisNode: return 0;
    case Agreement::kMajority: return Majority(known_members) - 1;
    case Agreement::kAll: return known_members - 1;
  }
  return 0;
}

}  // namespace onebox
