// The peer links of a running agent: gRPC channels to the other agents, one
// per address, kept and shared by every part that talks to peers. The
// channel credentials are chosen here and nowhere else: plaintext, or
// mutual TLS with the cluster CA (tls/tls_identity.h). A channel takes messages up to 8 MiB, a peer that comes back
// (after a crash or a partition) is tried again within a second, not after
// gRPC's default backoff of up to two minutes. A connection a partition
// left dead is found so by keepalive pings within seconds while a call is
// under way on it; an idle one is not pinged (an idle cluster's links carry
// nothing): when membership hears from a peer again after a silence, the
// link's next call goes over a new connection (PeerLink::ConnectNow). Every call
// carries the cluster's join token (api/access.h), when there is one.
// Heartbeats go beside the channels, as datagrams (peer/beat_socket.h).
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "nodeagent/peer/beat_socket.h"
#include "nodeagent/peer/peer_link.h"
#include "onebox/v1/process.pb.h"

namespace onebox {

// Peer channels ping a connection with a call under way this often, and take
// it for dead when a ping is not answered within the timeout; agents accept
// pings this often (daemon/agent.cc's server arguments).
constexpr int kPeerKeepaliveMs = 4000;
constexpr int kPeerKeepaliveTimeoutMs = 3000;

// One `onebox run` stream to a node (Peer/Run), from the home's side. One
// thread may write while another reads; a Cancellation ends it at once.
class RunCall {
 public:
  virtual ~RunCall() = default;
  virtual bool Write(const v1::RunInput& in) = 0;
  virtual bool Read(v1::RunOutput* out) = 0;
  virtual Status Finish() = 0;  // after Read returned false
};

class GrpcPeerNetwork final : public PeerNetwork {
 public:
  // tls: the agent's TLS credentials; null: plaintext.
  explicit GrpcPeerNetwork(std::string join_token = "", std::shared_ptr<grpc::ChannelCredentials> tls = nullptr)
      : join_token_(std::move(join_token)), tls_(std::move(tls)) {}
  PeerLink& To(const std::string& address) override;
  // Runs move real processes' bytes: only over gRPC (the in-process tests have none).
  std::unique_ptr<RunCall> OpenRun(const std::string& address, Cancellation* cancellation);
  // Where the links send heartbeats (PeerLink::SendBeat); null: they send
  // none. The socket must outlive every call that may send.
  void set_beats(BeatSocket* beats) { beats_ = beats; }

 private:
  const std::string join_token_;
  const std::shared_ptr<grpc::ChannelCredentials> tls_;
  std::atomic<BeatSocket*> beats_{nullptr};
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<PeerLink>> links_;
};

}  // namespace onebox
