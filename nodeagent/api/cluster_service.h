// onebox.v1.Cluster: this node's status (Status) and the members gossip
// knows (ListNodes, from memory, on gRPC's thread), and the cluster's ports
// (ListPorts, from the store). Status reads the whole
// store and looks at the whole view (its digests): on a thread of its own.
#pragma once

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/api/access.h"
#include "nodeagent/api/agent_info.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/peer/membership.h"
#include "onebox/v1/cluster.grpc.pb.h"

namespace onebox {

class ClusterService final
    : public v1::Cluster::WithRawCallbackMethod_Status<v1::Cluster::WithRawCallbackMethod_ListNodes<
          v1::Cluster::WithRawCallbackMethod_ListPorts<v1::Cluster::Service>>> {
 public:
  ClusterService(const AccessGate& gate, const AgentInfo& info, Store& store, Membership& members)
      : gate_(gate), info_(info), store_(store), members_(members), pool_(1, "onebox-status") {}
  grpc::ServerUnaryReactor* Status(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListNodes(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* ListPorts(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) override;

 private:
  const AccessGate& gate_;
  const AgentInfo& info_;
  Store& store_;
  Membership& members_;
  WorkPool pool_;  // Status reads the whole store and looks at the whole view
};

}  // namespace onebox
