#include "nodeagent/api/peer_service.h"

namespace onebox {

namespace {

// One replication stream from a peer (see the header).
class ReplicateStreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // Batches are applied through this node's own stream (sync/local_peer.h),
  // which knows they come in the sender's log order.
  ReplicateStreamReactor(PeerLink& local, WorkPool& pool)
      : applier_(local.OpenReplicateStream(nullptr)), pool_(pool) {
    StartRead(&in_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {  // the sender closed its side (or the call is gone)
      Finish(grpc::Status::OK);
      return;
    }
    pool_.Submit([this] {
      v1::ReplicateRequest req;
      // Done with in_ before the next read reuses it.
      if (grpc::Status parsed = ParseRequest(&in_, &req); !parsed.ok()) {
        Finish(parsed);
        return;
      }
      v1::ReplicateResponse resp;
      grpc::Status st = applier_->Write(req) && applier_->Read(&resp) ? grpc::Status::OK : ToGrpc(applier_->Finish());
      if (st.ok()) {
        bool own_buffer = false;
        out_.Clear();
        st = grpc::GenericSerialize<grpc::ProtoBufferWriter, v1::ReplicateResponse>(resp, &out_, &own_buffer);
      }
      if (!st.ok()) {
        Finish(st);
        return;
      }
      StartWrite(&out_);
    });
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the sender went away"));
      return;
    }
    StartRead(&in_);
  }
  void OnDone() override { delete this; }

 private:
  std::unique_ptr<ReplicateStream> applier_;
  WorkPool& pool_;
  grpc::ByteBuffer in_, out_;
};

// Refuses the stream at once, before reading anything.
class RefusedStreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit RefusedStreamReactor(grpc::Status why) { Finish(why); }
  void OnDone() override { delete this; }
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PeerService::ReplicateStream(grpc::CallbackServerContext* ctx) {
  using Method = api_method::Peer_ReplicateStream;
  if (Status admitted = gate_.Admit(Method::kClass, Method::kName, gate_.OfGrpc(*ctx)); !admitted.ok())
    return new RefusedStreamReactor(ToGrpc(admitted));
  return new ReplicateStreamReactor(local_, pool_);
}

namespace {

class GrpcRunPeerStream final : public RunPeerStream {
 public:
  GrpcRunPeerStream(grpc::ServerContext* ctx, grpc::ServerReaderWriter<v1::RunOutput, v1::RunInput>* stream)
      : ctx_(ctx), stream_(stream) {}
  bool Read(v1::RunInput* in) override { return stream_->Read(in); }
  bool Write(const v1::RunOutput& out) override { return stream_->Write(out); }
  bool Cancelled() override { return ctx_->IsCancelled(); }

 private:
  grpc::ServerContext* ctx_;
  grpc::ServerReaderWriter<v1::RunOutput, v1::RunInput>* stream_;
};

}  // namespace

grpc::Status PeerService::Run(grpc::ServerContext* ctx,
                              grpc::ServerReaderWriter<v1::RunOutput, v1::RunInput>* stream) {
  Caller caller = gate_.OfGrpc(*ctx);
  if (Status admitted = gate_.Admit(api_method::Peer_Run::kClass, api_method::Peer_Run::kName, caller); !admitted.ok())
    return ToGrpc(admitted);
  GrpcRunPeerStream run(ctx, stream);
  return ToGrpc(runs_.Serve(run));
}

}  // namespace onebox
