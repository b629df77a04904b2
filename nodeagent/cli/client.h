// The CLI's connection to an agent: gRPC to --agent HOST:PORT, or to the
// address the agent's shim socket tells (--socket PATH, a Ping), and the
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

namespace onebox {

struct ClientOptions {
  std::string agent;   // HOST:PORT; empty when socket is set
  std::string socket;  // shim socket to ask for the agent's address
  bool json = false;
  double timeout_seconds = 5;
};

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
