// How the parts that make the cluster (membership, replication, anti-entropy,
// directory leases, content transfer) reach another agent: the calls of the Peer
// service (proto/onebox/v1/peer.proto) as a small interface, taken from
// outside as etcd's raft takes its transport. The agent wires it to gRPC
// (peer/grpc_peers.h); the in-process tests wire nodes straight to each
// other's answers (sync/local_peer.h), and cut or silence links at will.
//
// Every call returns Ok, or Unavailable when the peer cannot be reached, did
// not answer within the call's timeout, or the call was cancelled; any other
// code is the peer's own answer (InvalidArgument for a request it refused).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "consistency/status.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

// The unary calls of the Peer service, declared once:
// X(method, request, response, where the receiver answers it: kInline on
// gRPC's thread, kPool on a worker because it touches the disk, kLeasePool
// on a worker of its own because it waits on other calls: a lease's
// handover, which sends the asker records that the asker's kPool applies;
// kAwaitPool on a worker of its own because it waits up to a second for a
// lock: locks/lock_home.h; a lock lease's return records the view, on
// kLeasePool too).
#define ONEBOX_PEER_UNARY_CALLS(X)                                                         \
  X(Gossip, GossipRequest, GossipResponse, kInline)                                        \
  X(Replicate, ReplicateRequest, ReplicateResponse, kPool)                                 \
  X(FetchChunk, FetchChunkRequest, FetchChunkResponse, kPool)                              \
  X(PushChunks, PushChunksRequest, PushChunksResponse, kPool)                              \
  X(BucketDigests, BucketDigestsRequest, BucketDigestsResponse, kPool)                     \
  X(ReadBucket, ReadBucketRequest, ReadBucketResponse, kPool)                              \
  X(DirLease, DirLeaseRequest, DirLeaseResponse, kInline)                                  \
  X(RecallDirLease, RecallDirLeaseRequest, RecallDirLeaseResponse, kLeasePool)             \
  X(ReadRecord, ReadRecordRequest, ReadRecordResponse, kPool)                              \
  X(ListProcesses, ListProcessesRequest, ListProcessesResponse, kPool)                     \
  X(SignalProcess, PeerSignalRequest, SignalResponse, kPool)                               \
  X(ProgramDigest, ProgramDigestRequest, ProgramDigestResponse, kPool)                     \
  X(ClaimPort, ClaimPortRequest, ClaimPortResponse, kPool)                                 \
  X(Lock, LockRequest, LockResponse, kInline)                                              \
  X(AwaitLock, AwaitLockRequest, LockResponse, kAwaitPool)                                  \
  X(ReturnLockLease, ReturnLockLeaseRequest, LockResponse, kLeasePool)

enum class PeerCallRuns { kInline, kPool, kLeasePool, kAwaitPool };

// Lets another thread cut calls short: a shutdown, a watchdog, a quorum met
// already. Once cancelled it stays so: the calls under way return at once,
// and later calls with it fail at once. Several calls may share one.
class Cancellation {
 public:
  void Cancel();
  bool cancelled() const;
  // For transports: `cancel` ends a call under way if Cancel() comes before
  // Detach(ticket). Returns the ticket; 0 (nothing attached): cancelled already.
  // `cancel` runs under the Cancellation's lock: it must not block.
  uint64_t Attach(std::function<void()> cancel);
  void Detach(uint64_t ticket);

 private:
  mutable std::mutex mu_;
  bool cancelled_ = false;
  uint64_t next_ticket_ = 1;
  std::map<uint64_t, std::function<void()>> calls_;
};

struct CallOptions {
  std::chrono::milliseconds timeout{2000};
  Cancellation* cancellation = nullptr;
  // Wait (within the timeout) for a link that is connecting or between
  // attempts, instead of failing at once: for a peer membership counts alive.
  bool wait_for_ready = false;
};

// One replication stream (Peer/ReplicateStream): batches out, one answer
// each, in order. Write and Read return false once the stream failed.
class ReplicateStream {
 public:
  virtual ~ReplicateStream() = default;
  virtual bool Write(const v1::ReplicateRequest& batch) = 0;
  virtual bool Read(v1::ReplicateResponse* answer) = 0;
  virtual bool WritesDone() = 0;
  virtual Status Finish() = 0;
};

class PeerLink {
 public:
  virtual ~PeerLink() = default;
#define ONEBOX_PEER_LINK_METHOD(method, Req, Resp, runs) \
  virtual Status method(const v1::Req& req, v1::Resp* resp, const CallOptions& options) = 0;
  ONEBOX_PEER_UNARY_CALLS(ONEBOX_PEER_LINK_METHOD)
#undef ONEBOX_PEER_LINK_METHOD
  // A stream that cancellation (if given) can cut at any moment.
  virtual std::unique_ptr<ReplicateStream> OpenReplicateStream(Cancellation* cancellation) = 0;
  // The peer is back (membership heard from it after a silence): the next
  // call goes over a new connection, made at that call rather than after
  // the link's reconnect backoff (during which calls fail at once), and not
  // over one a partition may have left dead. Calls under way keep theirs.
  // Never blocks (called under membership's lock).
  virtual void ConnectNow() {}
  // A heartbeat datagram (peer/beat_seal.h), sent without waiting for
  // anything; false when this link carries none (membership then says it
  // in a Gossip call).
  virtual bool SendBeat(std::string_view /*datagram*/) { return false; }
};

// The links to the peers, by gRPC address: one per address, kept for the
// life of the network, safe to use from any thread.
class PeerNetwork {
 public:
  virtual ~PeerNetwork() = default;
  virtual PeerLink& To(const std::string& address) = 0;
};

// Another member as the cluster parts name it.
struct PeerAddress {
  std::string node_id;  // 16 hex digits
  std::string address;  // gRPC HOST:PORT
  bool operator==(const PeerAddress&) const = default;
};

}  // namespace onebox
