// onebox.v1.Process: the cluster's process table (List, open to every
// caller, as ps is) and signals across nodes (Signal, acting as its caller:
// served over the agent's Unix socket, where the kernel names the caller;
// refused to anonymous gRPC callers). Both run on a pool of their own: they
// wait for peers. The work is process/cluster_processes.h's.
#pragma once

#include <grpcpp/grpcpp.h>

#include "nodeagent/api/access.h"
#include "nodeagent/api/local_calls.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/process/cluster_processes.h"
#include "onebox/v1/process.grpc.pb.h"

namespace onebox {

// A local caller's credentials as a peer is told them.
v1::CallerCredentials CredentialsOf(const Caller& caller);

class ProcessService final
    : public v1::Process::WithRawCallbackMethod_List<v1::Process::WithRawCallbackMethod_Signal<v1::Process::Service>> {
 public:
  ProcessService(const AccessGate& gate, ClusterProcesses& processes)
      : gate_(gate), processes_(processes), pool_(2, "onebox-process") {}
  // Serves Signal on the agent's socket.
  void AddLocalCalls(LocalCalls& calls);
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Signal(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                   grpc::ByteBuffer* out) override;

 private:
  Status DoSignal(const Caller& caller, const v1::SignalRequest& q);

  const AccessGate& gate_;
  ClusterProcesses& processes_;
  WorkPool pool_;
};

}  // namespace onebox
