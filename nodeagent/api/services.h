// The agent's gRPC services (package onebox.v1): Cluster and Store. Methods are
// registered raw, so that a request whose bytes do not parse is answered
// INVALID_ARGUMENT with a message (gRPC's own deserializer says INTERNAL).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "naming/node_identity.h"
#include "nodeagent/daemon/work_pool.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "onebox/v1/peer.grpc.pb.h"
#include "onebox/v1/store.grpc.pb.h"

namespace onebox {

// What the services report about the node they run on.
struct AgentInfo {
  NodeIdentity identity;
  std::string data_dir;
  std::string socket_path;
  std::chrono::steady_clock::time_point started;
  std::function<uint64_t()> chunks_hashed_ahead;  // set once the recorder runs

  // The gRPC address is known only once gRPC has bound (port 0 picks one),
  // after the services may already answer: hence the lock.
  std::string grpc_address() const {
    std::lock_guard lock(mu_);
    return grpc_address_;
  }
  void set_grpc_address(std::string a) {
    std::lock_guard lock(mu_);
    grpc_address_ = std::move(a);
  }

 private:
  mutable std::mutex mu_;
  std::string grpc_address_;
};

grpc::Status ToGrpc(const Status& s);
// A channel to another agent: messages up to 8 MiB, and a peer that comes
// back (after a crash or a partition) is tried again within a second, not
// after gRPC's default backoff of up to two minutes.
std::shared_ptr<grpc::Channel> PeerChannel(const std::string& address);
// This machine's load (loadavg, CPUs, memory), as nodes report it.
v1::NodeLoad ReadLoad();
v1::Node SelfNode(const AgentInfo& info);

class Membership;

class ClusterService final
    : public v1::Cluster::WithRawCallbackMethod_Status<v1::Cluster::WithRawCallbackMethod_ListNodes<v1::Cluster::Service>> {
 public:
  ClusterService(const AgentInfo& info, Store& store, Membership& members)
      : info_(info), store_(store), members_(members) {}
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override;

 private:
  const AgentInfo& info_;
  Store& store_;
  Membership& members_;
};

class Replicator;
class ContentTransfer;
class AntiEntropy;
class Claims;

// Peer: what agents say to each other (membership gossip, replication, content).
class PeerService final
    : public v1::Peer::WithRawCallbackMethod_Gossip<v1::Peer::WithRawCallbackMethod_Replicate<
          v1::Peer::WithRawCallbackMethod_FetchChunk<v1::Peer::WithRawCallbackMethod_PushChunks<
              v1::Peer::WithRawCallbackMethod_BucketDigests<v1::Peer::WithRawCallbackMethod_ReadBucket<
                  v1::Peer::WithRawCallbackMethod_Claim<v1::Peer::WithRawCallbackMethod_ReadRecord<
                      v1::Peer::WithRawCallbackMethod_ReplicateStream<v1::Peer::Service>>>>>>>>> {
 public:
  PeerService(Membership& members, Replicator& replicator, ContentTransfer& content, AntiEntropy& anti_entropy,
              Claims& claims)
      : members_(members),
        replicator_(replicator),
        content_(content),
        anti_entropy_(anti_entropy),
        claims_(claims),
        pool_(2, "onebox-peer") {}
  grpc::ServerUnaryReactor* Gossip(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Replicate(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ReplicateStream(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* FetchChunk(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                       grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* PushChunks(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                       grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* BucketDigests(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                          grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ReadBucket(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                       grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Claim(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                  grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ReadRecord(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                       grpc::ByteBuffer* out) override;

 private:
  Membership& members_;
  Replicator& replicator_;
  ContentTransfer& content_;
  AntiEntropy& anti_entropy_;
  Claims& claims_;
  WorkPool pool_;  // applying a batch writes to RocksDB
};

class StoreService final
    : public v1::Store::WithRawCallbackMethod_Get<v1::Store::WithRawCallbackMethod_Put<
          v1::Store::WithRawCallbackMethod_Delete<v1::Store::WithRawCallbackMethod_Scan<v1::Store::Service>>>> {
 public:
  // Store work runs on a pool of its own: RocksDB may block on the disk.
  // Levels above ONE and LOCAL go through the replicator to the members.
  StoreService(Store& store, Replicator& replicator, Membership& members)
      : store_(store), replicator_(replicator), members_(members), pool_(4, "onebox-store") {}
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Scan(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override;

 private:
  // How many other nodes a write at level must reach, or a QUORUM read hear from.
  size_t OthersFor(int level) const;
  Store& store_;
  Replicator& replicator_;
  Membership& members_;
  WorkPool pool_;
};

// The namespace as this node recorded it (ns family), by cluster path.
class NamespaceService final
    : public v1::Namespace::WithRawCallbackMethod_Stat<v1::Namespace::WithRawCallbackMethod_List<
          v1::Namespace::WithRawCallbackMethod_Versions<v1::Namespace::WithRawCallbackMethod_Restore<
              v1::Namespace::Service>>>> {
 public:
  // on_restored(key) puts a restored version in the view.
  NamespaceService(Store& store, std::function<void(const std::string&)> on_restored = {})
      : store_(store), on_restored_(std::move(on_restored)), pool_(2, "onebox-ns") {}
  grpc::ServerUnaryReactor* Stat(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Versions(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Restore(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override;

 private:
  Store& store_;
  std::function<void(const std::string&)> on_restored_;
  WorkPool pool_;
};

}  // namespace onebox
