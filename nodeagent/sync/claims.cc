#include "nodeagent/sync/claims.h"

#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/node_identity.h"
#include "naming/ns_key.h"

namespace onebox {

namespace {
constexpr auto kVoteDeadline = std::chrono::milliseconds(500);
constexpr int kAttempts = 8;  // rounds of voting when claimants split the votes
}  // namespace

std::string Claims::Vote(const std::string& key, const std::string& claimant, uint64_t claim_id, bool* exists) {
  *exists = false;
  Result<Record> rec = store_.GetWithTombstone(key, Cf::kNs);
  // The claimant's own record does not count: its view is newer than what
  // reached us (git makes and removes index.lock within milliseconds).
  if (rec.ok() && !rec->tombstone && NodeIdHex(rec->version.node) != claimant) {
    *exists = true;
    return "it exists";
  }
  std::lock_guard lock(mu_);
  auto now = std::chrono::steady_clock::now();
  std::erase_if(held_, [&](const auto& kv) { return kv.second.until < now; });
  auto it = held_.find(key);
  // A vote given to another node stands until its creation (or removal) of
  // the name reaches us, or kClaimHold passes. The same node may claim again:
  // its own kernel orders its processes' exclusive creates.
  if (it != held_.end() && it->second.claimant != claimant && !(rec.ok() && rec->version.hlc > it->second.since))
    return fmt::format("granted to node {} a moment ago", it->second.claimant);
  held_[key] = {claimant, claim_id, now + kClaimHold, store_.clock().Last()};
  return "";
}

void Claims::Release(const std::string& key, const std::string& claimant, uint64_t claim_id) {
  std::lock_guard lock(mu_);
  auto it = held_.find(key);
  if (it != held_.end() && it->second.claimant == claimant && it->second.claim_id == claim_id) held_.erase(it);
}

Status Claims::Acquire(const std::string& key) {
  if (!IsValidNsKey(key)) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", key));
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    uint64_t claim_id = rng();
    bool exists = false;
    if (std::string why = Vote(key, self_, claim_id, &exists); !why.empty()) {
      if (exists) return Status::AlreadyExists(fmt::format("/{}: {}", key, why));
      last = why;
    } else {
      auto peers = members_.AliveOthers();
      size_t needed = (peers.size() + 1) / 2 + 1;
      size_t votes = 1;
      std::vector<std::string> granted;  // addresses, to release on a loss
      v1::ClaimRequest req;
      req.set_key(key);
      req.set_node_id(self_);
      req.set_claim_id(claim_id);
      last.clear();
      for (const auto& [node_id, address] : peers) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + kVoteDeadline);
        v1::ClaimResponse resp;
        grpc::Status st = peers_.StubFor(address)->Claim(&ctx, req, &resp);
        if (st.ok() && resp.granted()) {
          ++votes;
          granted.push_back(address);
          continue;
        }
        if (st.ok() && resp.reason() == "it exists") return Status::AlreadyExists(fmt::format("/{}: it exists", key));
        last += fmt::format("; {}: {}", node_id, st.ok() ? resp.reason() : st.error_message());
      }
      if (votes >= needed) return Status::Ok();
      // Split votes (others claim it too) or too few answers: give the votes
      // back, wait a random moment, try again.
      Release(key, self_, claim_id);
      req.set_release(true);
      for (const std::string& address : granted) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + kVoteDeadline);
        v1::ClaimResponse resp;
        (void)peers_.StubFor(address)->Claim(&ctx, req, &resp);
      }
      last = fmt::format("{} of {} live nodes granted it{}", votes, peers.size() + 1, last);
    }
    int most = 20 << std::min(attempt, 4);  // up to 320 ms: all rounds stay well under 2 s
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(5, most)(rng)));
  }
  return Status::Unavailable(fmt::format("/{}: no majority after {} rounds: {}", key, kAttempts, last));
}

grpc::Status Claims::OnClaim(const v1::ClaimRequest& req, v1::ClaimResponse* resp) {
  if (!IsValidNsKey(req.key()))
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("'{}' is not a cluster path", req.key()));
  if (req.release()) {
    Release(req.key(), req.node_id(), req.claim_id());
    return grpc::Status::OK;
  }
  bool exists = false;
  std::string why = Vote(req.key(), req.node_id(), req.claim_id(), &exists);
  resp->set_granted(why.empty());
  resp->set_reason(why);
  return grpc::Status::OK;
}

}  // namespace onebox
