#include "nodeagent/peer/grpc_peers.h"

#include "nodeagent/api/access.h"
#include "nodeagent/api/status_codes.h"
#include "nodeagent/tls/tls_identity.h"
#include "onebox/v1/peer.grpc.pb.h"

namespace onebox {

namespace {

std::shared_ptr<grpc::Channel> PeerChannel(const std::string& address,
                                           const std::shared_ptr<grpc::ChannelCredentials>& tls) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A connection cut under a call (a partition, a peer's machine gone) is
  // found dead within kPeerKeepalive plus its timeout and made anew,
  // instead of waiting for TCP to give up (tens of seconds after the peer is
  // back). Idle, it is not pinged: membership's heartbeats tell whether the
  // peer is there, and its return gives the link a new channel (ConnectNow).
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kPeerKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kPeerKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  // A channel of its own connections: gRPC's shared pool would give a new
  // channel the old one's connection.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  if (tls) SetTlsChannelArgs(&args);
  return grpc::CreateCustomChannel(address, tls ? tls : grpc::InsecureChannelCredentials(), args);
}

// Ties a gRPC call's context to a Cancellation for the call's lifetime.
class CancelScope {
 public:
  CancelScope(Cancellation* cancellation, grpc::ClientContext* ctx) : cancellation_(cancellation) {
    if (cancellation_ != nullptr) ticket_ = cancellation_->Attach([ctx] { ctx->TryCancel(); });
  }
  ~CancelScope() {
    if (cancellation_ != nullptr && ticket_ != 0) cancellation_->Detach(ticket_);
  }
  bool attached() const { return cancellation_ == nullptr || ticket_ != 0; }

 private:
  Cancellation* cancellation_;
  uint64_t ticket_ = 0;
};

// A bidirectional stream to a peer: the join token in its metadata, and cut
// at once by its Cancellation. open starts it on the context
// (&v1::Peer::Stub::ReplicateStream, say).
template <class Out, class In>
class PeerBidiStream {
 public:
  using Open = std::unique_ptr<grpc::ClientReaderWriter<Out, In>> (v1::Peer::Stub::*)(grpc::ClientContext*);
  PeerBidiStream(v1::Peer::Stub& stub, Open open, const std::string& join_token, Cancellation* cancellation)
      : scope_(cancellation, &ctx_) {
    if (!join_token.empty()) ctx_.AddMetadata(kJoinTokenHeader, join_token);
    if (scope_.attached()) stream_ = (stub.*open)(&ctx_);
  }
  bool Write(const Out& out) { return stream_ && stream_->Write(out); }
  bool Read(In* in) { return stream_ && stream_->Read(in); }
  bool WritesDone() { return stream_ && stream_->WritesDone(); }
  Status Finish() {
    if (!stream_) return Status::Unavailable("cancelled");
    return FromGrpc(stream_->Finish());
  }

 private:
  grpc::ClientContext ctx_;  // before the scope, which refers to it
  CancelScope scope_;
  std::unique_ptr<grpc::ClientReaderWriter<Out, In>> stream_;
};

class GrpcReplicateStream final : public ReplicateStream {
 public:
  GrpcReplicateStream(v1::Peer::Stub& stub, const std::string& join_token, Cancellation* cancellation)
      : stream_(stub, &v1::Peer::Stub::ReplicateStream, join_token, cancellation) {}
  bool Write(const v1::ReplicateRequest& batch) override { return stream_.Write(batch); }
  bool Read(v1::ReplicateResponse* answer) override { return stream_.Read(answer); }
  bool WritesDone() override { return stream_.WritesDone(); }
  Status Finish() override { return stream_.Finish(); }

 private:
  PeerBidiStream<v1::ReplicateRequest, v1::ReplicateResponse> stream_;
};

class GrpcRunCall final : public RunCall {
 public:
  GrpcRunCall(v1::Peer::Stub& stub, const std::string& join_token, Cancellation* cancellation)
      : stream_(stub, &v1::Peer::Stub::Run, join_token, cancellation) {}
  bool Write(const v1::RunInput& in) override { return stream_.Write(in); }
  bool Read(v1::RunOutput* out) override { return stream_.Read(out); }
  Status Finish() override { return stream_.Finish(); }

