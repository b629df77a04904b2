#include "nodeagent/sync/content_transfer.h"

#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/daemon/thread_name.h"
#include "nodeagent/metrics/metrics.h"
#include "nodeagent/peer/holders.h"

namespace onebox {

namespace {
constexpr auto kChunkDeadline = std::chrono::seconds(5);
// A fetch that fails faster than this never reached the peer: asked again,
// waiting up to kReconnectWait for the link to connect.
constexpr auto kFailedAtOnce = std::chrono::milliseconds(50);
constexpr auto kReconnectWait = std::chrono::milliseconds(1000);
// The metrics' label of content moved: "pushed" (by this node's chunk
// pushes, once acknowledged; chunks carried in replication batches are not
// counted here, only where they are "received"), "received" (peers'
// pushes and carried chunks, stored here), "fetched" (by this node), "served"
// (to peers' fetches).
std::string ContentDirection(const char* direction) { return metrics::Labels({{"direction", direction}}); }
constexpr size_t kFetchesInFlight = 4;
constexpr size_t kPushBatchBytes = 3 << 20;  // under gRPC's default 4 MiB message limit
}  // namespace

ContentTransfer::ContentTransfer(Store& store, Membership& members, PeerNetwork& network, std::string self_id,
                                 int replication_factor)
    : store_(store),
      members_(members),
      network_(network),
      self_(std::move(self_id)),
      replication_factor_(replication_factor) {}

std::vector<std::string> ContentTransfer::HoldersOf(const std::string& path, const std::string& writer_id) {
  // As the writer chose them (Holders, on the writer): the top of the other
  // members by rendezvous weight, this node included.
  std::vector<std::string> others;
  for (const PeerAddress& p : members_.AliveOthers())
    if (p.node_id != writer_id) others.push_back(p.node_id);
  if (self_ != writer_id) others.push_back(self_);
  others = HeaviestFor(path, std::move(others), OtherHolders());
  others.insert(others.begin(), writer_id);
  return others;
}

Status ContentTransfer::Fetch(const std::vector<std::string>& digests, const std::vector<std::string>& holders,
                              bool local_only, const ChunkSink& sink) {
  std::vector<PeerAddress> peers = local_only ? std::vector<PeerAddress>{} : members_.AliveOthers();
  // The holders first, in their order (the writer first: it holds the
  // content for sure, unless it lost it); each fetch thread starts with
  // another of them, so that they share the work.
  auto rank = [&](const std::string& id) {
    return static_cast<size_t>(std::find(holders.begin(), holders.end(), id) - holders.begin());
  };
  std::stable_sort(peers.begin(), peers.end(),
                   [&](const PeerAddress& a, const PeerAddress& b) { return rank(a.node_id) < rank(b.node_id); });
  const size_t live_holders = static_cast<size_t>(
      std::count_if(peers.begin(), peers.end(), [&](const PeerAddress& p) { return rank(p.node_id) < holders.size(); }));
  // A few chunks in flight at once (each 1 MiB in memory at most), taken in order.
  std::mutex mu;
  size_t next = 0;
  Status result;
  std::set<std::string> failed;  // a peer that did not answer is not asked again for this file
  auto fetch_one = [&](size_t index, const std::vector<PeerAddress>& order) -> Status {
    const std::string& digest = digests[index];
    // (Taken before the read: a check of a put after the read would prove nothing of what was read.)
    const bool checked_on_arrival = checked_.Take(digest);
    if (Result<std::string> here = LocalChunk(digest); here.ok()) {
      if (checked_on_arrival || Sha256(*here) == digest) return sink(index, *here);
      spdlog::error("chunk {} in the local store does not match its digest (damaged); fetching it again",
                    HexOf(digest));
    }
    if (local_only) return Status::NotFound(fmt::format("chunk {} is not here", HexOf(digest).substr(0, 16)));
    std::string tried;
    for (const auto& [node_id, address] : order) {
      {
        std::lock_guard lock(mu);
        if (failed.count(node_id)) continue;
      }
      v1::FetchChunkRequest req;
      req.set_digest(digest);
      v1::FetchChunkResponse resp;
      auto asked = std::chrono::steady_clock::now();
      Status st = network_.To(address).FetchChunk(req, &resp, {.timeout = kChunkDeadline});
      // Refused at once: our link to it is between connection attempts (a
      // partition just healed: membership heard from it before our channel
      // reconnected). Once more, waiting a moment for the link.
      if (st.code() == Code::kUnavailable && std::chrono::steady_clock::now() - asked < kFailedAtOnce)
        st = network_.To(address).FetchChunk(req, &resp, {.timeout = kReconnectWait, .wait_for_ready = true});
      tried += fmt::format("{}{} ({})", tried.empty() ? "" : ", ", node_id,
                           st.ok() ? (resp.found() ? "bad bytes" : "does not hold it") : st.message());
      if (!st.ok()) {
        std::lock_guard lock(mu);
        failed.insert(node_id);
      }
      if (!st.ok() || !resp.found()) continue;
      if (Sha256(resp.data()) != digest) {
        spdlog::warn("chunk {} from {} does not match its digest; trying another node", HexOf(digest), node_id);
        continue;
      }
      metrics::counts().content_bytes.Add(ContentDirection("fetched"), resp.data().size());
      return sink(index, resp.data());
    }
    return Status::Unavailable(fmt::format("no live node holds chunk {} (asked: {})", HexOf(digest).substr(0, 16),
                                           tried.empty() ? "no live node" : tried));
  };
  auto worker = [&](size_t number) {
    std::vector<PeerAddress> order = peers;
    if (live_holders > 1)
      std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(number % live_holders),
                  order.begin() + static_cast<std::ptrdiff_t>(live_holders));
    for (;;) {
      size_t index;
      {
        std::lock_guard lock(mu);
        if (next == digests.size() || !result.ok()) return;
        index = next++;
      }
      Status s = fetch_one(index, order);
      if (!s.ok()) {
        std::lock_guard lock(mu);
        if (result.ok()) result = s;
      }
    }
  };
  std::vector<std::thread> workers;
  // A catch-up thread's helpers are catch-up threads too (daemon/catch_up.h):
  // born at its priority, behind as it is, and hurried with it.
  const std::optional<int> catch_up = CatchUpThread::AgentNiceHere();
  const bool behind = CatchUpThread::BehindHere();
  for (size_t i = 1; i < std::min<size_t>(kFetchesInFlight, digests.size()); ++i) {
    workers.emplace_back([&worker, catch_up, behind, i] {
      std::optional<CatchUpThread> below_programs;
      if (catch_up) below_programs.emplace(*catch_up, behind);
      worker(i);
    });
    NameThread(workers.back(), "onebox-fetch");
  }
  worker(0);
  for (auto& t : workers) t.join();

