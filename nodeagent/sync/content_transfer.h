// File content between agents. Chunks are content-addressed (SHA-256) and
// immutable, so moving them needs no versions: a node that lacks some fetches
// them one at a time from a live member that holds them (the file's writer
// first) and checks each against its digest; a writer pushes its new chunks to
// the members that should hold a copy (replication factor, default 2: the
// writer and one other, chosen per path by rendezvous hashing over the live
// members). One chunk (1 MiB) in memory per transfer, whatever the file's size.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "consistency/digest.h"
#include "consistency/store.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/sync/checked_chunks.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

class ContentTransfer {
 public:
  ContentTransfer(Store& store, Membership& members, PeerNetwork& network, std::string self_id,
                  int replication_factor);

  // Gets every chunk of digests (by index, duplicates too): from this node's
  // store, else from a live member (the holders first), checked against its
  // digest; hands each to sink, a few at once on several threads, in no
  // particular order. Fails (Unavailable, naming a missing chunk) when no
  // live member holds one, or with the sink's first failure. Bytes that do
  // not match their digest never reach the sink, except those of the first
  // read of a chunk this node stored from a peer moments ago, checked as it
  // arrived and not hashed again (checked_chunks.h). local_only: asks no
  // peer, and fails with NotFound when this node lacks a chunk.
  using ChunkSink = std::function<Status(size_t index, const std::string& bytes)>;
  // holders: the nodes to ask first, in order (HoldersOf), then every other
  // live member.
  Status Fetch(const std::vector<std::string>& digests, const std::vector<std::string>& holders, bool local_only,
               const ChunkSink& sink);
  // The nodes that should hold path's content as its writer chose them: the
  // writer, then the replication factor - 1 others.
  std::vector<std::string> HoldersOf(const std::string& path, const std::string& writer_id);
  // The other live members that should hold path's content: replication
  // factor - 1 of them.
  std::vector<PeerAddress> Holders(const std::string& path);
  // Sends the chunks the receiver should hold, in batches of at most 3 MiB;
  // sync: a synced Replicate that names them follows (PushChunksRequest.sync).
  // With carried, as many of them as fit in carry_bytes go there instead (a
  // ReplicateRequest's chunks, sent by the caller): one call less per batch.
  Status Push(const std::string& address, const std::vector<std::string>& digests, bool sync = false,
              google::protobuf::RepeatedPtrField<v1::Chunk>* carried = nullptr, size_t carry_bytes = 0);
  // Checks chunks against their digests and stores them (PushChunks, and
  // those a ReplicateRequest carries); sync as PushChunksRequest.sync. Every
  // good one is stored; the first failure, if any, is returned.
  Status StoreChunks(const google::protobuf::RepeatedPtrField<v1::Chunk>& chunks, bool sync, uint32_t* stored);
  // Reads that took the check made as the chunk arrived instead of hashing it.
  uint64_t arrival_checks_taken() { return checked_.taken(); }
  // How many nodes besides the writer hold a file's content.
  size_t OtherHolders() const { return replication_factor_ > 1 ? static_cast<size_t>(replication_factor_ - 1) : 0; }

  // Where chunks that records name but the store does not hold yet come
  // from (the recorder stores some after recording them). Set before serving.
  using PendingSource = std::function<std::optional<std::string>(const std::string& digest)>;
  void SetPendingSource(PendingSource source) { pending_ = std::move(source); }
  // A chunk from the store, else from the pending source.
  Result<std::string> LocalChunk(const std::string& digest);

  // The FetchChunk and PushChunks calls, as this node answers them.
  Status OnFetchChunk(const v1::FetchChunkRequest& req, v1::FetchChunkResponse* resp);
  Status OnPushChunks(const v1::PushChunksRequest& req, v1::PushChunksResponse* resp);

 private:
  Store& store_;
  Membership& members_;
  PeerNetwork& network_;
  std::string self_;
  int replication_factor_;
  PendingSource pending_;
  CheckedChunks checked_;  // stored by StoreChunks moments ago: Fetch does not hash them again
};

}  // namespace onebox
