// How many nodes must agree, written once. docs/consistency.md says why each
// rule is what it is. "Known" members are every member this node knows of,
// dead ones included, and itself; "alive" members are those gossip hears
// from now, and itself.
#pragma once

#include <cstddef>

namespace onebox {

// A majority of n nodes.
constexpr size_t Majority(size_t n) { return n / 2 + 1; }

// fsync() and O_SYNC writes: the other nodes that must hold a published
// version before the call returns. The write quorum is --write-quorum, or (0)
// a majority of the file's replicas (--replication-factor of the known
// members); never more than the members known.
size_t PublishAcksNeeded(size_t replication_factor, size_t write_quorum, size_t known_members);

// The Store API's levels: the other nodes a write must reach, or a read hear
// from. ONE and LOCAL: none; QUORUM: a majority of the known members, this
// node included; ALL: every known member.
enum class Agreement { kThisNode, kMajority, kAll };
size_t OthersNeeded(Agreement level, size_t known_members);

// An exclusive create: the votes (this node's own included) that win a name,
// a majority of the members alive now.
constexpr size_t LeaseVotesNeeded(size_t alive_members) { return Majority(alive_members); }

}  // namespace onebox
