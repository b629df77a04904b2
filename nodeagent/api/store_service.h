// onebox.v1.Store: the cluster's key-value store. Work runs on a pool of its
// own (RocksDB may block on the disk). Levels above ONE and LOCAL go through
// the replicator to the members, as many as peer/quorum.h says.
//
// Who writes which keys: every user has a key space of their own,
// "uid/UID/..." (uid/1000/settings for uid 1000); root and the agent's own
// user (Caller::IsAdmin) write every key, and the keys outside the uid/
// spaces are theirs alone. Every caller reads
// every key: the store holds no secrets. Put and Delete act as their caller
// (api/access.h), so they come over the agent's Unix socket.
#pragma once

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/api/access.h"
#include "nodeagent/api/local_calls.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/sync/replicator.h"
#include "onebox/v1/store.grpc.pb.h"

namespace onebox {

class StoreService final
    : public v1::Store::WithRawCallbackMethod_Get<v1::Store::WithRawCallbackMethod_Put<
          v1::Store::WithRawCallbackMethod_Delete<v1::Store::WithRawCallbackMethod_Scan<v1::Store::Service>>>> {
 public:
  StoreService(const AccessGate& gate, Store& store, Replicator& replicator, Membership& members)
      : gate_(gate), store_(store), replicator_(replicator), members_(members), pool_(4, "onebox-store") {}
  // Serves Put and Delete on the agent's socket too.
  void AddLocalCalls(LocalCalls& calls);
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Scan(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override;

 private:
  Status DoPut(const Caller& caller, const v1::PutRequest& q, v1::PutResponse* r);
  Status DoDelete(const Caller& caller, const v1::DeleteRequest& q, v1::DeleteResponse* r);

  const AccessGate& gate_;
  Store& store_;
  Replicator& replicator_;
  Membership& members_;
  WorkPool pool_;
};

}  // namespace onebox
