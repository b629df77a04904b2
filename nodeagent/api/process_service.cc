#include "nodeagent/api/process_service.h"

#include "nodeagent/api/unary.h"

namespace onebox {

v1::CallerCredentials CredentialsOf(const Caller& caller) {
  v1::CallerCredentials c;
  c.set_uid(caller.uid);
  c.set_gid(caller.gid);
  for (gid_t g : caller.groups) c.add_groups(g);
  c.set_pid(caller.pid);
  return c;
}

void ProcessService::AddLocalCalls(LocalCalls& calls) {
  calls.Add<api_method::Process_Signal, v1::SignalRequest, v1::SignalResponse>(
      [this](const Caller& caller, const v1::SignalRequest& q, v1::SignalResponse*) { return DoSignal(caller, q); });
}

grpc::ServerUnaryReactor* ProcessService::List(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                               grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Process_List, v1::ListProcessesRequest, v1::ListProcessesResponse>(
      ctx, in, out, gate_, &pool_,
      [this](const v1::ListProcessesRequest& q, v1::ListProcessesResponse* r) { return processes_.List(q, r); });
}

grpc::ServerUnaryReactor* ProcessService::Signal(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Process_Signal, v1::SignalRequest, v1::SignalResponse>(
      ctx, in, out, gate_, &pool_,
      [this](const Caller& caller, const v1::SignalRequest& q, v1::SignalResponse*) { return DoSignal(caller, q); });
}

Status ProcessService::DoSignal(const Caller& caller, const v1::SignalRequest& q) {
  // The gate admits only identified callers; say so again where the credentials are taken.
  if (!caller.Identified()) return Status::PermissionDenied("signals are sent only for a caller the kernel or a certificate named");
  return processes_.Signal(CredentialsOf(caller), q);
}

}  // namespace onebox