  return result;
}

Result<std::string> ContentTransfer::LocalChunk(const std::string& digest) {
  Result<std::string> stored = store_.GetChunk(digest);
  if (stored.ok() || stored.status().code() != Code::kNotFound || !pending_) return stored;
  if (std::optional<std::string> pending = pending_(digest)) return std::move(*pending);
  // It may have gone from pending to stored since the first look.
  return store_.GetChunk(digest);
}

std::vector<PeerAddress> ContentTransfer::Holders(const std::string& path) {
  return HeaviestFor(path, members_.AliveOthers(), OtherHolders());
}

namespace {
constexpr auto kChunkStoreWait = std::chrono::milliseconds(500);  // in all, per push
}  // namespace

Status ContentTransfer::Push(const std::string& address, const std::vector<std::string>& digests, bool sync,
                             google::protobuf::RepeatedPtrField<v1::Chunk>* carried, size_t carry_bytes) {
  size_t carried_bytes = 0;
  v1::PushChunksRequest req;
  req.set_from_node_id(self_);
  req.set_sync(sync);
  size_t bytes = 0;
  auto flush = [&]() -> Status {
    if (req.chunks_size() == 0) return Status::Ok();
    v1::PushChunksResponse resp;
    Status st = network_.To(address).PushChunks(req, &resp, {.timeout = kChunkDeadline});
    req.clear_chunks();
    if (st.ok()) metrics::counts().content_bytes.Add(ContentDirection("pushed"), bytes);
    bytes = 0;
    if (!st.ok()) return Status::Unavailable(fmt::format("push chunks to {}: {}", address, st.message()));
    return Status::Ok();
  };
  // A record's chunks may still be on their way into the store (a big
  // file's chunks are stored just after its record is committed, and the
  // pusher is woken by the commit): wait a moment for them, so the holders
  // get the whole file rather than a stub.
  auto waited = std::chrono::milliseconds(0);
  for (const std::string& digest : digests) {
    Result<std::string> data = LocalChunk(digest);
    while (!data.ok() && data.status().code() == Code::kNotFound && waited < kChunkStoreWait) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      waited += std::chrono::milliseconds(10);
      data = LocalChunk(digest);
    }
    if (!data.ok()) continue;  // replaced meanwhile: the newer version brings its own
    const bool carry = carried != nullptr && carried_bytes + data->size() <= carry_bytes;
    if (!carry && bytes + data->size() > kPushBatchBytes)
      if (Status s = flush(); !s.ok()) return s;
    (carry ? carried_bytes : bytes) += data->size();
    v1::Chunk* c = carry ? carried->Add() : req.add_chunks();
    c->set_digest(digest);
    c->set_data(std::move(*data));
  }
  return flush();
}

Status ContentTransfer::OnFetchChunk(const v1::FetchChunkRequest& req, v1::FetchChunkResponse* resp) {
  Result<std::string> data = LocalChunk(req.digest());
  if (data.ok()) {
    metrics::counts().content_bytes.Add(ContentDirection("served"), data->size());
    resp->set_found(true);
    resp->set_data(std::move(*data));
  } else if (data.status().code() != Code::kNotFound) {
    return data.status();
  }
  return Status::Ok();
}

Status ContentTransfer::OnPushChunks(const v1::PushChunksRequest& req, v1::PushChunksResponse* resp) {
  uint32_t stored = 0;
  Status s = StoreChunks(req.chunks(), req.sync(), &stored);
  resp->set_stored(stored);
  return s;
}

Status ContentTransfer::StoreChunks(const google::protobuf::RepeatedPtrField<v1::Chunk>& chunks, bool sync,
                                    uint32_t* stored) {
  const auto durability = sync ? Store::ChunkDurability::kBySyncedWrite : Store::ChunkDurability::kEventually;
  Status first_failure;
  for (const v1::Chunk& c : chunks) {
    Status s = Sha256(c.data()) == c.digest()
                   ? store_.PutChunk(c.digest(), c.data(), durability)
                   : Status::InvalidArgument(
                         fmt::format("chunk {} does not match its digest", HexOf(c.digest()).substr(0, 16)));
    if (s.ok()) {
      checked_.Checked(c.digest());
      ++*stored;
      metrics::counts().content_bytes.Add(ContentDirection("received"), c.data().size());
    } else if (first_failure.ok()) {
      first_failure = s;
    }
  }
  return first_failure;
}

}  // namespace onebox
