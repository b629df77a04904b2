#include "nodeagent/sync/anti_entropy.h"

#include <algorithm>
#include <random>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/sync/record_codec.h"

namespace onebox {

namespace {
constexpr auto kDeadline = std::chrono::seconds(10);
constexpr size_t kPageBytes = 2 << 20;  // a page fits gRPC's default 4 MiB message limit

}  // namespace

AntiEntropy::AntiEntropy(Store& store, Membership& members, PeerNetwork& network, AppliedFn on_applied,
                         RoundEndFn on_round_end, std::chrono::milliseconds period)
    : store_(store),
      members_(members),
      network_(network),
      on_applied_(std::move(on_applied)),
      on_round_end_(std::move(on_round_end)),
      period_(period) {}

AntiEntropy::~AntiEntropy() { Stop(); }

void AntiEntropy::Start() {
  rounds_thread_.Start("onebox-entropy", period_, [this] { Round(); });
}

void AntiEntropy::Stop() {
  stopped_.Cancel();  // a round with a hung peer must not hold up a shutdown
  rounds_thread_.Stop();
}

void AntiEntropy::Round() {
  // Written here since the last call (a burst the log is carrying, or this
  // node's own writes): a round only every busy_every_.
  const uint64_t commits = store_.commits();
  const bool written = commits != std::exchange(commits_seen_, commits);
  std::vector<PeerAddress> peers = members_.AliveOthers();
  if (peers.empty()) return;
  const auto now = std::chrono::steady_clock::now();
  if (written && last_round_ && now - *last_round_ < busy_every_) return;
  last_round_ = now;  // a round, or a look at the digests (a failed round too: no retry at every period)
  // A peer whose last heartbeat said its store is ours has nothing for us.
  // (Ours is read, a scan of the store if it was written since, only when a
  // peer's beat brought one to compare: during a burst none does.)
  if (std::any_of(peers.begin(), peers.end(),
                  [&](const PeerAddress& p) { return !members_.StoreDigestOf(p.node_id).empty(); }))
    if (Result<std::string> ours = store_.BucketDigestsRoot(); ours.ok())
      std::erase_if(peers, [&](const PeerAddress& p) { return members_.StoreDigestOf(p.node_id) == *ours; });
  if (peers.empty()) return;
  const PeerAddress& peer = peers[std::uniform_int_distribution<size_t>(0, peers.size() - 1)(rng_)];
  Result<uint64_t> n = RoundWith(peer);
  commits_seen_ = store_.commits();  // what the round applied is no write to wait for
  if (!n.ok()) spdlog::debug("anti-entropy with {}: {}", peer.node_id, n.status().message());
  else if (*n > 0) spdlog::info("anti-entropy: {} records repaired from {}", *n, peer.node_id);
}

Result<uint64_t> AntiEntropy::RoundWith(const PeerAddress& peer) {
  std::vector<std::string> ns_won;
  Result<uint64_t> n = Compare(network_.To(peer.address), peer.node_id, &ns_won);
  if (on_round_end_ && !ns_won.empty()) on_round_end_(ns_won);
  return n;
}

Result<uint64_t> AntiEntropy::Compare(PeerLink& peer, const std::string& node_id, std::vector<std::string>* ns_won) {
  const CallOptions call{.timeout = kDeadline, .cancellation = &stopped_};
  v1::BucketDigestsResponse theirs;
  if (Status st = peer.BucketDigests({}, &theirs, call); !st.ok()) return st;
  Result<std::vector<std::string>> ours = store_.BucketDigests();
  if (!ours.ok()) return ours.status();
  if (theirs.digests_size() != static_cast<int>(ours->size()))
    return Status::FailedPrecondition(fmt::format("{} answered {} buckets", node_id, theirs.digests_size()));
  uint64_t repaired = 0;
  for (size_t b = 0; b < ours->size(); ++b) {
    if (theirs.digests(static_cast<int>(b)) == (*ours)[b]) continue;
    v1::ReadBucketRequest req;
    req.set_bucket(static_cast<uint32_t>(b));
    for (;;) {  // every page of the bucket
      v1::ReadBucketResponse page;
      if (Status st = peer.ReadBucket(req, &page, call); !st.ok()) return st;
      Result<uint64_t> won = ApplyPage(page, ns_won);
      if (!won.ok()) return won.status();
      repaired += *won;
      if (!page.more() || page.records_size() == 0) break;
      req.set_after_family(page.records(page.records_size() - 1).family());
      req.set_after_key(page.records(page.records_size() - 1).key());
    }
  }
  repaired_ += repaired;
  return repaired;
}

Result<uint64_t> AntiEntropy::ApplyPage(const v1::ReadBucketResponse& page, std::vector<std::string>* ns_won) {
  std::vector<RemoteRecord> batch;
  for (const v1::LogRecord& r : page.records()) {
    Result<RemoteRecord> record = FromLogRecord(r, rules_);
    if (record.ok()) batch.push_back(std::move(record).value());
    else if (record.status().code() == Code::kPermissionDenied)  // refused again each round: said once
      NoteRefused(r.key(), record.status());
    else spdlog::warn("anti-entropy: a record of '{}' skipped: {}", r.key(), record.status().message());
  }
  Result<std::vector<bool>> won = store_.ApplyBatch(batch, false);
  if (!won.ok()) return won.status();
  uint64_t repaired = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!(*won)[i]) continue;
    ++repaired;
    if (on_applied_) on_applied_(batch[i].space, batch[i].key);
    if (batch[i].space == Cf::kNs) ns_won->push_back(batch[i].key);
  }
  return repaired;
}

void AntiEntropy::NoteRefused(const std::string& key, const Status& why) {
  std::lock_guard lock(refused_mu_);
  if (refused_logged_.size() >= kMaxRefusedLogged) refused_logged_.clear();
  if (refused_logged_.insert(key).second) spdlog::warn("anti-entropy: refused a record: {}", why.message());
  else spdlog::debug("anti-entropy: refused a record: {}", why.message());
}

Status AntiEntropy::OnBucketDigests(const v1::BucketDigestsRequest&, v1::BucketDigestsResponse* resp) {
  Result<std::vector<std::string>> digests = store_.BucketDigests();
  if (!digests.ok()) return digests.status();
  for (std::string& d : *digests) resp->add_digests(std::move(d));
  return Status::Ok();
}

Status AntiEntropy::OnReadBucket(const v1::ReadBucketRequest& req, v1::ReadBucketResponse* resp) {
  if (req.bucket() >= Store::kBuckets) return Status::InvalidArgument(fmt::format("no bucket {}", req.bucket()));
  Cf after = Cf::kKv;
  if (!req.after_family().empty()) {
    after = VersionedCfNamed(req.after_family());
    if (after == Cf::kCount) return Status::InvalidArgument(fmt::format("unknown family '{}'", req.after_family()));
  }
  bool more = false;
  Status s = store_.ReadBucket(
      req.bucket(), after, req.after_family().empty() ? std::string_view() : std::string_view(req.after_key()),
      kPageBytes,
      [resp](Cf space, std::string_view key, std::string_view encoded) {
        *resp->add_records() = ToLogRecord(space, key, std::string(encoded));
      },
      &more);
  if (!s.ok()) return s;
  resp->set_more(more);
  return Status::Ok();
}

}  // namespace onebox
