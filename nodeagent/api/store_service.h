// onebox.v1.Store: the cluster's key-value store. Work runs on a pool of its
// own (RocksDB may block on the disk). Levels above ONE and LOCAL go through
// the replicator to the members, as many as peer/quorum.h says.
#pragma once

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/sync/replicator.h"
#include "onebox/v1/store.grpc.pb.h"

namespace onebox {

class StoreService final
    : public v1::Store::WithRawCallbackMethod_Get<v1::Store::WithRawCallbackMethod_Put<
          v1::Store::WithRawCallbackMethod_Delete<v1::Store::WithRawCallbackMethod_Scan<v1::Store::Service>>>> {
 public:
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
  Store& store_;
  Replicator& replicator_;
  Membership& members_;
  WorkPool pool_;
};

}  // namespace onebox
