#include "nodeagent/claims.h"

#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/view_materializer.h"

namespace onebox {

namespace {
constexpr auto kVoteDeadline = std::chrono::milliseconds(500);
}

std::string Claims::Vote(const std::string& key, const std::string& claimant, uint64_t claim_id) {
  if (store_.Get(key, Cf::kNs).ok()) return "it exists";
  std::lock_guard lock(mu_);
  auto now = std::chrono::steady_clock::now();
  std::erase_if(held_, [&](const auto& kv) { return kv.second.until < now; });
  auto it = held_.find(key);
  if (it != held_.end() && !(it->second.claimant == claimant && it->second.claim_id == claim_id))
    return fmt::format("granted to node {} a moment ago", it->second.claimant);
  held_[key] = {claimant, claim_id, now + kClaimHold};
  return "";
}

void Claims::Release(const std::string& key, uint64_t claim_id) {
  std::lock_guard lock(mu_);
  auto it = held_.find(key);
  if (it != held_.end() && it->second.claimant == self_ && it->second.claim_id == claim_id) held_.erase(it);
}

Status Claims::Acquire(const std::string& key) {
  if (!IsValidNsKey(key)) return Status::InvalidArgument(fmt::format("'{}' is not a cluster path", key));
  static thread_local std::mt19937_64 rng(std::random_device{}());
  uint64_t claim_id = rng();
  if (std::string why = Vote(key, self_, claim_id); !why.empty())
    return Status::AlreadyExists(fmt::format("/{}: {}", key, why));
  auto peers = members_.AliveOthers();
  size_t needed = (peers.size() + 1) / 2 + 1;
  size_t votes = 1;
  std::string refusals;
  bool refused = false;  // a member said no (rather than not answering)
  v1::ClaimRequest req;
  req.set_key(key);
  req.set_node_id(self_);
  req.set_claim_id(claim_id);
  for (const auto& [node_id, address] : peers) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kVoteDeadline);
    v1::ClaimResponse resp;
    grpc::Status st = peers_.StubFor(address)->Claim(&ctx, req, &resp);
    if (st.ok() && resp.granted()) ++votes;
    else refusals += fmt::format("; {}: {}", node_id, st.ok() ? resp.reason() : st.error_message());
    refused = refused || (st.ok() && !resp.granted());
  }
  if (votes >= needed) return Status::Ok();
  Release(key, claim_id);
  std::string why = fmt::format("/{}: {} of {} live nodes granted it{}", key, votes, peers.size() + 1, refusals);
  // Another node has it or won it: EEXIST. Too few answered: EIO (a minority cannot decide).
  return refused ? Status::AlreadyExists(why) : Status::Unavailable(why);
}

grpc::Status Claims::OnClaim(const v1::ClaimRequest& req, v1::ClaimResponse* resp) {
  if (!IsValidNsKey(req.key()))
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("'{}' is not a cluster path", req.key()));
  std::string why = Vote(req.key(), req.node_id(), req.claim_id());
  resp->set_granted(why.empty());
  resp->set_reason(why);
  return grpc::Status::OK;
}

}  // namespace onebox
