#include "nodeagent/sync/anti_entropy.h"

#include <random>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/api/services.h"
#include "naming/ns_key.h"

namespace onebox {

namespace {
constexpr auto kDeadline = std::chrono::seconds(10);
constexpr size_t kPageBytes = 2 << 20;  // a page fits gRPC's default 4 MiB message limit

}  // namespace

AntiEntropy::AntiEntropy(Store& store, Membership& members, ContentTransfer& content, AppliedFn on_applied,
                         RoundEndFn on_round_end, std::chrono::milliseconds period)
    : store_(store),
      members_(members),
      content_(content),
      on_applied_(std::move(on_applied)),
      on_round_end_(std::move(on_round_end)),
      period_(period) {}

AntiEntropy::~AntiEntropy() { Stop(); }

void AntiEntropy::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void AntiEntropy::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    if (call_) call_->TryCancel();  // a round with a hung peer must not hold up a shutdown
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool AntiEntropy::Begin(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + kDeadline);
  std::lock_guard lock(mu_);
  if (stopping_) return false;
  call_ = ctx;
  return true;
}

void AntiEntropy::End() {
  std::lock_guard lock(mu_);
  call_ = nullptr;
}

void AntiEntropy::Loop() {
  std::mt19937 rng(std::random_device{}());
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, period_, [this] { return stopping_; })) return;
    }
    auto peers = members_.AliveOthers();
    if (peers.empty()) continue;
    auto& [node_id, address] = peers[std::uniform_int_distribution<size_t>(0, peers.size() - 1)(rng)];
    std::vector<std::string> ns_won;
    Result<uint64_t> n = RoundWith(node_id, address, &ns_won);
    if (on_round_end_ && !ns_won.empty()) on_round_end_(ns_won);
    if (!n.ok()) spdlog::debug("anti-entropy with {}: {}", node_id, n.status().message());
    else if (*n > 0) spdlog::info("anti-entropy: {} records repaired from {}", *n, node_id);
  }
}

Result<uint64_t> AntiEntropy::RoundWith(const std::string& node_id, const std::string& address,
                                        std::vector<std::string>* ns_won) {
  v1::Peer::Stub* stub = content_.StubFor(address);
  v1::BucketDigestsResponse theirs;
  {
    grpc::ClientContext ctx;
    if (!Begin(&ctx)) return Status::Unavailable("stopping");
    grpc::Status st = stub->BucketDigests(&ctx, {}, &theirs);
    End();
    if (!st.ok()) return Status::Unavailable(st.error_message());
  }
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
      grpc::ClientContext ctx;
      if (!Begin(&ctx)) return Status::Unavailable("stopping");
      grpc::Status st = stub->ReadBucket(&ctx, req, &page);
      End();
      if (!st.ok()) return Status::Unavailable(st.error_message());
      std::vector<RemoteRecord> batch;
      for (const v1::LogRecord& r : page.records()) {
        Cf space = VersionedCfNamed(r.family());
        Result<Record> record = DecodeRecord(r.record());
        if (space == Cf::kCount || !record.ok() || (space == Cf::kNs && !IsValidNsKey(r.key()))) continue;
        batch.push_back({space, r.key(), std::move(record).value()});
      }
      Result<std::vector<bool>> won = store_.ApplyBatch(batch, false);
      if (!won.ok()) return won.status();
      for (size_t i = 0; i < batch.size(); ++i) {
        if (!(*won)[i]) continue;
        ++repaired;
        if (on_applied_) on_applied_(batch[i].space, batch[i].key);
        if (batch[i].space == Cf::kNs) ns_won->push_back(batch[i].key);
      }
      if (!page.more() || page.records_size() == 0) break;
      req.set_after_family(page.records(page.records_size() - 1).family());
      req.set_after_key(page.records(page.records_size() - 1).key());
    }
  }
  repaired_ += repaired;
  return repaired;
}

grpc::Status AntiEntropy::OnBucketDigests(const v1::BucketDigestsRequest&, v1::BucketDigestsResponse* resp) {
  Result<std::vector<std::string>> digests = store_.BucketDigests();
  if (!digests.ok()) return ToGrpc(digests.status());
  for (std::string& d : *digests) resp->add_digests(std::move(d));
  return grpc::Status::OK;
}

grpc::Status AntiEntropy::OnReadBucket(const v1::ReadBucketRequest& req, v1::ReadBucketResponse* resp) {
  if (req.bucket() >= Store::kBuckets)
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("no bucket {}", req.bucket()));
  Cf after = Cf::kKv;
  if (!req.after_family().empty()) {
    after = VersionedCfNamed(req.after_family());
    if (after == Cf::kCount)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("unknown family '{}'", req.after_family()));
  }
  bool more = false;
  Status s = store_.ReadBucket(
      req.bucket(), after, req.after_family().empty() ? std::string_view() : std::string_view(req.after_key()),
      kPageBytes,
      [resp](Cf space, std::string_view key, std::string_view encoded) {
        v1::LogRecord* r = resp->add_records();
        r->set_family(kCfNames[static_cast<size_t>(space)]);
        r->set_key(std::string(key));
        r->set_record(std::string(encoded));
      },
      &more);
  if (!s.ok()) return ToGrpc(s);
  resp->set_more(more);
  return grpc::Status::OK;
}

}  // namespace onebox
