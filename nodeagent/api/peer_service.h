// onebox.v1.Peer over gRPC: what other agents ask this one, answered by this
// node's side of the peer calls (sync/local_peer.h). The unary methods come
// from the one list of peer calls (peer/peer_link.h); those that touch the
// disk run on a pool. ReplicateStream applies one batch at a time: read,
// apply on the pool, answer, and only then read the next, so a slow
// receiver slows its senders down instead of queueing (gRPC's flow control
// holds back the bytes beyond the few batches a sender keeps unanswered).
// Every call, the stream included, is admitted only with the cluster's join
// token (api/access.h).
#pragma once

#include <grpcpp/grpcpp.h>

#include "nodeagent/api/unary.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/process/run_executor.h"
#include "onebox/v1/peer.grpc.pb.h"

namespace onebox {

class PeerService final
    : public v1::Peer::WithRawCallbackMethod_Gossip<v1::Peer::WithRawCallbackMethod_Replicate<
          v1::Peer::WithRawCallbackMethod_FetchChunk<v1::Peer::WithRawCallbackMethod_PushChunks<
              v1::Peer::WithRawCallbackMethod_BucketDigests<v1::Peer::WithRawCallbackMethod_ReadBucket<
                  v1::Peer::WithRawCallbackMethod_DirLease<v1::Peer::WithRawCallbackMethod_RecallDirLease<
                      v1::Peer::WithRawCallbackMethod_ReadRecord<v1::Peer::WithRawCallbackMethod_ListProcesses<
                          v1::Peer::WithRawCallbackMethod_SignalProcess<v1::Peer::WithRawCallbackMethod_ProgramDigest<
                              v1::Peer::WithRawCallbackMethod_ClaimPort<v1::Peer::WithRawCallbackMethod_Lock<
                                  v1::Peer::WithRawCallbackMethod_AwaitLock<v1::Peer::WithRawCallbackMethod_ReturnLockLease<
                                      v1::Peer::WithRawCallbackMethod_ReplicateStream<v1::Peer::Service>>>>>>>>>>>>>>>>> {
 public:
  PeerService(const AccessGate& gate, PeerLink& local, RunExecutor& runs)
      : gate_(gate),
        local_(local),
        runs_(runs),
        pool_(2, "onebox-peer"),
        lease_pool_(2, "onebox-lease"),
        await_pool_(8, "onebox-await") {}

#define ONEBOX_PEER_SERVICE_METHOD(method, Req, Resp, runs)                                                  \
  grpc::ServerUnaryReactor* method(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,               \
                                   grpc::ByteBuffer* out) override {                                           \
    return ServeUnary<api_method::Peer_##method, v1::Req, v1::Resp>(                                         \
        ctx, in, out, gate_, PoolFor(PeerCallRuns::runs),                                                      \
        [this](const v1::Req& q, v1::Resp* r) { return local_.method(q, r, {}); });                            \
  }
  ONEBOX_PEER_UNARY_CALLS(ONEBOX_PEER_SERVICE_METHOD)
#undef ONEBOX_PEER_SERVICE_METHOD

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ReplicateStream(grpc::CallbackServerContext* ctx) override;
  // A run lives as long as its process: a blocking handler on a thread of
  // gRPC's synchronous pool, never one of the callback threads.
  grpc::Status Run(grpc::ServerContext* ctx, grpc::ServerReaderWriter<v1::RunOutput, v1::RunInput>* stream) override;

 private:
  WorkPool* PoolFor(PeerCallRuns runs) {
    switch (runs) {
      case PeerCallRuns::kInline: return nullptr;
      case PeerCallRuns::kPool: return &pool_;
      case PeerCallRuns::kLeasePool: return &lease_pool_;
      case PeerCallRuns::kAwaitPool: return &await_pool_;
    }
    return nullptr;
  }
  const AccessGate& gate_;
  PeerLink& local_;
  RunExecutor& runs_;
  WorkPool pool_;        // applying a batch writes to RocksDB
  WorkPool lease_pool_;  // recalls wait for the recorder and for the asker's kPool
  WorkPool await_pool_;  // lock waits, up to a second each
};

}  // namespace onebox
