// Exclusive creation across nodes: O_CREAT|O_EXCL and mkdir of a new name
// succeed on one node only. The creating node asks every live member for a
// vote (Peer/Claim) and creates the name only with a majority of the live
// members (itself included). A member votes for a claim unless the name exists
// there as another node made it, or it voted for another node's claim of the name that has not yet
// shown up as a record there (at most kClaimHold). Two nodes claiming at once
// cannot both get a majority; when they split the votes, each gives its votes
// back and tries again after a random pause, so one of them wins. Under a
// partition, each side decides with the members it sees: best effort there.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/peer/membership.h"
#include "onebox/v1/peer.grpc.pb.h"

namespace onebox {

class Claims {
 public:
  static constexpr auto kClaimHold = std::chrono::seconds(5);
  Claims(Store& store, Membership& members, ContentTransfer& peers, std::string self_id)
      : store_(store), members_(members), peers_(peers), self_(std::move(self_id)) {}

  // Ok when this node may create key; AlreadyExists when it exists;
  // Unavailable when no majority could be had (too few answers, or another
  // claimant kept winning).
  Status Acquire(const std::string& key);
  grpc::Status OnClaim(const v1::ClaimRequest& req, v1::ClaimResponse* resp);

 private:
  // This node's vote. Empty: granted; else why not (*exists: it exists).
  std::string Vote(const std::string& key, const std::string& claimant, uint64_t claim_id, bool* exists);
  void Release(const std::string& key, const std::string& claimant, uint64_t claim_id);

  struct Held {
    std::string claimant;
    uint64_t claim_id;
    std::chrono::steady_clock::time_point until;
    HlcTimestamp since;  // a record of the name newer than this ends the hold
  };
  Store& store_;
  Membership& members_;
  ContentTransfer& peers_;
  std::string self_;
  std::mutex mu_;
  std::map<std::string, Held> held_;
};

}  // namespace onebox
