#include "nodeagent/api/store_service.h"

#include "nodeagent/api/agent_info.h"
#include "nodeagent/api/unary.h"
#include "nodeagent/peer/quorum.h"

namespace onebox {

namespace {

// Only known enum values are accepted (unspecified is ONE or LOCAL). On a
// single-member cluster every level is met by the local durable write.
Result<Agreement> WriteLevelAgreement(int level) {
  switch (level) {
    case v1::WRITE_LEVEL_UNSPECIFIED:
    case v1::WRITE_LEVEL_ONE: return Agreement::kThisNode;
    case v1::WRITE_LEVEL_QUORUM: return Agreement::kMajority;
    case v1::WRITE_LEVEL_ALL: return Agreement::kAll;
    default: return Status::InvalidArgument(fmt::format("unknown write level {}", level));
  }
}

Result<Agreement> ReadLevelAgreement(int level) {
  switch (level) {
    case v1::READ_LEVEL_UNSPECIFIED:
    case v1::READ_LEVEL_LOCAL: return Agreement::kThisNode;
    case v1::READ_LEVEL_QUORUM: return Agreement::kMajority;
    default: return Status::InvalidArgument(fmt::format("unknown read level {}", level));
  }
}

// The key-space rule of store_service.h.
Status MayWriteKey(const Caller& caller, const std::string& key) {
  if (caller.IsAdmin()) return Status::Ok();
  std::string own = fmt::format("uid/{}/", caller.uid);
  if (key.compare(0, own.size(), own) == 0 && key.size() > own.size()) return Status::Ok();
  return Status::PermissionDenied(
      fmt::format("uid {} may write keys under {} only (the others are root's and the agent's user's; see "
                  "docs/operations.md)",
                  caller.uid, own));
}

}  // namespace

grpc::ServerUnaryReactor* StoreService::Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Store_Get, v1::GetRequest, v1::GetResponse>(
      ctx, in, out, gate_, &pool_, [this](const v1::GetRequest& q, v1::GetResponse* r) -> Status {
        Result<Agreement> level = ReadLevelAgreement(q.level());
        if (!level.ok()) return level.status();
        if (Status k = Store::ValidateKey(q.key()); !k.ok()) return k;
        Result<Record> rec = *level == Agreement::kThisNode
                                 ? store_.Get(q.key())
                                 : replicator_.ReadQuorum(Cf::kKv, q.key(), OthersNeeded(*level, members_.KnownCount()));
        if (!rec.ok()) return rec.status().code() == Code::kNotFound ? Status::Ok() : rec.status();  // found = false
        r->set_found(true);
        r->set_value(std::move(rec->value));
        *r->mutable_version() = ToProto(rec->version);
        return Status::Ok();
      });
}

grpc::ServerUnaryReactor* StoreService::Put(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                            grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Store_Put, v1::PutRequest, v1::PutResponse>(
      ctx, in, out, gate_, &pool_,
      [this](const Caller& caller, const v1::PutRequest& q, v1::PutResponse* r) { return DoPut(caller, q, r); });
}

grpc::ServerUnaryReactor* StoreService::Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                               grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Store_Delete, v1::DeleteRequest, v1::DeleteResponse>(
      ctx, in, out, gate_, &pool_,
      [this](const Caller& caller, const v1::DeleteRequest& q, v1::DeleteResponse* r) { return DoDelete(caller, q, r); });
}

void StoreService::AddLocalCalls(LocalCalls& calls) {
  calls.Add<api_method::Store_Put, v1::PutRequest, v1::PutResponse>(
      [this](const Caller& caller, const v1::PutRequest& q, v1::PutResponse* r) { return DoPut(caller, q, r); });
  calls.Add<api_method::Store_Delete, v1::DeleteRequest, v1::DeleteResponse>(
      [this](const Caller& caller, const v1::DeleteRequest& q, v1::DeleteResponse* r) { return DoDelete(caller, q, r); });
}

Status StoreService::DoPut(const Caller& caller, const v1::PutRequest& q, v1::PutResponse* r) {
  Result<Agreement> level = WriteLevelAgreement(q.level());
  if (!level.ok()) return level.status();
  if (Status owner = MayWriteKey(caller, q.key()); !owner.ok()) return owner;
  Result<Version> v = store_.Put(q.key(), q.value(), q.sync());
  if (!v.ok()) return v.status();
  *r->mutable_version() = ToProto(*v);
  return replicator_.ReplicateKey(Cf::kKv, q.key(), OthersNeeded(*level, members_.KnownCount()), q.sync());
}

Status StoreService::DoDelete(const Caller& caller, const v1::DeleteRequest& q, v1::DeleteResponse* r) {
  Result<Agreement> level = WriteLevelAgreement(q.level());
  if (!level.ok()) return level.status();
  if (Status owner = MayWriteKey(caller, q.key()); !owner.ok()) return owner;
  bool existed = false;
  Result<Version> v = store_.Delete(q.key(), q.sync(), &existed);
  if (!v.ok()) return v.status();
  r->set_existed(existed);
  *r->mutable_version() = ToProto(*v);
  return replicator_.ReplicateKey(Cf::kKv, q.key(), OthersNeeded(*level, members_.KnownCount()), q.sync());
}

grpc::ServerUnaryReactor* StoreService::Scan(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                             grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Store_Scan, v1::ScanRequest, v1::ScanResponse>(
      ctx, in, out, gate_, &pool_, [this](const v1::ScanRequest& q, v1::ScanResponse* r) -> Status {
        Result<Agreement> level = ReadLevelAgreement(q.level());
        if (!level.ok()) return level.status();
        if (*level != Agreement::kThisNode) return Status::Unimplemented("Scan reads LOCAL only (QUORUM is for Get)");
        Result<ScanPage> page = store_.Scan(q.prefix(), q.start_after(), q.limit(), q.keys_only());
        if (!page.ok()) return page.status();
        for (Entry& e : page->entries) {
          v1::Entry* pe = r->add_entries();
          pe->set_key(std::move(e.key));
          pe->set_value(std::move(e.record.value));
          *pe->mutable_version() = ToProto(e.record.version);
        }
        r->set_more(page->more);
        return Status::Ok();
      });
}

}  // namespace onebox
