// The one adapter between gRPC's raw callback API and the agent's handlers:
// it admits the call by its method's class (api/access.h) before anything
// else, parses every request itself, so that bytes that are no valid request
// (a string field that is not UTF-8 included) are answered INVALID_ARGUMENT
// with a message (gRPC's own deserializer says INTERNAL), runs the handler
// (on a pool when it may block on the disk, so gRPC's threads never wait),
// and maps the handler's Status to gRPC's (api/status_codes.h).
#pragma once

#include <memory>
#include <type_traits>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include "consistency/status.h"
#include "nodeagent/api/access.h"
#include "nodeagent/api/status_codes.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/metrics/metrics.h"

namespace onebox {

// Parses bytes into req; the error says what they should have been.
template <class Req>
grpc::Status ParseRequest(grpc::ByteBuffer* bytes, Req* req) {
  grpc::ProtoBufferReader reader(bytes);
  if (req->ParseFromZeroCopyStream(&reader) && reader.status().ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                      fmt::format("malformed request: the bytes sent are not a valid {}", Req::descriptor()->full_name()));
}

// Answers the call with st, and counts it (metrics: by method and code).
template <class Method>
void FinishCounted(grpc::ServerUnaryReactor* reactor, const grpc::Status& st) {
  metrics::counts().grpc_requests.Add(
      metrics::Labels({{"method", Method::kName}, {"code", GrpcCodeName(st.error_code())}}));
  reactor->Finish(st);
}

// Admits the caller by Method's class (a tag from api/access.h's list: a
// method not listed does not compile), parses the request, runs
// fn(request, &response) -> Status, or fn(caller, request, &response), and
// serializes the response. With a pool, fn runs there; the request and
// response buffers belong to the call until Finish.
template <class Method, class Req, class Resp, class Fn>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out, const AccessGate& gate, WorkPool* pool, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  Caller caller = gate.OfGrpc(*ctx);
  if (Status admitted = gate.Admit(Method::kClass, Method::kName, caller); !admitted.ok()) {
    FinishCounted<Method>(reactor, ToGrpc(admitted));
    return reactor;
  }
  auto req = std::make_shared<Req>();
  if (grpc::Status parsed = ParseRequest(const_cast<grpc::ByteBuffer*>(in), req.get()); !parsed.ok()) {
    FinishCounted<Method>(reactor, parsed);
    return reactor;
  }
  auto work = [req, out, reactor, caller = std::move(caller), fn = std::move(fn)] {
    Resp resp;
    Status done;
    if constexpr (std::is_invocable_v<Fn, const Caller&, const Req&, Resp*>) done = fn(caller, *req, &resp);
    else done = fn(*req, &resp);
    grpc::Status st = ToGrpc(done);
    if (st.ok()) {
      bool own_buffer = false;
      st = grpc::GenericSerialize<grpc::ProtoBufferWriter, Resp>(resp, out, &own_buffer);
    }
    FinishCounted<Method>(reactor, st);
  };
  if (pool) pool->Submit(std::move(work));
  else work();
  return reactor;
}

}  // namespace onebox
