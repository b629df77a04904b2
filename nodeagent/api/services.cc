#include "nodeagent/api/services.h"
#include "naming/ns_key.h"

#include <unistd.h>

#include <fstream>

#include "naming/cluster_path.h"
#include "nodeagent/sync/anti_entropy.h"
#include "nodeagent/sync/claims.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/sync/replicator.h"
#include "nodeagent/view/view_recorder.h"

#include <fmt/format.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

namespace onebox {

namespace {

// Parses the request, runs fn(request, &response), serializes the response:
// one path for every unary method, so parse errors are answered alike. With a
// pool, fn runs there (it may block on the disk); the request and response
// buffers belong to the call until Finish.
template <class Req, class Resp, class Fn>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out, WorkPool* pool, Fn fn) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto req = std::make_shared<Req>();
  grpc::ProtoBufferReader reader(const_cast<grpc::ByteBuffer*>(in));
  if (!req->ParseFromZeroCopyStream(&reader) || !reader.status().ok()) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 fmt::format("malformed request: the bytes sent are not a valid {}",
                                             Req::descriptor()->full_name())));
    return reactor;
  }
  auto work = [req, out, reactor, fn = std::move(fn)] {
    Resp resp;
    grpc::Status st = fn(*req, &resp);
    if (st.ok()) {
      bool own_buffer = false;
      st = grpc::GenericSerialize<grpc::ProtoBufferWriter, Resp>(resp, out, &own_buffer);
    }
    reactor->Finish(st);
  };
  if (pool) pool->Submit(std::move(work));
  else work();
  return reactor;
}

v1::Version ToProto(const Version& v) {
  v1::Version p;
  p.set_hlc(v.hlc);
  p.set_node_id(NodeIdHex(v.node));
  return p;
}

// Levels: only known enum values are accepted. On a single-member cluster every
// write level is met by the local durable write.
grpc::Status CheckWriteLevel(int level) {
  if (!v1::WriteLevel_IsValid(level))
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("unknown write level {}", level));
  return grpc::Status::OK;
}
grpc::Status CheckReadLevel(int level) {
  if (!v1::ReadLevel_IsValid(level))
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, fmt::format("unknown read level {}", level));
  return grpc::Status::OK;
}

}  // namespace

v1::NodeLoad ReadLoad() {
  v1::NodeLoad load;
  double avg[1] = {0};
  if (getloadavg(avg, 1) == 1) load.set_loadavg_1m(avg[0]);
  load.set_cpus(static_cast<uint32_t>(sysconf(_SC_NPROCESSORS_ONLN)));
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib) {
    std::getline(meminfo, unit);
    if (key == "MemTotal:") load.set_mem_total_bytes(kib * 1024);
    if (key == "MemAvailable:") load.set_mem_available_bytes(kib * 1024);
  }
  return load;
}

namespace {
}  // namespace

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
  }
  return grpc::Status(code, s.message());
}

std::shared_ptr<grpc::Channel> PeerChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

v1::Node SelfNode(const AgentInfo& info) {
  v1::Node n;
  n.set_name(info.identity.name);
  n.set_node_id(NodeIdHex(info.identity.node_id));
  n.set_address(info.grpc_address());
  n.set_state(v1::NODE_STATE_ALIVE);
  *n.mutable_load() = ReadLoad();
  n.set_self(true);
  return n;
}

