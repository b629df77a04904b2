#include "nodeagent/replicator.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/node_identity.h"
#include "nodeagent/grpc_services.h"

namespace onebox {

namespace {
constexpr size_t kBatch = 1000;
// How often the pusher looks for new log entries (one atomic load when there
// are none): a write is on its way to every peer within this.
constexpr auto kRound = std::chrono::milliseconds(5);
constexpr auto kDeadline = std::chrono::seconds(2);
std::string AckedKey(const std::string& node_id) { return "repl/acked/" + node_id; }
}  // namespace

Replicator::Replicator(Store& store, Membership& members, uint64_t self_node_id)
    : store_(store), members_(members), self_(NodeIdHex(self_node_id)) {}

Replicator::~Replicator() { Stop(); }

void Replicator::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void Replicator::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

uint64_t Replicator::Acked(const std::string& node_id) {
  auto it = acked_.find(node_id);
  if (it != acked_.end()) return it->second;
  uint64_t acked = 0;
  if (Result<std::string> v = store_.GetMeta(AckedKey(node_id)); v.ok()) acked = std::stoull(*v);
  acked_[node_id] = acked;
  return acked;
}

void Replicator::PushTo(const std::string& node_id, const std::string& address) {
  for (;;) {  // until caught up, or the peer stops answering
    uint64_t acked = Acked(node_id);
    if (acked >= store_.LastLogSeq()) return;
    Result<std::vector<LogEntry>> entries = store_.ReadLog(acked, kBatch);
    if (!entries.ok()) {
      spdlog::error("replication: cannot read the log: {}", entries.status().ToString());
      return;
    }
    if (entries->empty()) return;
    v1::ReplicateRequest req;
    req.set_from_node_id(self_);
    for (const LogEntry& e : *entries) {
      v1::LogRecord* r = req.add_records();
      r->set_seq(e.seq);
      r->set_family(kCfNames[static_cast<size_t>(e.space)]);
      r->set_key(e.key);
      r->set_record(EncodeRecord(e.record));
    }
    auto& stub = stubs_[address];
    if (!stub) stub = v1::Peer::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kDeadline);
    v1::ReplicateResponse resp;
    grpc::Status st = stub->Replicate(&ctx, req, &resp);
    if (!st.ok()) {
      spdlog::debug("replication to {} at {}: {}", node_id, address, st.error_message());
      return;  // again next round
    }
    uint64_t last = entries->back().seq;
    acked_[node_id] = last;
    (void)store_.PutMeta(AckedKey(node_id), std::to_string(last), /*sync=*/false);
  }
}

void Replicator::Loop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, kRound, [this] { return stopping_; })) return;
    }
    uint64_t last = store_.LastLogSeq();
    for (auto& [node_id, address] : members_.AliveOthers())
      if (Acked(node_id) < last) PushTo(node_id, address);
  }
}

grpc::Status Replicator::OnReplicate(const v1::ReplicateRequest& req, v1::ReplicateResponse* resp) {
  uint64_t applied = 0;
  for (const v1::LogRecord& r : req.records()) {
    Cf space = Cf::kCount;
    for (size_t i = 0; i < static_cast<size_t>(Cf::kCount); ++i)
      if (r.family() == kCfNames[i] && kCfVersioned[i]) space = static_cast<Cf>(i);
    if (space == Cf::kCount)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("unknown family '{}'", r.family()));
    Result<Record> record = DecodeRecord(r.record());
    if (!record.ok()) return ToGrpc(record.status());
    Result<bool> won = store_.Apply(r.key(), *record, false, space);
    if (!won.ok()) return ToGrpc(won.status());  // e.g. a clock too far ahead: the sender retries
    if (*won) ++applied;
  }
  resp->set_applied(applied);
  return grpc::Status::OK;
}

}  // namespace onebox
