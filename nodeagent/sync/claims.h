// Exclusive creation across nodes: O_CREAT|O_EXCL and mkdir of a new name
// succeed on one node only. The creating node asks every live member for a
// vote (Peer/Claim) and creates the name only with a majority of the live
// members (itself included; peer/quorum.h). A member votes for a claim
// unless the name exists there as another node made it (refusal EXISTS), or
// it voted for another node's claim of the name that has not yet shown up as
// a record there, at most kClaimHold ago (refusal HELD). Two nodes claiming
// at once cannot both get a majority; when they split the votes, each gives
// its votes back and tries again after a random pause, so one of them wins.
// Under a partition, each side decides with the members it sees: best
// effort there.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "consistency/store.h"
#include "nodeagent/peer/clock.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

class Claims {
 public:
  static constexpr auto kClaimHold = std::chrono::seconds(5);
  // Holds and the pauses between attempts are timed by clock.
  Claims(Store& store, Membership& members, PeerNetwork& network, std::string self_id, Clock& clock = SteadyClock());

  // Ok when this node may create key; AlreadyExists when it exists;
  // Unavailable when no majority could be had (too few answers, or another
  // claimant kept winning); InvalidArgument for a key that names no entry.
  Status Acquire(const std::string& key);
  // The Claim call, as this node answers it.
  Status OnClaim(const v1::ClaimRequest& req, v1::ClaimResponse* resp);

 private:
  struct Vote {
    v1::ClaimRefusal refusal = v1::CLAIM_REFUSAL_NONE;  // NONE: granted
    std::string reason;                                 // why not, for people
  };
  // One round of voting; on a loss the votes given are taken back.
  struct Round {
    bool won = false;
    bool exists = false;  // a voter has the name
    std::string why;      // what the voters that refused said
  };
  Round Ask(const std::string& key, uint64_t claim_id);
  // This node's vote.
  Vote Cast(const std::string& key, const std::string& claimant, uint64_t claim_id);
  void Release(const std::string& key, const std::string& claimant, uint64_t claim_id);

  struct Held {
    std::string claimant;
    uint64_t claim_id;
    Clock::time_point until;
    HlcTimestamp since;  // a record of the name newer than this ends the hold
  };
  Store& store_;
  Membership& members_;
  PeerNetwork& network_;
  std::string self_;
  Clock& clock_;
  std::mutex mu_;
  std::map<std::string, Held> held_;
};

}  // namespace onebox
