#include "nodeagent/cli/client.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "onebox/v1/shim.pb.h"
#include "proto/shim_frame.h"

namespace onebox {

namespace {

// One Ping over the shim socket, to learn the agent's gRPC address.
Result<std::string> AskSocketForAgent(const std::string& path, double timeout) {
  int fd = ConnectShimSocket(path, timeout);
  if (fd < 0) {
    if (errno == ENAMETOOLONG) return Status::InvalidArgument("socket path too long: " + path);
    return Status::Unavailable(
        fmt::format("cannot reach agent socket {}: {} (is `onebox agent` running?)", path, strerror(errno)));
  }
  v1::ShimRequest req;
  req.set_id(1);
  req.mutable_ping()->set_client("onebox-cli");
  std::string answer;
  bool ok = SendShimFrame(fd, req.SerializeAsString()) && RecvShimFrame(fd, &answer);
  close(fd);
  v1::ShimResponse resp;
  if (!ok || !resp.ParseFromString(answer) || !resp.has_ping())
    return Status::Unavailable(fmt::format("agent socket {} gave no valid answer", path));
  return resp.ping().grpc_address();
}

}  // namespace

int Fail(const Status& s) {
  std::cerr << "onebox: " << s.message() << "\n";
  return kExitError;
}

Status Client::Connect() {
  std::string addr = o_.agent;
  if (!o_.socket.empty()) {
    Result<std::string> asked = AskSocketForAgent(o_.socket, o_.timeout_seconds);
    if (!asked.ok()) return asked.status();
    addr = std::move(*asked);
  }
  addr_ = addr;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  channel_ = grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
  return Status::Ok();
}

std::unique_ptr<grpc::ClientContext> Client::Context() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(o_.timeout_seconds * 1000)));
  return ctx;
}

Status Client::RpcError(const grpc::Status& s) const {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
    return Status::Unavailable(
        fmt::format("cannot reach agent at {}: {} (is `onebox agent` running?)", addr_, s.error_message()));
  return Status::IOError(s.error_message());
}

void Client::PrintJson(const google::protobuf::Message& msg) const {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.always_print_primitive_fields = true;
  opts.preserve_proto_field_names = true;
  // The message came from the agent and is valid; printing it cannot fail.
  (void)google::protobuf::util::MessageToJsonString(msg, &out, opts);
  std::cout << out;
}

}  // namespace onebox
