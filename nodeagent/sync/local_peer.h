// This node's answers to the Peer calls, each given by the part that owns
// it: gossip by membership, batches and record reads by the replicator,
// chunks by content transfer, bucket digests and pages by anti-entropy,
// lease votes and recalls by the directory leases, processes by the
// cluster's process table, port votes by the port table, locks by the lock home. The gRPC Peer service (api/peer_service.h) serves it to
// other agents; in-process tests link nodes straight to each other's.
#pragma once

#include <memory>

#include "nodeagent/locks/lock_home.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/process/cluster_processes.h"
#include "nodeagent/process/placement.h"
#include "nodeagent/sockets/port_table.h"
#include "nodeagent/sync/anti_entropy.h"
#include "nodeagent/sync/dir_leases.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/sync/replicator.h"

namespace onebox {

class NodeLocks;

class LocalPeer final : public PeerLink {
 public:
  LocalPeer(Membership& members, Replicator& replicator, ContentTransfer& content, AntiEntropy& anti_entropy,
            DirLeases& leases, ClusterProcesses& processes, Placement* placement = nullptr,
            PortTable* ports = nullptr, LockHome* locks = nullptr, NodeLocks* node_locks = nullptr)
      : members_(members),
        replicator_(replicator),
        content_(content),
        anti_entropy_(anti_entropy),
        leases_(leases),
        processes_(processes),
        placement_(placement),
        ports_(ports),
        locks_(locks),
        node_locks_(node_locks) {}

  // (Options are the caller's: answering here takes what it takes.)
  Status Gossip(const v1::GossipRequest& req, v1::GossipResponse* resp, const CallOptions&) override {
    members_.OnGossip(req, resp);
    return Status::Ok();
  }
  bool SendBeat(std::string_view datagram) override {
    members_.OnBeat(datagram);
    return true;
  }
  Status Replicate(const v1::ReplicateRequest& req, v1::ReplicateResponse* resp, const CallOptions&) override {
    return replicator_.OnReplicate(req, resp);
  }
  Status FetchChunk(const v1::FetchChunkRequest& req, v1::FetchChunkResponse* resp, const CallOptions&) override {
    return content_.OnFetchChunk(req, resp);
  }
  Status PushChunks(const v1::PushChunksRequest& req, v1::PushChunksResponse* resp, const CallOptions&) override {
    return content_.OnPushChunks(req, resp);
  }
  Status BucketDigests(const v1::BucketDigestsRequest& req, v1::BucketDigestsResponse* resp,
                       const CallOptions&) override {
    return anti_entropy_.OnBucketDigests(req, resp);
  }
  Status ReadBucket(const v1::ReadBucketRequest& req, v1::ReadBucketResponse* resp, const CallOptions&) override {
    return anti_entropy_.OnReadBucket(req, resp);
  }
  Status DirLease(const v1::DirLeaseRequest& req, v1::DirLeaseResponse* resp, const CallOptions&) override {
    return leases_.OnLease(req, resp);
  }
  Status RecallDirLease(const v1::RecallDirLeaseRequest& req, v1::RecallDirLeaseResponse* resp,
                        const CallOptions&) override {
    return leases_.OnRecall(req, resp);
  }
  Status ReadRecord(const v1::ReadRecordRequest& req, v1::ReadRecordResponse* resp, const CallOptions&) override {
    return replicator_.OnReadRecord(req, resp);
  }
  Status ListProcesses(const v1::ListProcessesRequest& req, v1::ListProcessesResponse* resp,
                       const CallOptions&) override {
    return processes_.OnListProcesses(req, resp);
  }
  Status SignalProcess(const v1::PeerSignalRequest& req, v1::SignalResponse*, const CallOptions&) override {
    return processes_.OnSignalProcess(req);
  }
  Status ProgramDigest(const v1::ProgramDigestRequest& req, v1::ProgramDigestResponse* resp,
                       const CallOptions&) override {
    if (placement_ == nullptr) return Status::Unimplemented("this node does not place programs");
    return placement_->OnProgramDigest(req, resp);
  }
  Status ClaimPort(const v1::ClaimPortRequest& req, v1::ClaimPortResponse* resp, const CallOptions&) override {
    if (ports_ == nullptr) return Status::Unimplemented("this node keeps no port table");
    return ports_->OnClaimPort(req, resp);
  }
  Status Lock(const v1::LockRequest& req, v1::LockResponse* resp, const CallOptions&) override {
    if (locks_ == nullptr) return Status::Unimplemented("this node keeps no locks");
    return locks_->OnLock(req, resp);
  }
  Status AwaitLock(const v1::AwaitLockRequest& req, v1::LockResponse* resp, const CallOptions&) override {
    if (locks_ == nullptr) return Status::Unimplemented("this node keeps no locks");
    return locks_->OnAwaitLock(req, resp);
  }
  Status ReturnLockLease(const v1::ReturnLockLeaseRequest& req, v1::LockResponse* resp, const CallOptions&) override;
  // Each batch is applied as it is written; its answer waits to be read.
  std::unique_ptr<ReplicateStream> OpenReplicateStream(Cancellation* cancellation) override;

 private:
  Membership& members_;
  Replicator& replicator_;
  ContentTransfer& content_;
  AntiEntropy& anti_entropy_;
  DirLeases& leases_;
  ClusterProcesses& processes_;
  Placement* placement_;  // none in the in-process test cluster
  PortTable* ports_;      // nor this
  LockHome* locks_;       // nor this
  NodeLocks* node_locks_;  // nor this
};

}  // namespace onebox