grpc::ServerUnaryReactor* ClusterService::Status(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<v1::StatusRequest, v1::StatusResponse>(ctx, in, out, nullptr, [this](const auto&, v1::StatusResponse* r) {
    *r->mutable_node() = SelfNode(info_);
    r->mutable_node()->set_index(members_.index());
    r->set_version(ONEBOX_VERSION);
    r->set_uptime_seconds(static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - info_.started).count()));
    r->set_hlc(store_.clock().Last());  // a reading: issues no timestamp
    StoreStats st = store_.Stats();
    r->mutable_store()->set_estimated_keys(st.estimated_keys);
    r->mutable_store()->set_sst_bytes(st.sst_bytes);
    r->mutable_store()->set_memtable_bytes(st.memtable_bytes);
    r->set_data_dir(info_.data_dir);
    r->set_socket_path(info_.socket_path);
    uint64_t records = 0;
    Result<std::string> digest = store_.Digest(&records);
    if (!digest.ok()) return ToGrpc(digest.status());
    r->set_state_digest(*digest);
    r->set_records(records);
    if (info_.chunks_hashed_ahead) r->set_chunks_hashed_ahead(info_.chunks_hashed_ahead());
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* ClusterService::ListNodes(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                    grpc::ByteBuffer* out) {
  return ServeUnary<v1::ListNodesRequest, v1::ListNodesResponse>(
      ctx, in, out, nullptr, [this](const auto&, v1::ListNodesResponse* r) {
        for (v1::Node& n : members_.Nodes()) *r->add_nodes() = std::move(n);
        return grpc::Status::OK;
      });
}

grpc::ServerUnaryReactor* PeerService::Gossip(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                              grpc::ByteBuffer* out) {
  return ServeUnary<v1::GossipRequest, v1::GossipResponse>(
      ctx, in, out, nullptr, [this](const v1::GossipRequest& q, v1::GossipResponse* r) {
        members_.OnGossip(q, r);
        return grpc::Status::OK;
      });
}

grpc::ServerUnaryReactor* PeerService::Replicate(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<v1::ReplicateRequest, v1::ReplicateResponse>(
      ctx, in, out, &pool_,
      [this](const v1::ReplicateRequest& q, v1::ReplicateResponse* r) { return replicator_.OnReplicate(q, r); });
}

namespace {

// One replication stream from a peer: read a batch, apply it on the pool,
// answer with its last seq, and only then read the next. The sender keeps a
// few batches unanswered at most, and gRPC's flow control holds back the
// bytes beyond: a slow receiver slows its senders down, it does not queue.
class ReplicateStreamReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReplicateStreamReactor(Replicator& replicator, WorkPool& pool) : replicator_(replicator), pool_(pool) {
    StartRead(&in_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {  // the sender closed its side (or the call is gone)
      Finish(grpc::Status::OK);
      return;
    }
    pool_.Submit([this] {
      v1::ReplicateRequest req;
      bool parsed;
      {
        grpc::ProtoBufferReader reader(&in_);  // done with in_ before the next read reuses it
        parsed = req.ParseFromZeroCopyStream(&reader) && reader.status().ok();
      }
      if (!parsed) {
        Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "malformed request: the bytes sent are not a valid onebox.v1.ReplicateRequest"));
        return;
      }
      v1::ReplicateResponse resp;
      grpc::Status st = replicator_.OnReplicate(req, &resp);
      if (!st.ok()) {
        Finish(st);
        return;
      }
      for (const v1::LogRecord& r : req.records()) resp.set_acked_seq(std::max(resp.acked_seq(), r.seq()));
      bool own_buffer = false;
      out_.Clear();
      st = grpc::GenericSerialize<grpc::ProtoBufferWriter, v1::ReplicateResponse>(resp, &out_, &own_buffer);
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
  Replicator& replicator_;
  WorkPool& pool_;
  grpc::ByteBuffer in_, out_;
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PeerService::ReplicateStream(grpc::CallbackServerContext*) {
  return new ReplicateStreamReactor(replicator_, pool_);
}

grpc::ServerUnaryReactor* PeerService::FetchChunk(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                  grpc::ByteBuffer* out) {
  return ServeUnary<v1::FetchChunkRequest, v1::FetchChunkResponse>(
      ctx, in, out, &pool_,
      [this](const v1::FetchChunkRequest& q, v1::FetchChunkResponse* r) { return content_.OnFetchChunk(q, r); });
}

grpc::ServerUnaryReactor* PeerService::PushChunks(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                  grpc::ByteBuffer* out) {
  return ServeUnary<v1::PushChunksRequest, v1::PushChunksResponse>(
      ctx, in, out, &pool_,
      [this](const v1::PushChunksRequest& q, v1::PushChunksResponse* r) { return content_.OnPushChunks(q, r); });
}

grpc::ServerUnaryReactor* PeerService::BucketDigests(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                     grpc::ByteBuffer* out) {
  return ServeUnary<v1::BucketDigestsRequest, v1::BucketDigestsResponse>(
      ctx, in, out, &pool_, [this](const v1::BucketDigestsRequest& q, v1::BucketDigestsResponse* r) {
        return anti_entropy_.OnBucketDigests(q, r);
      });
}

grpc::ServerUnaryReactor* PeerService::ReadBucket(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                  grpc::ByteBuffer* out) {
  return ServeUnary<v1::ReadBucketRequest, v1::ReadBucketResponse>(
      ctx, in, out, &pool_,
      [this](const v1::ReadBucketRequest& q, v1::ReadBucketResponse* r) { return anti_entropy_.OnReadBucket(q, r); });
}

grpc::ServerUnaryReactor* PeerService::Claim(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) {
  return ServeUnary<v1::ClaimRequest, v1::ClaimResponse>(
      ctx, in, out, nullptr, [this](const v1::ClaimRequest& q, v1::ClaimResponse* r) { return claims_.OnClaim(q, r); });
}

grpc::ServerUnaryReactor* PeerService::ReadRecord(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                  grpc::ByteBuffer* out) {
  return ServeUnary<v1::ReadRecordRequest, v1::ReadRecordResponse>(
      ctx, in, out, &pool_,
      [this](const v1::ReadRecordRequest& q, v1::ReadRecordResponse* r) { return replicator_.OnReadRecord(q, r); });
}

size_t StoreService::OthersFor(int level) const {
  size_t known = members_.KnownCount();  // this node included
  if (level == v1::WRITE_LEVEL_ALL) return known - 1;
  if (level == v1::WRITE_LEVEL_QUORUM || level == v1::READ_LEVEL_QUORUM) return known / 2;  // a majority, with us
  return 0;
}

grpc::ServerUnaryReactor* StoreService::Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) {
  return ServeUnary<v1::GetRequest, v1::GetResponse>(ctx, in, out, &pool_, [this](const v1::GetRequest& q, v1::GetResponse* r) {
    if (grpc::Status s = CheckReadLevel(q.level()); !s.ok()) return s;
    if (Status k = Store::ValidateKey(q.key()); !k.ok()) return ToGrpc(k);
    Result<Record> rec = q.level() == v1::READ_LEVEL_QUORUM
                             ? replicator_.ReadQuorum(Cf::kKv, q.key(), OthersFor(q.level()))
                             : store_.Get(q.key());
    if (!rec.ok()) {
      if (rec.status().code() == Code::kNotFound) return grpc::Status::OK;  // found = false
      return ToGrpc(rec.status());
    }
    r->set_found(true);
    r->set_value(std::move(rec->value));
    *r->mutable_version() = ToProto(rec->version);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* StoreService::Put(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) {
  return ServeUnary<v1::PutRequest, v1::PutResponse>(ctx, in, out, &pool_, [this](const v1::PutRequest& q, v1::PutResponse* r) {
    if (grpc::Status s = CheckWriteLevel(q.level()); !s.ok()) return s;
    Result<Version> v = store_.Put(q.key(), q.value(), q.sync());
    if (!v.ok()) return ToGrpc(v.status());
    *r->mutable_version() = ToProto(*v);
    return ToGrpc(replicator_.ReplicateKey(Cf::kKv, q.key(), OthersFor(q.level()), q.sync()));
  });
}

grpc::ServerUnaryReactor* StoreService::Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                               grpc::ByteBuffer* out) {
  return ServeUnary<v1::DeleteRequest, v1::DeleteResponse>(
      ctx, in, out, &pool_, [this](const v1::DeleteRequest& q, v1::DeleteResponse* r) {
        if (grpc::Status s = CheckWriteLevel(q.level()); !s.ok()) return s;
        bool existed = false;
        Result<Version> v = store_.Delete(q.key(), q.sync(), &existed);
        if (!v.ok()) return ToGrpc(v.status());
        r->set_existed(existed);
        *r->mutable_version() = ToProto(*v);
        return ToGrpc(replicator_.ReplicateKey(Cf::kKv, q.key(), OthersFor(q.level()), q.sync()));
      });
}

grpc::ServerUnaryReactor* StoreService::Scan(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) {
  return ServeUnary<v1::ScanRequest, v1::ScanResponse>(ctx, in, out, &pool_, [this](const v1::ScanRequest& q, v1::ScanResponse* r) {
    if (grpc::Status s = CheckReadLevel(q.level()); !s.ok()) return s;
    if (q.level() == v1::READ_LEVEL_QUORUM)
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "Scan reads LOCAL only (QUORUM is for Get)");
    Result<ScanPage> page = store_.Scan(q.prefix(), q.start_after(), q.limit(), q.keys_only());
    if (!page.ok()) return ToGrpc(page.status());
    for (Entry& e : page->entries) {
      v1::Entry* pe = r->add_entries();
      pe->set_key(std::move(e.key));
      pe->set_value(std::move(e.record.value));
      *pe->mutable_version() = ToProto(e.record.version);
    }
    r->set_more(page->more);
    return grpc::Status::OK;
  });
}

namespace {
// The ns key of a cluster path given by a client, or INVALID_ARGUMENT.
grpc::Status PathKey(const std::string& path, std::string* key) {
  Result<std::string> k = NsKeyOfPath(path);
  if (!k.ok()) return ToGrpc(k.status());
  *key = std::move(*k);
  return grpc::Status::OK;
}
}  // namespace

grpc::ServerUnaryReactor* NamespaceService::Stat(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<v1::StatRequest, v1::StatResponse>(ctx, in, out, &pool_, [this](const v1::StatRequest& q,
                                                                                     v1::StatResponse* r) {
    std::string key;
    if (grpc::Status s = PathKey(q.path(), &key); !s.ok()) return s;
    Result<Record> rec = store_.Get(key, Cf::kNs);
    if (!rec.ok()) return rec.status().code() == Code::kNotFound ? grpc::Status::OK : ToGrpc(rec.status());
    if (!r->mutable_inode()->ParseFromString(rec->value))
      return grpc::Status(grpc::StatusCode::DATA_LOSS, fmt::format("damaged inode for {}", q.path()));
    r->set_found(true);
    *r->mutable_version() = ToProto(rec->version);
    return grpc::Status::OK;
  });
}

grpc::ServerUnaryReactor* NamespaceService::Versions(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                     grpc::ByteBuffer* out) {
  return ServeUnary<v1::VersionsRequest, v1::VersionsResponse>(
      ctx, in, out, &pool_, [this](const v1::VersionsRequest& q, v1::VersionsResponse* r) {
        std::string key;
        if (grpc::Status s = PathKey(q.path(), &key); !s.ok()) return s;
        Result<Record> current = store_.GetWithTombstone(key, Cf::kNs);
        if (current.ok()) {
          v1::FileVersion* v = r->add_versions();
          *v->mutable_version() = ToProto(current->version);
          v->set_current(true);
          v->set_deleted(current->tombstone);
          if (!current->tombstone) v->mutable_inode()->ParseFromString(current->value);
        } else if (current.status().code() != Code::kNotFound) {
          return ToGrpc(current.status());
        }
        Result<std::vector<Record>> history = store_.History(key);
        if (!history.ok()) return ToGrpc(history.status());
        for (const Record& rec : *history) {
          if (current.ok() && rec.version == current->version) continue;
          v1::FileVersion* v = r->add_versions();
          *v->mutable_version() = ToProto(rec.version);
          v->mutable_inode()->ParseFromString(rec.value);
        }
        return grpc::Status::OK;
      });
}

grpc::ServerUnaryReactor* NamespaceService::Restore(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                    grpc::ByteBuffer* out) {
  return ServeUnary<v1::RestoreRequest, v1::RestoreResponse>(
      ctx, in, out, &pool_, [this](const v1::RestoreRequest& q, v1::RestoreResponse* r) {
        std::string key;
        if (grpc::Status s = PathKey(q.path(), &key); !s.ok()) return s;
        Result<uint64_t> node = ParseNodeId(q.version().node_id());
        if (!node.ok()) return ToGrpc(node.status());
        Version want{q.version().hlc(), *node};
        Result<std::vector<Record>> history = store_.History(key);
        if (!history.ok()) return ToGrpc(history.status());
        for (const Record& rec : *history) {
          if (rec.version != want) continue;
          Result<Version> v = store_.Put(key, rec.value, /*sync=*/true, Cf::kNs);
          if (!v.ok()) return ToGrpc(v.status());
          *r->mutable_version() = ToProto(*v);
          if (on_restored_) on_restored_(key);
          return grpc::Status::OK;
        }
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            fmt::format("{} has no earlier version {}@{} here", q.path(), q.version().hlc(),
                                        q.version().node_id()));
      });
}

grpc::ServerUnaryReactor* NamespaceService::List(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<v1::ListRequest, v1::ListResponse>(ctx, in, out, &pool_, [this](const v1::ListRequest& q,
                                                                                     v1::ListResponse* r) {
    std::string key;
    if (grpc::Status s = PathKey(q.path(), &key); !s.ok()) return s;
    size_t limit = q.limit() == 0 ? 1000 : q.limit();
    if (limit > StoreLimits::kMaxScanLimit)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          fmt::format("limit {} exceeds the maximum of {}", limit, StoreLimits::kMaxScanLimit));
    std::string prefix = key + "/";
    std::string after = q.start_after().empty() ? "" : prefix + q.start_after();
    // Keys below grandchildren sort between children: skip them while paging.
    for (;;) {
      Result<ScanPage> page = store_.Scan(prefix, after, StoreLimits::kMaxScanLimit, false, Cf::kNs);
      if (!page.ok()) return ToGrpc(page.status());
      for (Entry& e : page->entries) {
        std::string_view name = std::string_view(e.key).substr(prefix.size());
        if (name.find('/') != std::string_view::npos) continue;
        if (static_cast<size_t>(r->entries_size()) == limit) {
          r->set_more(true);
          return grpc::Status::OK;
        }
        v1::DirEntry* d = r->add_entries();
        d->set_name(std::string(name));
        d->mutable_inode()->ParseFromString(e.record.value);
        *d->mutable_version() = ToProto(e.record.version);
      }
      if (!page->more) return grpc::Status::OK;
      after = page->entries.back().key;
    }
  });
}

}  // namespace onebox
