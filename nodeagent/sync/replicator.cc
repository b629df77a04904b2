#include "nodeagent/sync/replicator.h"

#include <algorithm>
#include <deque>
#include <set>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "consistency/meta_values.h"
#include "naming/node_identity.h"
#include "naming/ns_key.h"
#include "nodeagent/daemon/thread_name.h"
#include "nodeagent/peer/fan_out.h"
#include "nodeagent/sync/record_codec.h"
#include "onebox/v1/namespace.pb.h"

namespace onebox {

namespace {
constexpr size_t kBatch = 1000;
// And at most this many bytes of records (one may hold up to 1 MiB, with
// its extended attributes): a batch stays under gRPC's 8 MiB message with
// the 2 MiB of content it carries.
constexpr size_t kBatchBytes = 4 << 20;

// The first entries, within kBatchBytes (one at least).
void KeepWithinBatchBytes(std::vector<LogEntry>* entries) {
  size_t bytes = 0, kept = 0;
  for (const LogEntry& e : *entries) {
    bytes += e.key.size() + e.record.value.size() + kRecordHeaderBytes;
    if (kept > 0 && bytes > kBatchBytes) break;
    ++kept;
  }
  entries->resize(kept);
}
// How often the loop looks after the pushers (starts them for new live
// peers, cancels stuck streams), truncates the log and flushes chunks while
// there is work for it: a stream open, the log moved, chunks unflushed. New
// log entries wake the pushers at once (Store::set_log_observer), and a
// change of the live members wakes the loop (PeersChanged): nothing polls
// for them. With no work the loop rests until a commit, a chunk to flush, a
// stream's start or a change of the live set wakes it, and looks anyway
// every kRest.
constexpr auto kRound = std::chrono::seconds(1);
constexpr auto kRest = std::chrono::seconds(10);
// A pusher with entries unsent to its member alive (its last stream failed)
// tries again this often; one with nothing to send, or whose member is not
// alive, sleeps until a commit or a change of the live set (kRest at most).
constexpr auto kRetry = std::chrono::seconds(1);
// A node that never had another member keeps this many of its newest log
// entries (or --log-retain, if fewer): the first members to join, most
// likely soon, get them pushed in order rather than repaired.
constexpr uint64_t kAloneRetain = 100'000;
constexpr auto kDeadline = std::chrono::seconds(2);
// Batches a stream may have unanswered: enough to keep the link busy while
// the peer applies one, few enough that a slow peer is not flooded.
constexpr size_t kWindow = 4;
// Content a batch carries (ReplicateRequest.chunks), under gRPC's 4 MiB
// message limit with the batch's records.
constexpr size_t kCarriedChunkBytes = 2 << 20;
// A stream with nothing to send for this long is closed (idle agents hold none).
constexpr auto kQuiet = std::chrono::milliseconds(2000);  // (milliseconds: kQuiet / 4 must not round to 0)
// Chunks put without the WAL are flushed once none has been put for this
// long, or once the oldest unflushed one is this old (under steady writes).
constexpr auto kChunksQuiet = std::chrono::milliseconds(2000);
constexpr auto kChunksMaxAge = std::chrono::milliseconds(30000);
// A stream call blocked this long (a hung or cut-off peer) is cancelled.
constexpr int64_t kStuck = 2000;
int64_t Ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
std::string AckedKey(const std::string& node_id) { return "repl/acked/" + node_id; }
constexpr std::string_view kPeersKey = "repl/peers";  // the ids with an AckedKey, comma-separated
}  // namespace

Replicator::Replicator(Store& store, Membership& members, ContentTransfer& content, PeerNetwork& network,
                       uint64_t self_node_id, AppliedFn on_applied, uint64_t log_retain, Clock& clock)
    : store_(store),
      members_(members),
      content_(content),
      network_(network),
      clock_(clock),
      on_applied_(std::move(on_applied)),
      log_retain_(log_retain),
      self_(NodeIdHex(self_node_id)) {
  // Every peer ever pushed to, with its acknowledged position: right after a
  // restart membership knows nobody yet, and the log must not be cut for it.
  if (Result<std::string> peers = store_.GetMeta(kPeersKey); peers.ok())
    for (const std::string& id : SplitList(*peers)) Acked(id);
}

Replicator::~Replicator() { Stop(); }

void Replicator::Start() {
  store_.set_log_observer([this] {
    bool loop_resting;
    {
      std::lock_guard lock(mu_);
      ++logged_;
      loop_resting = loop_resting_;
    }
    push_cv_.notify_all();
    if (loop_resting) cv_.notify_all();  // (a loop at work would wake for nothing)
  });
  store_.set_chunks_observer([this] { WakeLoop(); });  // chunks to flush: the loop goes to work
  thread_ = std::thread([this] { Loop(); });
  NameThread(thread_, "onebox-replica");
}

void Replicator::Stop() {
  {
    std::lock_guard lock(mu_);
    // Once only: the agent stops the replicator, then closes the store, and
    // the destructor comes after that.
    if (stopped_) return;
    stopped_ = stopping_ = true;
  }
  store_.set_log_observer({});
  store_.set_chunks_observer({});
  cv_.notify_all();
  push_cv_.notify_all();
  {
    std::lock_guard lock(acked_mu_);  // WaitApplied's waits end now
    waits_end_ = true;
    acked_cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t Replicator::Acked(const std::string& node_id) {
  std::lock_guard lock(acked_mu_);
  auto it = acked_.find(node_id);
  if (it != acked_.end()) return it->second;
  uint64_t acked = 0;
  if (Result<std::string> v = store_.GetMeta(AckedKey(node_id)); v.ok()) {
    // A damaged position sends the peer everything the log still holds
    // again: harmless (applies are idempotent), and anti-entropy covers the rest.
    Result<uint64_t> parsed = ParseDecimal(*v, "acknowledged position of " + node_id);
    if (parsed.ok()) acked = *parsed;
    else spdlog::error("replication: {}; sending {} the whole log", parsed.status().message(), node_id);
  }
  acked_[node_id] = acked;
  std::vector<std::string> peers;
  for (const auto& [id, pos] : acked_) peers.push_back(id);
  // Lost, it costs a peer's log entries being cut before a restart that did
  // not know the peer yet; anti-entropy repairs that peer.
  if (Status s = store_.PutMeta(kPeersKey, JoinList(peers), /*sync=*/false); !s.ok())
    spdlog::warn("replication: cannot keep the list of peers: {}", s.message());
  return acked;
}

bool Replicator::NextBatch(const std::string& node_id, const std::string& address, uint64_t after,
                           v1::ReplicateRequest* req) {
  Result<std::vector<LogEntry>> entries = store_.ReadLog(after, kBatch);
  if (!entries.ok()) {
    spdlog::error("replication: cannot read the log: {}", entries.status().ToString());
    return false;
  }
  if (entries->empty()) return false;
  KeepWithinBatchBytes(&*entries);
  // Content first: a holder that has every chunk puts the whole file in its view.
  std::vector<std::string> chunks;
  for (const LogEntry& e : *entries) {
    v1::Inode inode;
    if (e.space != Cf::kNs || e.record.tombstone || !inode.ParseFromString(e.record.value) ||
        inode.type() != v1::FILE_TYPE_REGULAR || inode.chunks_size() == 0)
      continue;
    bool holder = false;
    for (const PeerAddress& h : content_.Holders(e.key)) holder = holder || h.node_id == node_id;
    if (holder) chunks.insert(chunks.end(), inode.chunks().begin(), inode.chunks().end());
  }
  std::sort(chunks.begin(), chunks.end());
  chunks.erase(std::unique(chunks.begin(), chunks.end()), chunks.end());
  req->Clear();
  req->set_from_node_id(self_);
  // The first 2 MiB go with the batch, the rest before it. Without them the
  // peer holds stubs and fetches on open: the metadata goes anyway.
  if (Status s = content_.Push(address, chunks, /*sync=*/false, req->mutable_chunks(), kCarriedChunkBytes); !s.ok())
    spdlog::debug("replication to {}: content: {}", node_id, s.message());
  for (const LogEntry& e : *entries) *req->add_records() = ToLogRecord(e);
  return true;
}

void Replicator::SkipPastRetention(const std::string& node_id, uint64_t* sent) {
  if (*sent + 1 >= store_.FirstLogSeq()) return;
  spdlog::info("replication: {} was away past the log's retention (entries {} to {} are gone); "
               "anti-entropy repairs what it missed",
               node_id, *sent + 1, store_.FirstLogSeq() - 1);
  *sent = store_.FirstLogSeq() - 1;
  std::lock_guard lock(acked_mu_);
  acked_[node_id] = *sent;
}

void Replicator::KeepAcked(const std::string& node_id, uint64_t seq) {
  // Kept before the log may be truncated by it: a restart never finds the
  // log cut past what it reads back. Lost, the position only makes the
  // next stream send some entries again (applies are idempotent).
  if (Status s = store_.PutMeta(AckedKey(node_id), std::to_string(seq), /*sync=*/false); !s.ok())
    spdlog::warn("replication to {}: cannot keep its position: {}", node_id, s.message());
  std::lock_guard lock(acked_mu_);
  acked_[node_id] = seq;
  acked_cv_.notify_all();
}

Status Replicator::WaitApplied(const std::string& node_id, uint64_t seq, std::chrono::milliseconds timeout) {
  if (Acked(node_id) >= seq) return Status::Ok();
  std::unique_lock lock(acked_mu_);
  acked_cv_.wait_for(lock, timeout, [&] { return acked_[node_id] >= seq || waits_end_; });
  if (acked_[node_id] >= seq) return Status::Ok();
  return Status::Unavailable(fmt::format("node {} has applied this node's log up to {} of {}", node_id,
                                              acked_[node_id], seq));
}

void Replicator::StreamTo(const std::string& node_id, const std::string& address, Pusher* self) {
  Cancellation cancellation;
  {
    std::lock_guard lock(self->stream_mu);
    std::lock_guard stop_lock(mu_);
    if (stopping_) return;
    self->stream = &cancellation;  // from here the watchdog may cancel it
  }
  // The loop's watchdog times every open stream: a round comes after this
  // start (a loop that found no stream open and is about to rest finds the
  // flag set, which only a round clears).
  WakeLoop();
  // Every call that can block on the peer is timed by the watchdog.
  auto timed = [this, self](auto&& call) {
    self->blocked_since = Ms(clock_.Now());
    bool ok = call();
    self->blocked_since = 0;
    return ok;
  };
  std::unique_ptr<ReplicateStream> stream;
  timed([&] {  // opening it may wait for a connection
    stream = network_.To(address).OpenReplicateStream(&cancellation);
    return true;
  });
  std::deque<uint64_t> unanswered;  // the last seq of each batch sent and not yet answered
  uint64_t seen = Logged();         // commits to the log looked at
  uint64_t sent = Acked(node_id);
  Clock::time_point quiet_since = clock_.Now();
  bool failed = false;
  v1::ReplicateRequest req;
  for (;;) {
    if (unanswered.empty()) SkipPastRetention(node_id, &sent);
    while (unanswered.size() < kWindow && sent < store_.LastLogSeq() && NextBatch(node_id, address, sent, &req)) {
      if (!timed([&] { return stream->Write(req); })) {
        failed = true;
        break;
      }
      sent = req.records(req.records_size() - 1).seq();
      unanswered.push_back(sent);
    }
    if (failed) break;
    if (unanswered.empty()) {
      std::unique_lock lock(mu_);
      if (stopping_ || clock_.Now() - quiet_since > kQuiet) break;
      // New entries since the last look, or a look again after a while
      // (entries counted before they were committed may be readable now).
      if (logged_ == seen) push_cv_.wait_for(lock, kQuiet / 4, [&] { return stopping_ || logged_ != seen; });
      seen = logged_;
      continue;
    }
    v1::ReplicateResponse resp;
    if (!timed([&] { return stream->Read(&resp); })) {
      failed = true;
      break;
    }
    if (resp.acked_seq() != unanswered.front()) {
      spdlog::warn("replication to {}: answered seq {} where {} was due; restarting the stream", node_id,
                   resp.acked_seq(), unanswered.front());
      cancellation.Cancel();
      failed = true;
      break;
    }
    unanswered.pop_front();
    KeepAcked(node_id, resp.acked_seq());
    quiet_since = clock_.Now();
  }
  if (!failed) timed([&] { return stream->WritesDone(); });
  Status st;
  timed([&] {
    st = stream->Finish();
    return true;
  });
  {
    std::lock_guard lock(self->stream_mu);
    self->stream = nullptr;
  }
  // Unanswered batches are sent again by the next stream (from the acked seq).
  if (!st.ok()) spdlog::debug("replication to {} at {}: {}", node_id, address, st.message());
}

void Replicator::Watchdog() {
  bool stopping;
  {
    std::lock_guard lock(mu_);
    stopping = stopping_;
  }
  std::set<std::string> alive;
  for (const PeerAddress& p : members_.AliveOthers()) alive.insert(p.node_id);
  int64_t now = Ms(clock_.Now());
  for (auto& [node_id, pusher] : pushers_) {
    int64_t since = pusher->blocked_since;
    bool stuck = since != 0 && now - since > kStuck;
    if (!stopping && !stuck && alive.count(node_id)) continue;
    std::lock_guard lock(pusher->stream_mu);
    if (pusher->stream) {
      if (stuck) spdlog::info("replication to {}: no progress for {} ms; cancelling the stream", node_id, now - since);
      pusher->stream->Cancel();
    }
  }
}

std::vector<v1::ReplicationLag> Replicator::Lags() {
  std::vector<v1::ReplicationLag> out;
  uint64_t last = store_.LastLogSeq();
  uint64_t now_ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  for (const v1::Node& n : members_.Nodes()) {
    if (n.self()) continue;
    v1::ReplicationLag& lag = out.emplace_back();
    lag.set_node_id(n.node_id());
    lag.set_name(n.name());
    // Entries cut from the log meanwhile are anti-entropy's to repair: not counted.
    uint64_t from = std::max(Acked(n.node_id()), store_.FirstLogSeq() - 1);
    lag.set_entries_behind(last > from ? last - from : 0);
    if (last <= from) continue;
    // The oldest entry it lacks, by its version's wall-clock part.
    Result<std::vector<LogEntry>> next = store_.ReadLog(from, 1);
    if (next.ok() && !next->empty()) {
      uint64_t written_ms = hlc::PhysicalMs(next->front().record.version.hlc);
      lag.set_lag_ms(now_ms > written_ms ? now_ms - written_ms : 0);
    }
  }
  return out;
}

void Replicator::TruncateLog() {
  // What every member we know of (dead ones too) has, and in any case all
  // but the newest log_retain entries.
  uint64_t last = store_.LastLogSeq();
  uint64_t upto = last > log_retain_ ? last - log_retain_ : 0;
  // A seed not heard from yet will want everything: nobody "has" it all.
  uint64_t all_have = members_.UnheardSeeds() > 0 ? 0 : last;
  bool alone = true;
  for (const v1::Node& n : members_.Nodes())
    if (!n.self()) {
      alone = false;
      all_have = std::min(all_have, Acked(n.node_id()));
    }
  {  // and every peer ever pushed to, members or not (yet)
    std::lock_guard lock(acked_mu_);
    alone = alone && acked_.empty();
    for (const auto& [id, pos] : acked_) all_have = std::min(all_have, pos);
  }
  if (alone) all_have = std::min(all_have, last > kAloneRetain ? last - kAloneRetain : 0);
  upto = std::max(upto, all_have);
  if (upto >= store_.FirstLogSeq())
    if (Status s = store_.TruncateLog(upto); !s.ok()) spdlog::warn("replication: {}", s.message());
}

void Replicator::PeersChanged() {
  {
    std::lock_guard lock(mu_);
    ++peers_changes_;
  }
  push_cv_.notify_all();  // a pusher waiting for its member looks again
  WakeLoop(/*at_once=*/true);  // a new member's pusher starts now
}

void Replicator::WakeLoop(bool at_once) {
  bool loop_resting;
  {
    std::lock_guard lock(mu_);
    loop_woken_ = true;
    loop_resting = loop_resting_;
  }
  if (loop_resting || at_once) cv_.notify_all();
}

bool Replicator::StreamsOpen() {
  for (auto& [id, pusher] : pushers_) {
    std::lock_guard lock(pusher->stream_mu);
    if (pusher->stream != nullptr || pusher->blocked_since != 0) return true;
  }
  return false;
}

void Replicator::Loop() {
  bool busy = true;  // the first rounds look after what the last run left
  uint64_t logged = Logged();  // commits counted where the last wait ended: one since wakes a rest at once
  for (;;) {
    const uint64_t last_seq = store_.LastLogSeq();
    {
      std::unique_lock lock(mu_);
      loop_resting_ = !busy;
      bool woken = cv_.wait_for(lock, busy ? kRound : kRest,
                                [&] { return stopping_ || loop_woken_ || (!busy && logged_ != logged); });
      loop_resting_ = false;
      logged = logged_;
      if (woken && stopping_) break;
      loop_woken_ = false;
    }
    if (Clock::time_point now = clock_.Now(); now - last_truncate_ > std::chrono::seconds(1)) {
      last_truncate_ = now;
      TruncateLog();
      // Closed files' chunks wait in the memtable (Store::ChunkDurability): flushed once writes pause.
      if (Status s = store_.FlushChunksIfQuiet(kChunksQuiet, kChunksMaxAge); !s.ok())
        spdlog::warn("replication: {}", s.message());
    }
    Watchdog();
    // One pusher per member alive since the start, each at its own pace: a
    // slow or cut-off peer holds up nobody else. A pusher waits out its
    // member's absences (PusherLoop).
    for (const PeerAddress& peer : members_.AliveOthers()) {
      if (pushers_.count(peer.node_id)) continue;
      auto pusher = std::make_unique<Pusher>();
      Pusher* raw = pusher.get();
      raw->thread = std::thread([this, raw, id = peer.node_id] { PusherLoop(id, raw); });
      NameThread(raw->thread, "onebox-push");
      pushers_[peer.node_id] = std::move(pusher);
    }
    busy = StreamsOpen() || store_.LastLogSeq() != last_seq || store_.ChunksAwaitFlush();
  }
  Watchdog();  // stopping: cancels every open stream
  for (auto& [id, pusher] : pushers_) pusher->thread.join();
  pushers_.clear();
}

uint64_t Replicator::Logged() {
  std::lock_guard lock(mu_);
  return logged_;
}

void Replicator::PusherLoop(const std::string& node_id, Pusher* self) {
  uint64_t seen = Logged();
  uint64_t peers_seen = PeersSeen();
  std::optional<PeerAddress> peer = members_.AliveOther(node_id);
  for (bool first = true;; first = false) {
    if (!first) {
      // Entries unsent to a member alive: again in a second. Its member not
      // alive: again when the live set changes (it may be back, at another
      // address), or at the next commit.
      const bool retry = peer && Acked(node_id) < store_.LastLogSeq();
      std::unique_lock lock(mu_);
      push_cv_.wait_for(lock, retry ? kRetry : kRest,
                        [&] { return stopping_ || logged_ != seen || peers_changes_ != peers_seen; });
      seen = logged_;
      peers_seen = peers_changes_;
      if (stopping_) break;
    }
    peer = members_.AliveOther(node_id);
    if (peer && Acked(node_id) < store_.LastLogSeq()) StreamTo(node_id, peer->address, self);
  }
}

uint64_t Replicator::PeersSeen() {
  std::lock_guard lock(mu_);
  return peers_changes_;
}

std::vector<PeerAddress> Replicator::HoldersFirst(const std::string& path) {
  std::vector<PeerAddress> order = content_.Holders(path);
  for (PeerAddress& member : members_.AliveOthers())
    if (std::find(order.begin(), order.end(), member) == order.end()) order.push_back(std::move(member));
  return order;
}

v1::ReplicateRequest Replicator::PublishBatch(const std::string& path, const Record& record) {
  v1::ReplicateRequest req;
  req.set_from_node_id(self_);
  req.set_sync(true);
  // Its directories first: a node that has not heard of them yet must not
  // make them up (they would win as the newer version).
  for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    std::string dir = path.substr(0, slash);
    if (Result<Record> d = store_.Get(dir, Cf::kNs); d.ok()) *req.add_records() = ToLogRecord(Cf::kNs, dir, *d);
  }
  *req.add_records() = ToLogRecord(Cf::kNs, path, record);
  return req;
}

Status Replicator::ReplicateNow(const std::string& path, size_t acks) {
  if (acks == 0) return Status::Ok();
  Result<Record> rec = store_.Get(path, Cf::kNs);
  if (!rec.ok()) return Status::IOError(fmt::format("/{} is gone: {}", path, rec.status().message()));
  std::vector<std::string> chunks;
  if (v1::Inode inode; inode.ParseFromString(rec->value)) chunks.assign(inode.chunks().begin(), inode.chunks().end());
  v1::ReplicateRequest req = PublishBatch(path, *rec);
  size_t got = 0;
  std::string why;
  for (const auto& [node_id, address] : HoldersFirst(path)) {
    if (Status s = content_.Push(address, chunks, /*sync=*/true); !s.ok()) {
      why += fmt::format("; {}: {}", node_id, s.message());
      continue;
    }
    v1::ReplicateResponse resp;
    if (Status st = network_.To(address).Replicate(req, &resp, {.timeout = kDeadline}); !st.ok()) {
      why += fmt::format("; {}: {}", node_id, st.message());
      continue;
    }
    if (++got >= acks) return Status::Ok();
  }
  return Status::Unavailable(fmt::format("durable on {} of the {} nodes the write quorum needs{}", got + 1, acks + 1,
                                         why.empty() ? "; no other node is alive" : why));
}

Status Replicator::SendEntriesOf(const PeerAddress& peer, const std::string& dir) {
  // Every record the caller saw (a recall checked its recent grants) is sent.
  uint64_t last = store_.LastLogSeqOfVisibleWrites();
  for (uint64_t after = std::max(Acked(peer.node_id), store_.FirstLogSeq() - 1); after < last;) {
    Result<std::vector<LogEntry>> entries = store_.ReadLog(after, kBatch);
    if (!entries.ok()) return entries.status();
    if (entries->empty()) break;
    KeepWithinBatchBytes(&*entries);
    v1::ReplicateRequest req;
    req.set_from_node_id(self_);
    for (const LogEntry& e : *entries)
      if (e.space == Cf::kNs && e.seq <= last && ParentKey(e.key) == dir) *req.add_records() = ToLogRecord(e);
    after = entries->back().seq;
    if (req.records_size() == 0) continue;
    v1::ReplicateResponse resp;
    if (Status st = network_.To(peer.address).Replicate(req, &resp, {.timeout = kDeadline}); !st.ok())
      return Status::Unavailable(fmt::format("sending {} the entries of /{}: {}", peer.node_id, dir, st.message()));
  }
  return Status::Ok();
}

Status Replicator::ReplicateKey(Cf space, const std::string& key, size_t acks, bool sync) {
  if (acks == 0) return Status::Ok();
  Result<Record> rec = store_.GetWithTombstone(key, space);
  if (!rec.ok()) return rec.status();
  v1::ReplicateRequest req;
  req.set_from_node_id(self_);
  req.set_sync(sync);
  *req.add_records() = ToLogRecord(space, key, *rec);
  std::vector<PeerAddress> peers = members_.AliveOthers();
  FanOutResult sent = FanOut(
      peers.size(), acks,
      [&](size_t i, Cancellation& cancellation) {
        v1::ReplicateResponse resp;
        return network_.To(peers[i].address).Replicate(req, &resp, {.timeout = kDeadline, .cancellation = &cancellation});
      },
      [&](size_t i) { return peers[i].node_id; });
  if (sent.succeeded >= acks) return Status::Ok();
  return Status::Unavailable(fmt::format("held by {} of the {} nodes the level needs (it replicates later){}",
                                         sent.succeeded + 1, acks + 1,
                                         peers.empty() ? "; no other node is alive" : sent.why));
}

Result<Record> Replicator::ReadQuorum(Cf space, const std::string& key, size_t answers) {
  Result<Record> best = store_.GetWithTombstone(key, space);
  if (!best.ok() && best.status().code() != Code::kNotFound) return best.status();
  v1::ReadRecordRequest req;
  req.set_family(kCfNames[static_cast<size_t>(space)]);
  req.set_key(key);
  std::vector<PeerAddress> peers = members_.AliveOthers();
  std::vector<std::optional<Record>> theirs(peers.size());
  FanOutResult read = FanOut(
      peers.size(), answers,
      [&](size_t i, Cancellation& cancellation) -> Status {
        v1::ReadRecordResponse resp;
        Status st = network_.To(peers[i].address).ReadRecord(req, &resp, {.timeout = kDeadline, .cancellation = &cancellation});
        if (!st.ok() || !resp.found()) return st;
        Result<Record> rec = DecodeRecord(resp.record());
        if (!rec.ok()) return rec.status();
        if (!CheckPeerRecord(space, key, *rec, rules_).ok()) return Status::Ok();  // answered; its record not taken
        theirs[i] = std::move(rec).value();
        return Status::Ok();
      },
      [&](size_t i) { return peers[i].node_id; });
  if (read.succeeded < answers)
    return Status::Unavailable(fmt::format("{} of the {} nodes a quorum read needs answered{}", read.succeeded + 1,
                                           answers + 1, peers.empty() ? "; no other node is alive" : read.why));
  bool newer_elsewhere = false;
  for (std::optional<Record>& r : theirs) {
    if (!r || (best.ok() && !Newer(r->version, best->version))) continue;
    best = std::move(*r);
    newer_elsewhere = true;
  }
  if (newer_elsewhere) {  // kept here too: the next local read sees it
    if (Result<bool> kept = store_.Apply(key, *best, false, space); kept.ok() && *kept && on_applied_)
      on_applied_(space, key);
  }
  if (!best.ok()) return best.status();
  if (best->tombstone) return Status::NotFound(fmt::format("'{}' was deleted", key));
  return best;
}

Status Replicator::OnReadRecord(const v1::ReadRecordRequest& req, v1::ReadRecordResponse* resp) {
  Cf space = VersionedCfNamed(req.family());
  if (space == Cf::kCount) return Status::InvalidArgument(fmt::format("unknown family '{}'", req.family()));
  Result<Record> rec = store_.GetWithTombstone(req.key(), space);
  if (!rec.ok()) return rec.status().code() == Code::kNotFound ? Status::Ok() : rec.status();
  resp->set_found(true);
  resp->set_record(EncodeRecord(*rec));
  return Status::Ok();
}

Status Replicator::WaitAppliedFrom(const std::string& node_id, uint64_t seq, std::chrono::milliseconds timeout) {
  std::unique_lock lock(acked_mu_);
  acked_cv_.wait_for(lock, timeout, [&] { return applied_from_[node_id] >= seq || waits_end_; });
  if (applied_from_[node_id] >= seq) return Status::Ok();
  return Status::Unavailable(fmt::format("this node has applied node {}'s log up to {} of {}", node_id,
                                         applied_from_[node_id], seq));
}

Status Replicator::OnReplicate(const v1::ReplicateRequest& req, v1::ReplicateResponse* resp, bool in_order) {
  // The content the records name first: a holder that has every chunk puts
  // the whole file in its view. One that cannot be stored (it does not
  // match its digest, the store failed) holds up no record: its file is
  // placed as a stub, whose content is fetched and checked on open.
  uint32_t stored = 0;
  if (Status s = content_.StoreChunks(req.chunks(), req.sync(), &stored); !s.ok())
    spdlog::warn("replication from {}: content left out: {}", req.from_node_id(), s.message());
  std::vector<RemoteRecord> batch;
  batch.reserve(static_cast<size_t>(req.records_size()));
  for (const v1::LogRecord& r : req.records()) {
    Result<RemoteRecord> record = FromLogRecord(r, rules_);
    resp->set_acked_seq(std::max(resp->acked_seq(), r.seq()));
    if (record.status().code() == Code::kPermissionDenied) {  // acked, so never sent again: refused for good
      spdlog::warn("replication: refused a record: {}", record.status().message());
      continue;
    }
    if (!record.ok()) return record.status();
    batch.push_back(std::move(record).value());
  }
  // One commit for the whole batch.
  Result<std::vector<bool>> won = store_.ApplyBatch(batch, req.sync());
  if (!won.ok()) return won.status();  // e.g. a clock too far ahead: the sender retries
  uint64_t applied = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if ((*won)[i]) {
      ++applied;
      if (on_applied_) on_applied_(batch[i].space, batch[i].key);
    } else if (batch[i].space == Cf::kNs && on_applied_) {
      // Held already (anti-entropy brought it before the pusher): the pusher
      // sends a file's content to its holders just before its record, so a
      // stub placed for it meanwhile may now become the whole file. (For an
      // entry already in place the materializer only looks.)
      on_applied_(batch[i].space, batch[i].key);
    }
  }
  resp->set_applied(applied);
  if (in_order && resp->acked_seq() > 0) {
    std::lock_guard lock(acked_mu_);
    uint64_t& from = applied_from_[req.from_node_id()];
    from = std::max(from, resp->acked_seq());
    acked_cv_.notify_all();
  }
  return Status::Ok();
}

}  // namespace onebox
