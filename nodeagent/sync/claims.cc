#include "nodeagent/sync/claims.h"

#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/node_identity.h"
#include "naming/ns_key.h"
#include "nodeagent/peer/quorum.h"

namespace onebox {

namespace {
constexpr auto kVoteDeadline = std::chrono::milliseconds(500);
constexpr int kAttempts = 8;  // rounds of voting when claimants split the votes
}  // namespace

Claims::Claims(Store& store, Membership& members, PeerNetwork& network, std::string self_id, Clock& clock)
    : store_(store), members_(members), network_(network), self_(std::move(self_id)), clock_(clock) {}

Claims::Vote Claims::Cast(const std::string& key, const std::string& claimant, uint64_t claim_id) {
  Result<Record> rec = store_.GetWithTombstone(key, Cf::kNs);
  // The claimant's own record does not count: its view is newer than what
  // reached us (git makes and removes index.lock within milliseconds).
  if (rec.ok() && !rec->tombstone && NodeIdHex(rec->version.node) != claimant)
    return {v1::CLAIM_REFUSAL_EXISTS, "it exists"};
  std::lock_guard lock(mu_);
  auto now = clock_.Now();
  std::erase_if(held_, [&](const auto& kv) { return kv.second.until < now; });
  auto it = held_.find(key);
  // A vote given to another node stands until its creation (or removal) of
  // the name reaches us, or kClaimHold passes. The same node may claim again:
  // its own kernel orders its processes' exclusive creates.
  if (it != held_.end() && it->second.claimant != claimant && !(rec.ok() && rec->version.hlc > it->second.since))
    return {v1::CLAIM_REFUSAL_HELD, fmt::format("granted to node {} a moment ago", it->second.claimant)};
  held_[key] = {claimant, claim_id, now + kClaimHold, store_.clock().Last()};
  return {};
}

void Claims::Release(const std::string& key, const std::string& claimant, uint64_t claim_id) {
  std::lock_guard lock(mu_);
  auto it = held_.find(key);
  if (it != held_.end() && it->second.claimant == claimant && it->second.claim_id == claim_id) held_.erase(it);
}

Claims::Round Claims::Ask(const std::string& key, uint64_t claim_id) {
  Round round;
  Vote own = Cast(key, self_, claim_id);
  if (own.refusal != v1::CLAIM_REFUSAL_NONE) {
    round.exists = own.refusal == v1::CLAIM_REFUSAL_EXISTS;
    round.why = own.reason;
    return round;
  }
  std::vector<PeerAddress> peers = members_.AliveOthers();
  size_t votes = 1;
  std::vector<std::string> granted;  // addresses, to release on a loss
  v1::ClaimRequest req;
  req.set_key(key);
  req.set_node_id(self_);
  req.set_claim_id(claim_id);
  for (const auto& [node_id, address] : peers) {
    v1::ClaimResponse resp;
    Status st = network_.To(address).Claim(req, &resp, {.timeout = kVoteDeadline});
    if (st.ok() && resp.granted()) {
      ++votes;
      granted.push_back(address);
      continue;
    }
    round.why += fmt::format("; {}: {}", node_id, st.ok() ? resp.reason() : st.message());
    if (st.ok() && resp.refusal() == v1::CLAIM_REFUSAL_EXISTS) {
      round.exists = true;  // no use asking the others
      break;
    }
  }
  round.won = !round.exists && votes >= ClaimVotesNeeded(peers.size() + 1);
  if (round.won) return round;
  // Split votes (others claim it too), too few answers, or it exists: give
  // the votes back.
  Release(key, self_, claim_id);
  req.set_release(true);
  for (const std::string& address : granted) {
    v1::ClaimResponse resp;
    // Not taken back, a vote lapses after kClaimHold: nothing to do on a failure.
    (void)network_.To(address).Claim(req, &resp, {.timeout = kVoteDeadline});
  }
  round.why = fmt::format("{} of {} live nodes granted it{}", votes, peers.size() + 1, round.why);
  return round;
}

Status Claims::Acquire(const std::string& key) {
  if (!IsValidNsKey(key)) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", key));
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    Round round = Ask(key, rng());
    if (round.won) return Status::Ok();
    if (round.exists) return Status::AlreadyExists(fmt::format("/{}: it exists", key));
    last = round.why;
    // Wait a random moment, try again.
    int most = 20 << std::min(attempt, 4);  // up to 320 ms: all rounds stay well under 2 s
    clock_.Sleep(std::chrono::milliseconds(std::uniform_int_distribution<int>(5, most)(rng)));
  }
  return Status::Unavailable(fmt::format("/{}: no majority after {} rounds: {}", key, kAttempts, last));
}

Status Claims::OnClaim(const v1::ClaimRequest& req, v1::ClaimResponse* resp) {
  if (!IsValidNsKey(req.key())) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", req.key()));
  if (req.release()) {
    Release(req.key(), req.node_id(), req.claim_id());
    return Status::Ok();
  }
  Vote vote = Cast(req.key(), req.node_id(), req.claim_id());
  resp->set_granted(vote.refusal == v1::CLAIM_REFUSAL_NONE);
  resp->set_refusal(vote.refusal);
  resp->set_reason(vote.reason);
  return Status::Ok();
}

}  // namespace onebox
