// Status at the agent's edges, mapped in one place each way: to gRPC codes
// (the public services and the Peer service), from gRPC codes (what a peer's
// answer means here), and to errno values (the shim's answers, which become
// the errno of the intercepted call).
#pragma once

#include <grpcpp/support/status.h>

#include "consistency/status.h"

namespace onebox {

grpc::Status ToGrpc(const Status& s);
// A peer's answer: what could not reach it or came too late is Unavailable.
Status FromGrpc(const grpc::Status& s);
// 0 for Ok. EINVAL, ENOENT, EEXIST and ENOSYS where the code says so; every
// other failure is EIO (what fsync, open and mkdir may return for "the
// system could not do it").
int ToErrno(const Status& s);
// gRPC's name of code, as grpcurl prints it: "OK", "NOT_FOUND", ...
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace onebox
