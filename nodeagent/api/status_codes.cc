#include "nodeagent/api/status_codes.h"

#include <cerrno>

namespace onebox {

grpc::Status ToGrpc(const Status& s) {
  using grpc::StatusCode;
  StatusCode code = StatusCode::INTERNAL;
  switch (s.code()) {
    case Code::kOk: return grpc::Status::OK;
    case Code::kInvalidArgument: code = StatusCode::INVALID_ARGUMENT; break;
    case Code::kNotFound: code = StatusCode::NOT_FOUND; break;
    case Code::kAlreadyExists: code = StatusCode::ALREADY_EXISTS; break;
    case Code::kFailedPrecondition: code = StatusCode::FAILED_PRECONDITION; break;
    case Code::kUnavailable: code = StatusCode::UNAVAILABLE; break;
    case Code::kCorruption: code = StatusCode::DATA_LOSS; break;
    case Code::kIOError: code = StatusCode::INTERNAL; break;
    case Code::kUnimplemented: code = StatusCode::UNIMPLEMENTED; break;
    case Code::kPermissionDenied: code = StatusCode::PERMISSION_DENIED; break;
    case Code::kUnauthenticated: code = StatusCode::UNAUTHENTICATED; break;
  }
  return grpc::Status(code, s.message());
}

Status FromGrpc(const grpc::Status& s) {
  using grpc::StatusCode;
  switch (s.error_code()) {
    case StatusCode::OK: return Status::Ok();
    case StatusCode::INVALID_ARGUMENT:
    case StatusCode::OUT_OF_RANGE: return Status::InvalidArgument(s.error_message());
    case StatusCode::NOT_FOUND: return Status::NotFound(s.error_message());
    case StatusCode::ALREADY_EXISTS: return Status::AlreadyExists(s.error_message());
    case StatusCode::FAILED_PRECONDITION: return Status::FailedPrecondition(s.error_message());
    case StatusCode::DATA_LOSS: return Status::Corruption(s.error_message());
    case StatusCode::INTERNAL: return Status::IOError(s.error_message());
    case StatusCode::UNIMPLEMENTED: return Status::Unimplemented(s.error_message());
    case StatusCode::PERMISSION_DENIED: return Status::PermissionDenied(s.error_message());
    case StatusCode::UNAUTHENTICATED: return Status::Unauthenticated(s.error_message());
    default:  // UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, RESOURCE_EXHAUSTED, ...: not answered
      return Status::Unavailable(s.error_message());
  }
}

int ToErrno(const Status& s) {
  switch (s.code()) {
    case Code::kOk: return 0;
    case Code::kInvalidArgument: return EINVAL;
    case Code::kNotFound: return ENOENT;
    case Code::kAlreadyExists: return EEXIST;
    case Code::kFailedPrecondition:
    case Code::kUnavailable:
    case Code::kCorruption:
    case Code::kIOError: return EIO;
    case Code::kUnimplemented: return ENOSYS;
    case Code::kPermissionDenied: return EACCES;
    case Code::kUnauthenticated: return EPERM;
  }
  return EIO;
}

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

}  // namespace onebox
