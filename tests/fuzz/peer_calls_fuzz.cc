// Fuzzes a node's answers to the Peer calls another agent makes
// (nodeagent/sync/local_peer.h, which the gRPC Peer service serves): any
// bytes as one of the calls below, answered by a node's real parts
// (membership, replication, content, anti-entropy, directory leases) on a
// store of its own, whose own calls to other nodes all fail at once. Each
// call gets a Status, never a crash or a hang; gossip never replaces the
// node itself, and a chunk push stores exactly the chunks whose bytes match
// their digest.
//
// Not here: SignalProcess, ListProcesses and ProgramDigest (they act on this
// machine's processes and files: tests/integration cover them), ClaimPort
// (the port table's vote: unit tests).
//
// Input: byte 0 picks the call, the rest is its request.
#include <google/protobuf/stubs/logging.h>
#include <openssl/sha.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include <spdlog/spdlog.h>

#include "nodeagent/sync/local_peer.h"
#include "tests/unit/in_process_cluster.h"
#include "tests/fuzz/fuzz_util.h"

using onebox::fuzz::Require;

namespace onebox {
namespace {

// One node, wired as the agent wires its parts (tests/unit/in_process_cluster.h):
// inputs run against the state the earlier ones left, and every 10,000 on a
// new node (gossiped members and their links would otherwise pile up). It
// has no other node to call, and is silenced itself (a member gossiped at
// its own address): its calls out fail at once, as to a stopped agent.
testing::InProcessNode& TheNode() {
  static const bool quiet = [] {  // a line per joined member or refused batch: thousands a second
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  static testing::InProcessCluster* cluster = nullptr;  // its store's directory goes with it
  static uint64_t inputs = 0;
  if (inputs++ % 10'000 == 0) {
    delete cluster;
    cluster = new testing::InProcessCluster(1);
    cluster->Silence(0);
    // Gone at exit before RocksDB's own statics (made with the first store) are.
    if (inputs == 1) atexit([] { delete cluster; });
  }
  return cluster->node(0);
}

template <typename Req, typename Resp, typename Call>
Resp Answer(const uint8_t* data, size_t size, Call call) {
  Req req;
  Resp resp;
  if (req.ParseFromArray(data, static_cast<int>(size))) (void)call(req, &resp);
  return resp;
}

std::string Sha256Of(const std::string& bytes) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), d);
  return std::string(reinterpret_cast<const char*>(d), sizeof d);
}

}  // namespace
}  // namespace onebox

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace onebox;
  if (size < 1) return 0;
  onebox::testing::InProcessNode& node = TheNode();
  LocalPeer& peer = *node.answers;
  const CallOptions options;
  const uint8_t* body = data + 1;
  const size_t len = size - 1;
  switch (data[0] % 9) {
    case 0: {
      v1::GossipRequest req;
      if (!req.ParseFromArray(body, static_cast<int>(len))) return 0;
      v1::GossipResponse resp;
      Require(peer.Gossip(req, &resp, options).ok());
      // The node answers as itself, and stays itself, whoever claims its id.
      Require(resp.members_size() >= 1 && resp.members(0).node_id() == NodeIdHex(node.store->node_id()) &&
              resp.members(0).name() == node.name);
      int selves = 0;
      for (const v1::Node& n : node.members->Nodes()) selves += n.node_id() == NodeIdHex(node.store->node_id());
      Require(selves == 1);
      break;
    }
    case 1:
      Answer<v1::ReplicateRequest, v1::ReplicateResponse>(
          body, len, [&](auto& q, auto* r) { return peer.Replicate(q, r, options); });
      break;
    case 2:
      Answer<v1::FetchChunkRequest, v1::FetchChunkResponse>(
          body, len, [&](auto& q, auto* r) { return peer.FetchChunk(q, r, options); });
      break;
    case 3: {
      v1::PushChunksRequest req;
      if (!req.ParseFromArray(body, static_cast<int>(len))) return 0;
      uint32_t matching = 0;
      for (const v1::Chunk& c : req.chunks()) matching += Sha256Of(c.data()) == c.digest();
      v1::PushChunksResponse resp;
      const Status s = peer.PushChunks(req, &resp, options);
      Require(resp.stored() == matching && s.ok() == (matching == static_cast<uint32_t>(req.chunks_size())));
      for (const v1::Chunk& c : req.chunks()) {
        Result<std::string> kept = node.store->GetChunk(c.digest());
        if (Sha256Of(c.data()) == c.digest()) Require(kept.ok() && *kept == c.data());
        else if (kept.ok()) Require(Sha256Of(*kept) == c.digest());  // only ever the digest's own bytes
      }
      break;
    }
    case 4:
      Answer<v1::BucketDigestsRequest, v1::BucketDigestsResponse>(
          body, len, [&](auto& q, auto* r) { return peer.BucketDigests(q, r, options); });
      break;
    case 5:
      Answer<v1::ReadBucketRequest, v1::ReadBucketResponse>(
          body, len, [&](auto& q, auto* r) { return peer.ReadBucket(q, r, options); });
      break;
    case 6:
      Answer<v1::DirLeaseRequest, v1::DirLeaseResponse>(
          body, len, [&](auto& q, auto* r) { return peer.DirLease(q, r, options); });
      break;
    case 7:
      Answer<v1::RecallDirLeaseRequest, v1::RecallDirLeaseResponse>(
          body, len, [&](auto& q, auto* r) { return peer.RecallDirLease(q, r, options); });
      break;
    case 8:
      Answer<v1::ReadRecordRequest, v1::ReadRecordResponse>(
          body, len, [&](auto& q, auto* r) { return peer.ReadRecord(q, r, options); });
      break;
  }
  return 0;
}
