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
#include <iterator>
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

std::string Sha256Of(const std::string& bytes) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), d);
  return std::string(reinterpret_cast<const char*>(d), sizeof d);
}

using Node = testing::InProcessNode;

// The node answers as itself, and stays itself, whoever claims its id.
void Gossip(Node& node, const uint8_t* data, size_t size) {
  v1::GossipRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return;
  v1::GossipResponse resp;
  Require(node.answers->Gossip(req, &resp, CallOptions{}).ok());
  const std::string self = NodeIdHex(node.store->node_id());
  Require(resp.members_size() >= 1 && resp.members(0).node_id() == self && resp.members(0).name() == node.name);
  int selves = 0;
  for (const v1::Node& n : node.members->Nodes()) selves += n.node_id() == self;
  Require(selves == 1);
}

// Exactly the chunks whose bytes match their digest are stored.
void PushChunks(Node& node, const uint8_t* data, size_t size) {
  v1::PushChunksRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return;
  uint32_t matching = 0;
  for (const v1::Chunk& c : req.chunks()) matching += Sha256Of(c.data()) == c.digest();
  v1::PushChunksResponse resp;
  const Status s = node.answers->PushChunks(req, &resp, CallOptions{});
  Require(resp.stored() == matching && s.ok() == (matching == static_cast<uint32_t>(req.chunks_size())));
  for (const v1::Chunk& c : req.chunks()) {
    Result<std::string> kept = node.store->GetChunk(c.digest());
    if (Sha256Of(c.data()) == c.digest()) Require(kept.ok() && *kept == c.data());
    else if (kept.ok()) Require(Sha256Of(*kept) == c.digest());  // only ever the digest's own bytes
  }
}

// The others: a Status, whatever the bytes.
#define ONEBOX_ANSWERED(method, Req, Resp)                                   \
  void method(Node& node, const uint8_t* data, size_t size) {               \
    v1::Req req;                                                            \
    v1::Resp resp;                                                          \
    if (req.ParseFromArray(data, static_cast<int>(size)))                   \
      (void)node.answers->method(req, &resp, CallOptions{});                \
  }
ONEBOX_ANSWERED(Replicate, ReplicateRequest, ReplicateResponse)
ONEBOX_ANSWERED(FetchChunk, FetchChunkRequest, FetchChunkResponse)
ONEBOX_ANSWERED(BucketDigests, BucketDigestsRequest, BucketDigestsResponse)
ONEBOX_ANSWERED(ReadBucket, ReadBucketRequest, ReadBucketResponse)
ONEBOX_ANSWERED(DirLease, DirLeaseRequest, DirLeaseResponse)
ONEBOX_ANSWERED(RecallDirLease, RecallDirLeaseRequest, RecallDirLeaseResponse)
ONEBOX_ANSWERED(ReadRecord, ReadRecordRequest, ReadRecordResponse)
#undef ONEBOX_ANSWERED

// By the input's first byte (the corpus's inputs begin with it: keep the order).
constexpr void (*kCalls[])(Node&, const uint8_t*, size_t) = {
    Gossip, Replicate, FetchChunk, PushChunks, BucketDigests, ReadBucket, DirLease, RecallDirLease, ReadRecord};

}  // namespace
}  // namespace onebox

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace onebox;
  if (size < 1) return 0;
  kCalls[data[0] % std::size(kCalls)](TheNode(), data + 1, size - 1);
  return 0;
}
