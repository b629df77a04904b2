#include "nodeagent/cli/client.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "nodeagent/api/status_codes.h"
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
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (o_.tls.any()) {
    Result<TlsMaterial> tls = LoadTls(o_.tls, /*need_cert=*/false);
    if (!tls.ok()) return tls.status();
    credentials = ChannelCredentials(*tls);
    SetTlsChannelArgs(&args);
  }
  channel_ = grpc::CreateCustomChannel(addr, credentials, args);
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
        fmt::format("cannot reach agent at {}: {} (is `onebox agent` running?{})", addr_, s.error_message(),
                    o_.tls.ca.empty() ? " An agent with TLS needs --cacert." : ""));
  return Status::IOError(s.error_message());
}

Result<AgentSocketClient> AgentSocketClient::Connect(const std::string& path, double timeout_seconds) {
  int fd = ConnectShimSocket(path, timeout_seconds);
  if (fd < 0)
    return Status::Unavailable(
        fmt::format("cannot reach agent socket {}: {} (is `onebox agent` running?)", path, strerror(errno)));
  return AgentSocketClient(path, fd);
}

AgentSocketClient::~AgentSocketClient() {
  if (fd_ >= 0) close(fd_);
}

Status AgentSocketClient::Call(const std::string& method, const google::protobuf::Message& req,
                               google::protobuf::Message* resp) {
  v1::ShimRequest q;
  q.set_id(next_id_++);
  q.mutable_call()->set_method(method);
  q.mutable_call()->set_request(req.SerializeAsString());
  std::string answer;
  v1::ShimResponse r;
  if (!SendShimFrame(fd_, q.SerializeAsString()) || !RecvShimFrame(fd_, &answer) || !r.ParseFromString(answer))
    return Status::Unavailable(fmt::format("agent socket {} gave no answer", path_));
  if (!r.has_call())  // an agent from before the socket served calls, say
    return Status::IOError(r.message().empty() ? fmt::format("agent socket {} does not serve {}", path_, method)
                                               : r.message());
  if (r.call().code() != 0)
    return FromGrpc(grpc::Status(static_cast<grpc::StatusCode>(r.call().code()), r.call().message()));
  if (!resp->ParseFromString(r.call().response()))
    return Status::Corruption(fmt::format("agent socket {} answered {} with bytes that do not parse", path_, method));
  return Status::Ok();
}

Status CallOverSocket(const std::string& path, double timeout_seconds, const std::string& method,
                      const google::protobuf::Message& req, google::protobuf::Message* resp) {
  Result<AgentSocketClient> client = AgentSocketClient::Connect(path, timeout_seconds);
  if (!client.ok()) return client.status();
  return client->Call(method, req, resp);
}

Status Client::CallAsCaller(const std::string& method, const google::protobuf::Message& req,
                            google::protobuf::Message* resp) {
  if (o_.agent_given && o_.socket.empty() && !o_.tls.cert.empty()) {
    if (Status s = channel_ ? Status::Ok() : Connect(); !s.ok()) return s;
    std::unique_ptr<grpc::ClientContext> ctx = Context();
    grpc::Status st = grpc::internal::BlockingUnaryCall<google::protobuf::Message, google::protobuf::Message>(
        channel_.get(), grpc::internal::RpcMethod(method.c_str(), grpc::internal::RpcMethod::NORMAL_RPC), ctx.get(), req,
        resp);
    if (!st.ok()) return RpcError(st);
    return Status::Ok();
  }
  if (o_.agent_given && o_.socket.empty())
    return Status::InvalidArgument(fmt::format(
        "{} acts as you, and only the agent's Unix socket can tell who you are: give --socket PATH "
        "(default {}), not --agent, or an admin certificate (--cacert, --cert, --key) with --agent",
        method, kDefaultAgentSocket));
  return CallOverSocket(AgentSocketPath(o_.socket), o_.timeout_seconds, method, req, resp);
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
