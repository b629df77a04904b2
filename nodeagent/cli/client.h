// The CLI's connection to an agent: gRPC to --agent HOST:PORT, or to the
// address the agent's shim socket tells (--socket PATH, a Ping); and, for
// the commands that act as their caller (kv put, kv del, restore), the
// agent's Unix socket itself, where the kernel names the caller
// (api/access.h). And the
// output every command shares: human-readable text, or the response's
// protobuf JSON (-o json, as grpcurl prints it). Errors are printed as one
// line, "onebox: ...", and give exit code 1.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <google/protobuf/message.h>
#include <grpcpp/grpcpp.h>

#include "consistency/status.h"
#include "nodeagent/tls/tls_identity.h"

namespace onebox {

struct ClientOptions {
  std::string agent;   // HOST:PORT; empty when socket is set
  bool agent_given = false;  // on the command line (not from ONEBOX_AGENT or the default)
  std::string socket;  // shim socket to ask for the agent's address
  bool json = false;
  double timeout_seconds = 5;
  // --cacert, --cert, --key: TLS to the agent's gRPC port (tls/tls_identity.h);
  // with an admin certificate, the caller-acting commands go over gRPC too.
  TlsFiles tls;
};

// A connection to the agent's Unix socket for calls of the methods that
// act as their caller ("/onebox.v1.Store/Put"): the kernel names the caller
// on it. One call at a time; the agent's refusals come back as it said them.
class AgentSocketClient {
 public:
  static Result<AgentSocketClient> Connect(const std::string& path, double timeout_seconds);
  AgentSocketClient(AgentSocketClient&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }
  AgentSocketClient& operator=(AgentSocketClient&&) = delete;
  ~AgentSocketClient();
  Status Call(const std::string& method, const google::protobuf::Message& req, google::protobuf::Message* resp);

 private:
  AgentSocketClient(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
  uint64_t next_id_ = 1;
};

// One call on a connection of its own.
Status CallOverSocket(const std::string& path, double timeout_seconds, const std::string& method,
                      const google::protobuf::Message& req, google::protobuf::Message* resp);

// CLI exit codes (README: 0 ok, 1 error, 2 usage).
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

// Prints "onebox: MESSAGE" on stderr; returns kExitError.
int Fail(const Status& s);

class Client {
 public:
  explicit Client(const ClientOptions& o) : o_(o) {}
  // Finds the agent (asking its socket when given) and opens a channel.
  Status Connect();
  // A context whose deadline is the --timeout from now.
  std::unique_ptr<grpc::ClientContext> Context() const;
  // A failed call: "cannot reach agent" when it did not answer, else what it said.
  Status RpcError(const grpc::Status& s) const;
  // Calls method (a caller-acting one: "/onebox.v1.Store/Put") over the
  // agent's socket: --socket, else $ONEBOX_SOCKET, else the default; or,
  // with --agent and a client certificate (--cert, --key), over gRPC as
  // that certificate's identity. Refusals come back as the agent said them.
  Status CallAsCaller(const std::string& method, const google::protobuf::Message& req,
                      google::protobuf::Message* resp);
  // Prints msg as protobuf JSON (the shape grpcurl prints).
  void PrintJson(const google::protobuf::Message& msg) const;
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  bool json() const { return o_.json; }

 private:
  const ClientOptions& o_;
  std::string addr_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace onebox