 private:
  PeerBidiStream<v1::RunInput, v1::RunOutput> stream_;
};

class GrpcPeerLink final : public PeerLink {
 public:
  GrpcPeerLink(const std::string& address, const std::string& join_token,
               const std::shared_ptr<grpc::ChannelCredentials>& tls, const std::atomic<BeatSocket*>& beats)
      : address_(address), tls_(tls), current_(NewChannel()), join_token_(join_token), beats_(beats) {}

#define ONEBOX_GRPC_PEER_METHOD(method, Req, Resp, runs)                                      \
  Status method(const v1::Req& req, v1::Resp* resp, const CallOptions& options) override { \
    return Call(&v1::Peer::Stub::method, req, resp, options);                             \
  }
  ONEBOX_PEER_UNARY_CALLS(ONEBOX_GRPC_PEER_METHOD)
#undef ONEBOX_GRPC_PEER_METHOD

  std::unique_ptr<ReplicateStream> OpenReplicateStream(Cancellation* cancellation) override {
    return std::make_unique<GrpcReplicateStream>(Current()->stub, join_token_, cancellation);
  }
  std::unique_ptr<RunCall> OpenRun(Cancellation* cancellation) {
    return std::make_unique<GrpcRunCall>(Current()->stub, join_token_, cancellation);
  }

 private:
  // A channel and its stub. A call's context holds the channel for as long
  // as the call lasts, so a channel replaced under it stays until it ends.
  struct Channel {
    explicit Channel(const std::shared_ptr<grpc::Channel>& made) : channel(made), stub(made) {}
    std::shared_ptr<grpc::Channel> channel;
    v1::Peer::Stub stub;
  };
  std::shared_ptr<Channel> NewChannel() const { return std::make_shared<Channel>(PeerChannel(address_, tls_)); }
  // The channel calls go over now: a new one at the first call after
  // ConnectNow (made here, not under membership's lock, where ConnectNow
  // is called).
  std::shared_ptr<Channel> Current() {
    std::shared_ptr<Channel> old;  // let go outside the lock
    std::lock_guard lock(mu_);
    if (stale_) {
      old = std::move(current_);
      current_ = NewChannel();
      stale_ = false;
    }
    return current_;
  }

  template <class Req, class Resp>
  Status Call(grpc::Status (v1::Peer::Stub::*rpc)(grpc::ClientContext*, const Req&, Resp*), const Req& req,
              Resp* resp, const CallOptions& options) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + options.timeout);
    if (!join_token_.empty()) ctx.AddMetadata(kJoinTokenHeader, join_token_);
    if (options.wait_for_ready) ctx.set_wait_for_ready(true);
    CancelScope scope(options.cancellation, &ctx);
    if (!scope.attached()) return Status::Unavailable("cancelled");
    std::shared_ptr<Channel> current = Current();
    return FromGrpc((current->stub.*rpc)(&ctx, req, resp));
  }

  // After a silence (a partition, the peer's machine stopped) the old
  // channel may hold a connection whose packets went nowhere (idle, it was
  // not pinged; TCP would retry for minutes) or wait out a reconnect
  // backoff (up to a second, failing every call at once) while membership
  // already counts the peer alive: the next calls get a new channel.
  void ConnectNow() override {
    std::lock_guard lock(mu_);
    stale_ = true;
  }

  bool SendBeat(std::string_view datagram) override {
    BeatSocket* beats = beats_.load();
    return beats != nullptr && beats->SendTo(address_, datagram);
  }

  const std::string address_;
  const std::shared_ptr<grpc::ChannelCredentials> tls_;
  std::mutex mu_;
  std::shared_ptr<Channel> current_;  // guarded by mu_
  bool stale_ = false;                // guarded by mu_: ConnectNow was called
  const std::string& join_token_;  // the network's, which outlives its links
  const std::atomic<BeatSocket*>& beats_;  // the network's too
};

}  // namespace

PeerLink& GrpcPeerNetwork::To(const std::string& address) {
  std::lock_guard lock(mu_);
  std::unique_ptr<PeerLink>& link = links_[address];
  if (!link) link = std::make_unique<GrpcPeerLink>(address, join_token_, tls_, beats_);
  return *link;
}

std::unique_ptr<RunCall> GrpcPeerNetwork::OpenRun(const std::string& address, Cancellation* cancellation) {
  return static_cast<GrpcPeerLink&>(To(address)).OpenRun(cancellation);  // To makes only GrpcPeerLinks
}

}  // namespace onebox
